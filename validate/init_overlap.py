"""What overlapping engine init with the load saves, measured, next to the simulator's prediction.

Two cold starts of the same progressive plan, the page cache dropped before each: one that
allocates the KV cache and captures the graph before loading (the seed's engine), one whose
plan says `overlap_init` (the engine makes them in a second thread while the loader streams
stage 0). The saving is the difference of their times to first token.

The simulator (`sim.lifecycle.load_weights`) serves a plan without overlap once the serving
stage is bound *and then* init has run (load + init), and with overlap once both are done
(max(load, init)): it predicts a saving of min(init, load). Two predictions are given, from the
same run's non-overlapped cold start:

* `predicted_saving_s`: init as the written profile defines it, `kv_cache_alloc_s +
  graph_capture_s`, where the profile folds the weight-buffer allocation into
  `kv_cache_alloc_s` (its schema has no field for it), timed in this pair's own
  non-overlapped run. This is what the simulator computes for such a profile.
* `predicted_engine_saving_s`: init as the engine can overlap it, the KV cache and the
  capture only: the weight buffers must exist before the loader can copy into them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from validate.results import ColdStart

OVERLAP_SUFFIX = "+overlap"  # the overlapped row's plan name: "progressive+overlap"


@dataclass(frozen=True)
class InitOverlap:
    """One pair of cold starts, with and without init overlapped, and what the simulator expects."""

    plan: str
    ttft_s: float  # without overlap
    ttft_overlapped_s: float
    measured_saving_s: float
    init_s: float  # KV allocation + graph capture, as the engine timed them without overlap
    weight_alloc_s: float  # the weight buffers: before the load in both runs
    load_to_serving_s: float  # start() to the serving stage bound, without overlap
    init_done_s: float | None  # start() to KV cache and graph ready, overlapped
    predicted_saving_s: float  # the simulator on the written profile: min(alloc + KV + capture, load)
    predicted_engine_saving_s: float  # min(KV + capture, load)

    def to_dict(self) -> dict:
        return asdict(self)


def init_overlap(base: ColdStart, base_timings: dict, overlapped: ColdStart, overlapped_timings: dict) -> InitOverlap:
    """Compare a plan's cold start with its overlapped twin; timings are `EngineTimings.to_dict()`."""
    if base_timings.get("init_overlapped") or not overlapped_timings.get("init_overlapped"):
        raise ValueError(
            f"init_overlap: {base.plan!r} must initialise before loading and {overlapped.plan!r} beside it"
        )
    if base_timings.get("serve_ready_s") is None:
        raise ValueError(f"init_overlap: {base.plan!r} has no time to its serving stage")
    load = float(base_timings["serve_ready_s"])
    init = float(base_timings["kv_alloc_s"]) + float(base_timings["capture_s"])
    alloc = float(base_timings["alloc_s"])
    return InitOverlap(
        plan=base.plan,
        ttft_s=base.ttft_s,
        ttft_overlapped_s=overlapped.ttft_s,
        measured_saving_s=base.ttft_s - overlapped.ttft_s,
        init_s=init,
        weight_alloc_s=alloc,
        load_to_serving_s=load,
        init_done_s=overlapped_timings.get("init_done_s"),
        predicted_saving_s=min(init + alloc, load),
        predicted_engine_saving_s=min(init, load),
    )
