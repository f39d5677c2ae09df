"""How several engines share one device's compute: the profile's `hardware.compute_slots`.

The simulator lets a GPU hold several instances and shares its compute between their
batch steps by processor sharing: while no more steps are in flight than the GPU has
`compute_slots`, each runs at full speed; beyond that, each runs at slots / n of it. The
replay serves its trace with up to four engines in one process (one thread each), so the
figure that decides how far its simulator side is off is how fast k engines serve side by
side against one alone. Nothing measured it before: the first 7B replay ran with 1.0 (the
"GPU time-slices" guess), so four busy engines each decoded at a quarter speed in the
simulator while the real ones decoded at about full speed.

Here k loaded engines of the same checkpoint each serve one request of the same prompt at
once (a barrier starts them together), for k in `counts`. Prefill (time to first token),
decode (seconds per token after the first) and the whole request are timed per engine; for
each k and each part, processor sharing implies slots = k * t(1) / t(k), clamped to [1, k]
(no slowdown at all is k slots, a full serialisation 1). The profile takes the whole
request's figure at the largest k: that is the replay's mix of prefill and decode, at its
largest number of engines (the sizes ask for the replay's most: 4 on a GPU, 3 on the CPU). A
larger k could show more slots; the replay never runs more.
"""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import asdict, dataclass

from contracts.plan import StagePlan
from validate.coldstart import EngineSpec, make_engine, release

PARTS = ("prefill", "decode", "request")


@dataclass(frozen=True)
class SharingRow:
    """k engines serving at once: median seconds per part, and the slots that implies."""

    engines: int
    prefill_s: float  # time to first token
    decode_s_per_token: float
    request_s: float  # the whole request: first token and every later one
    slots_prefill: float
    slots_decode: float
    slots_request: float


def implied_slots(engines: int, alone_s: float, shared_s: float) -> float:
    """Slots that processor sharing needs to turn `alone_s` into `shared_s` with `engines` busy.

    Each of k steps gets min(1, slots / k) of the device, so t(k) = t(1) * k / slots while
    k > slots: slots = k * t(1) / t(k). Clamped to [1, k]: faster than alone is noise, and a
    device running k steps at full speed shows k slots whatever it could do with more.
    """
    if not (alone_s > 0 and shared_s > 0):
        return 1.0
    return min(float(engines), max(1.0, engines * alone_s / shared_s))


def rows_from_times(times: dict[int, list[tuple[float, float, float]]]) -> list[SharingRow]:
    """Rows from {k: [(prefill_s, decode_s_per_token, request_s) per engine and repeat]}; k=1 must be there."""
    if 1 not in times:
        raise ValueError("sharing needs the one-engine times as its reference")
    med = {k: [statistics.median(t[i] for t in v) for i in range(3)] for k, v in times.items()}
    alone = med[1]
    rows = []
    for k in sorted(med):
        p, d, r = med[k]
        rows.append(
            SharingRow(
                k, p, d, r,
                implied_slots(k, alone[0], p), implied_slots(k, alone[1], d), implied_slots(k, alone[2], r),
            )
        )  # fmt: skip
    return rows


def compute_slots(rows: list[SharingRow]) -> float:
    """The profile's figure: the whole request's slots at the largest number of engines measured."""
    return max(rows, key=lambda r: r.engines).slots_request


def _serve_together(engines: list, prompt_ids: list[int], tokens: int) -> list[tuple[float, float, float]]:
    """Every engine serves one request at once; per engine (prefill s, decode s/token, request s)."""
    out: list = [None] * len(engines)
    gate = threading.Barrier(len(engines))

    def serve(i: int) -> None:
        gate.wait()
        t0 = time.perf_counter()
        res = engines[i].generate(prompt_ids, tokens)
        out[i] = (res.ttft_s, res.decode_s_per_token, time.perf_counter() - t0)

    threads = [threading.Thread(target=serve, args=(i,)) for i in range(len(engines))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if any(o is None for o in out):
        raise RuntimeError("an engine failed while serving side by side (see the thread's traceback above)")
    return out


def _is_out_of_memory(exc: BaseException) -> bool:
    return "out of memory" in str(exc).lower()


def measure_sharing(
    spec: EngineSpec, plan: StagePlan, prompt_ids: list[int], tokens: int, counts: tuple[int, ...], repeats: int
) -> dict:
    """Load max(counts) engines, then time k of them serving at once for each k in `counts`.

    Returns {"rows": [...], "compute_slots": float, "prompt_tokens", "tokens", "repeats",
    "note"}. Where the device cannot hold every engine, the counts stop at what it held,
    and the note says so.
    """
    engines, note = [], ""
    for _ in range(max(counts)):
        eng = None
        try:
            eng = make_engine(spec, plan)  # allocates weights, KV cache and graph: out of memory here
            eng.start(background=False)
            eng.generate(prompt_ids, 2)  # first-use costs (kernels, graphs, allocator) are not sharing's
        except RuntimeError as exc:  # torch's out-of-memory error is a RuntimeError
            if eng is not None:
                release(eng)
            if not _is_out_of_memory(exc) or not engines:
                for e in engines:
                    release(e)
                raise
            note = f"the device held {len(engines)} engine(s) of the {max(counts)} asked for"
            break
        engines.append(eng)
    try:
        times: dict[int, list] = {}
        for k in sorted(c for c in set(counts) if c <= len(engines)):
            times[k] = [t for _ in range(repeats) for t in _serve_together(engines[:k], prompt_ids, tokens)]
    finally:
        for e in engines:
            release(e)
    rows = rows_from_times(times)
    return {
        "rows": [asdict(r) for r in rows],
        "compute_slots": compute_slots(rows),
        "prompt_tokens": len(prompt_ids),
        "tokens": tokens,
        "repeats": repeats,
        "plan": plan.name,
        "note": note,
    }
