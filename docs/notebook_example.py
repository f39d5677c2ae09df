"""Using the simulator from Python (a notebook or a script): `from sim import run`.

Run it as `python docs/notebook_example.py` (tests/test_sim_api.py runs it). It writes no
files: the results come back as pandas DataFrames.
"""

from sim import run

# The same options as `python -m sim`, as keyword arguments (`-` becomes `_`); a policy
# option takes a comma-separated string or a list of specs.
res = run(trace="synthetic", duration=600, seed=1, staging=["full", "progressive"],
          keepalive="none,fixed[ttl=120]", nodes=1, gpus_per_node=4, records=True)

print(res)  # the ranked table, each id's full label, and the verdict, as the command prints them

# summary.csv's rows, in run order, with the ranking's columns: pick the Pareto-optimal ones.
front = res.summary[res.summary["pareto"] == 1].sort_values("rank")
print(front[["id", "policy", "slo_attainment_pct", "gpu_mem_gb_hours", "quality_mean"]].to_string(index=False))

# Per model and combination (models.csv): which models paid for the cold starts.
busiest = res.models.groupby("model")["requests"].sum().sort_values(ascending=False).head(3)
print(busiest.to_string())

# Per request (records=True): the TTFT of cold requests against warm ones, per combination.
served = res.records[~res.records["rejected"]]
print(served.groupby(["policy", "cold"])["ttft_s"].median().unstack().round(3).to_string())
