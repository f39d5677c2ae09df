"""Published ATC'20 statistics that the trace samples at hand cannot give, beyond `traces.paper`.

Source: Shahrad et al., "Serverless in the Wild: Characterizing and Optimizing the
Serverless Workload at a Large Cloud Provider", USENIX ATC 2020 (whole Azure Functions
workload, two weeks of July 2019). `python -m traces calibrate` copies these into the
calibration JSON with their `source`, so the generator and `python -m traces info` read
them from there. Nothing here is a trace row.
"""

from __future__ import annotations

# Fig. 2, the table "Trigger / %Functions / %Invocations": share of *invocations* per trigger
# group (the %Functions column is `traces.paper.TRIGGER_SHARES`). All seven values, to one
# decimal, read from the "ATC" columns of the table that Azure/AzurePublicDataset reproduces
# with the paper's own scripts (analysis/AzureFunctionsDataset2019_figs/figure2.png, commit
# b469a11, "sorted in the same order as in the paper"): HTTP 35.9, Queue 33.5, Event 24.7,
# Orchestration 2.3, Timer 2.0, Storage 0.7, Others 1.0 (they sum to 100.1 by rounding; the
# generator normalises). The paper's Sec. 3.2 text repeats three of them: event 2.2% of
# functions but 24.7% of invocations, queue 33.5% vs 15.2%, timer 15.6% of functions but 2%.
TRIGGER_INVOCATION_SHARES = {"http": 0.359, "queue": 0.335, "event": 0.247, "orchestration": 0.023,
                             "timer": 0.020, "storage": 0.007, "others": 0.010}
TRIGGER_INVOCATION_SOURCE = ("ATC'20 Fig. 2, share of invocations per trigger group (%Invocations column, ATC "
                             "side of Azure/AzurePublicDataset analysis/AzureFunctionsDataset2019_figs/figure2.png, "
                             "commit b469a11; event, queue and timer also in the paper's Sec. 3.2 text)")

# Fig. 1 (top curve, CDF of functions per application) and its text in Sec. 3.1: "54% of the
# applications only have one function, and 95% of the applications have at most 10
# functions. About 0.04% of the applications have more than 100 functions, and a couple of
# them have in excess of 2,000 functions." The bins between 2 and 10 are read by pixel colour
# from the solid "% of Apps" (ATC) curve of the official reproduction of Fig. 1
# (Azure/AzurePublicDataset analysis/AzureFunctionsDataset2019_figs/fig1-1.png, commit
# b469a11; reading error about +-0.003): CDF 0.541 at 1, 0.706 at 2, 0.796 at 3, 0.880 at 5,
# 0.952 at 10 (so 1: 54%, 2: 16.6%, 3: 9.0%, 4-5: 8.4%, 6-10: 7.0%, 11+: 5%, anchored to the
# text's 54% and 95%). Rows: (least, most functions, share of applications).
FUNCTIONS_PER_APP_BINS = [(1, 1, 0.54), (2, 2, 0.166), (3, 3, 0.090), (4, 5, 0.084), (6, 10, 0.070),
                          (11, 100, 0.0496), (101, 2500, 0.0004)]
FUNCTIONS_PER_APP_SOURCE = ("ATC'20 Fig. 1 (functions per application) and Sec. 3.1: 54% have one function, 95% at "
                            "most 10, 0.04% more than 100, a couple over 2,000; the 2-10 bins read by pixel from the "
                            "ATC '% of Apps' curve of Azure/AzurePublicDataset analysis/AzureFunctionsDataset2019_figs/"
                            "fig1-1.png (commit b469a11), the official reproduction of Fig. 1; within a bin the size is "
                            "drawn log-uniformly (an assumption, the paper gives no finer split); 2,500 bounds the "
                            "largest (an assumption)")
