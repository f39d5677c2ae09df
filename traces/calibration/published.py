"""Published ATC'20 statistics that the trace samples at hand cannot give, beyond `traces.paper`.

Source: Shahrad et al., "Serverless in the Wild: Characterizing and Optimizing the
Serverless Workload at a Large Cloud Provider", USENIX ATC 2020 (whole Azure Functions
workload, two weeks of July 2019). `python -m traces calibrate` copies these into the
calibration JSON with their `source`, so the generator and `python -m traces info` read
them from there. Nothing here is a trace row.
"""

from __future__ import annotations

# Fig. 2(a), the table "Trigger / %Functions / %Invocations": share of *invocations* per
# trigger group (the %Functions column is `traces.paper.TRIGGER_SHARES`). Values to one
# decimal as printed in the table; a review of the paper (M. Shilkov, "Serverless in the
# Wild: Azure Functions Production Usage Statistics", mikhail.io, 2020-05-05) rounds them to
# HTTP 36, Queue 34, Event 25, Timer 2, Orchestration 2, Storage+Others 1.
TRIGGER_INVOCATION_SHARES = {"http": 0.359, "queue": 0.335, "event": 0.247, "orchestration": 0.023,
                             "timer": 0.020, "storage": 0.007, "others": 0.009}
TRIGGER_INVOCATION_SOURCE = ("ATC'20 Fig. 2(a), share of invocations per trigger group (%Invocations column; "
                             "'others' is 100% minus the rest)")

# Fig. 1 (top curve, CDF of functions per application) and its text in Sec. 3.1: "54% of the
# applications only have one function, and 95% of the applications have at most 10
# functions. About 0.04% of the applications have more than 100 functions, and a couple of
# them have in excess of 2,000 functions." The bins between 1 and 10 are the curve's values
# at 2, 3, 5 and 10 functions as the same review reads them (1: 54%, 2: 16%, 3: 10%, 4-5: 8%,
# 6-10: 7%, 11+: 5%). Rows: (least, most functions, share of applications).
FUNCTIONS_PER_APP_BINS = [(1, 1, 0.54), (2, 2, 0.16), (3, 3, 0.10), (4, 5, 0.08), (6, 10, 0.07),
                          (11, 100, 0.0496), (101, 2500, 0.0004)]
FUNCTIONS_PER_APP_SOURCE = ("ATC'20 Fig. 1 (functions per application) and Sec. 3.1: 54% have one function, 95% at "
                            "most 10, 0.04% more than 100, a couple over 2,000; the 2-10 bins read from the Fig. 1 "
                            "curve; within a bin the size is drawn log-uniformly (an assumption, the paper gives "
                            "no finer split); 2,500 bounds the largest")
