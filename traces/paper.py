"""Figures of the ATC'20 paper, as numbers, for what the trace samples at hand cannot give.

Source: Shahrad et al., "Serverless in the Wild", USENIX ATC 2020. The curves were read
from the plots of the official notebook that reproduces the paper's characterisation
figures on the full workload ("ATC" curves) next to the released trace:
Azure/AzurePublicDataset, `analysis/AzureFunctionsDataset2019_figs/fig{4,5a,6,7,8}-1.png`
(commit b469a113cedca53ddc3bdea71a143dc4b7d8700c, figures dated 2020-06-16). Each value was
taken by pixel colour of the ATC curve against the plot's own grid lines (a reading error
of about +-0.01 in CDF and +-2% in x); points marked "by eye" could not be separated from
overlapping curves. Nothing here is a trace row.
"""

from __future__ import annotations

import numpy as np

FIGURES = ("Azure/AzurePublicDataset analysis/AzureFunctionsDataset2019_figs/{fig}-1.png "
           "(commit b469a11), the official reproduction of ATC'20 Fig. {n} ({curve} curve, full workload)")

# Fig. 5(a): CDF of average daily invocations per function, (invocations/day, CDF).
# 1/14 per day is the least (one invocation in the 14 days); the paper's "8 orders of
# magnitude" bounds the top.
DAILY_INVOCATIONS_CDF = [(1 / 14, 0.0), (1 / 14, 0.07), (0.5, 0.20), (1, 0.34), (2, 0.42), (5, 0.505), (10, 0.56),
                         (24, 0.635), (48, 0.69), (100, 0.74), (288, 0.83), (1000, 0.89), (1440, 0.92),
                         (1e4, 0.968), (86400, 0.992), (1e6, 0.998), (1e7, 1.0)]
DAILY_INVOCATIONS_SOURCE = FIGURES.format(fig="fig5a", n="5(a)", curve="functions, ATC subset") + \
    "; the applications curve gives the paper's 45% at most once an hour and 81% at most once a minute"

# Fig. 6: CDF of the inter-arrival-time CV per application, all applications, (CV, CDF).
IAT_CV_CDF = [(0.0, 0.22), (0.05, 0.25), (0.25, 0.37), (0.5, 0.45), (1.0, 0.57), (1.5, 0.66), (2.0, 0.72),
              (3.0, 0.80), (4.0, 0.856), (6.0, 0.90), (8.0, 0.93), (10.0, 0.945)]
IAT_CV_SOURCE = FIGURES.format(fig="fig6", n="6", curve="all applications")

# Fig. 4: invocations per hour relative to the mean over two weeks, averaged by UTC hour.
DIURNAL_HOURLY = [0.918, 0.9, 0.889, 0.877, 0.894, 0.925, 0.985, 1.03, 1.071, 1.02, 1.049, 1.078, 1.099, 1.096,
                  1.113, 1.102, 1.083, 1.059, 1.065, 1.005, 0.989, 0.936, 0.91, 0.907]
DIURNAL_SOURCE = FIGURES.format(fig="fig4", n="4", curve="ATC") + \
    ", 672 columns averaged by hour of day (UTC), then normalised to mean 1"

# Fig. 7: CDF of the average execution time per function, (seconds, CDF).
DURATION_S_CDF = [(0.001, 0.0), (0.01, 0.01), (0.03, 0.06), (0.1, 0.147), (0.3, 0.30), (1.0, 0.52), (3.0, 0.707),
                  (10.0, 0.845), (30.0, 0.919), (60.0, 0.955), (600.0, 0.99), (7200.0, 1.0)]
DURATION_SOURCE = FIGURES.format(fig="fig7", n="7", curve="Average") + " (600 s and above by eye)"

# Fig. 8: CDF of the average allocated memory per application, (MB, CDF).
MEMORY_MB_CDF = [(60.0, 0.0), (80.0, 0.005), (90.0, 0.015), (100.0, 0.07), (110.0, 0.145), (120.0, 0.29),
                 (130.0, 0.41), (140.0, 0.503), (150.0, 0.548), (170.0, 0.62), (200.0, 0.83), (250.0, 0.936),
                 (300.0, 0.942), (400.0, 0.971), (600.0, 0.988), (1000.0, 0.995), (2000.0, 1.0)]
MEMORY_SOURCE = FIGURES.format(fig="fig8", n="8", curve="Average") + " (60 MB and 2000 MB ends by eye)"

# Fig. 2: share of functions per trigger group (confirmed against the table's ATC columns in
# Azure/AzurePublicDataset analysis/AzureFunctionsDataset2019_figs/figure2.png, commit b469a11).
TRIGGER_SHARES = {"http": 0.55, "queue": 0.152, "event": 0.022, "orchestration": 0.069, "timer": 0.156,
                  "storage": 0.028, "others": 0.022}
TRIGGER_SOURCE = ("ATC'20 Fig. 2, share of functions per trigger group (%Functions column, ATC side of "
                  "Azure/AzurePublicDataset analysis/AzureFunctionsDataset2019_figs/figure2.png, commit b469a11)")


def quantiles_from_cdf(points: list[tuple[float, float]], probs: list[float]) -> list[float]:
    """Quantiles at `probs` of a CDF given by points, interpolating log(x) linearly in the CDF."""
    x = np.log([max(p[0], 1e-12) for p in points])
    f = np.array([p[1] for p in points])
    return [float(v) for v in np.exp(np.interp(probs, f, x))]


def cv_model(points: list[tuple[float, float]] = IAT_CV_CDF) -> tuple[float, float, float]:
    """`(periodic share, mu, sigma)`: the mass at CV 0, and a log-normal fitted (least squares
    on normal scores) to the rest of the CDF from CV 0.25 on."""
    from scipy.special import ndtri

    p0 = points[0][1]
    cv = np.array([c for c, _ in points if c >= 0.25])
    g = np.array([(f - p0) / (1 - p0) for c, f in points if c >= 0.25])
    z = ndtri(g)
    slope, intercept = np.polyfit(np.log(cv), z, 1)  # z = (ln cv - mu) / sigma
    sigma = 1.0 / slope
    return p0, float(-intercept * sigma), float(sigma)
