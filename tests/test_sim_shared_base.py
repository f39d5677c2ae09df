"""Shared-base model catalogues: task models over one frozen base (the profile's `shared_base`).

Hand-computed cases on the small test profile (tests/test_sim_properties.py): `small` has
2 GB of weights (4 layers of 0.4 GB, 0.2 GB embedding, 0.2 GB head) and a 1 GB KV cache; a
GPU has 10 GB; a load from SSD runs at 1 GB/s, from host DRAM at 2 GB/s; a process start
and CUDA context take 3 s and engine init 2 s, so a lone cold start from SSD serves its
first token at 3 + 2 + 2 + 0.125 = 7.125 s. Here 1.6 GB of `small` is a base its
deployments `small-<suffix>` share.
"""

from __future__ import annotations

import copy
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_sim_properties import (
    ADMISSION,
    FIDELITY,
    KEEPALIVE,
    PLACEMENT,
    PREWARM,
    ROUTER,
    STAGING,
    check_ledger,
    check_records,
    examples,
    run_sim,
    small_profile_dict,
    workloads,
)

from sim.profile import ProfileError, profile_from_dict
from traces.request import Request

GB = 1e9
BASE = 1_600_000_000


def shared_profile(share_gpu_memory: bool = True, nbytes: int = BASE):
    d = small_profile_dict()
    d["models"][0]["shared_base"] = {"name": "sb", "bytes": nbytes, "share_gpu_memory": share_gpu_memory}
    return profile_from_dict(d, "small-shared")


SHARED = shared_profile()
STORAGE_ONLY = shared_profile(share_gpu_memory=False)


def req(i: int, t: float, model: str, prompt: int = 100, out: int = 1) -> Request:
    return Request(arrival_s=t, model=model, prompt_tokens=prompt, output_tokens=out, request_id=i)


def by_id(records):
    return {r.request_id: r for r in records}


# ---------------------------------------------------------------------------------------------
# loading only the task part


def test_a_start_where_the_base_is_resident_loads_only_the_task_part():
    # small-a cold at 0: ready at 7, first token 7.125. small-b at 20: the base (1.6 GB) is on
    # the GPU, so 0.4 GB from SSD at 1 GB/s: 20 + 3 + 0.4 + 2 + 0.125 = 25.525.
    reqs = [req(0, 0.0, "small-a"), req(1, 20.0, "small-b")]
    row, records, sim = run_sim(reqs, SHARED, keepalive="fixed[ttl=600]")
    r = by_id(records)
    assert r[0].ttft_s == pytest.approx(7.125)
    assert r[1].ttft_s == pytest.approx(5.525)
    assert r[1].instance_id != r[0].instance_id and r[1].cold
    usage = sim.usage.models
    assert usage["small-a"].base_bytes_saved == 0
    assert usage["small-b"].base_bytes_saved == BASE
    assert usage["small-b"].bytes_loaded == pytest.approx(0.4 * GB)
    # what the base would have taken from host DRAM (the node read it for small-a): 1.6 GB at 2 GB/s
    assert usage["small-b"].base_load_s_saved == pytest.approx(0.8)
    assert row["gb_base_saved"] == pytest.approx(1.6)


def test_without_a_shared_base_the_same_trace_loads_everything():
    reqs = [req(0, 0.0, "small-a"), req(1, 20.0, "small-b")]
    row, records, _ = run_sim(reqs, profile_from_dict(small_profile_dict(), "plain"), keepalive="fixed[ttl=600]")
    # small-b's checkpoint is its own: 2 GB from SSD
    assert by_id(records)[1].ttft_s == pytest.approx(7.125)
    assert row.get("gb_base_saved", 0.0) == 0.0


def test_a_sibling_started_while_the_base_loads_waits_for_it():
    # Both at 0 on one GPU. small-a loads base (1.6 s) then task (0.4 s) from 3 s, sharing the
    # SSD link (2 GB/s) with small-b's task part (0.4 GB at 1 GB/s: 3 to 3.4). small-b binds
    # once the base is complete (5.0), so both serve at 5 + 2 + 0.125.
    reqs = [req(0, 0.0, "small-a"), req(1, 0.0, "small-b")]
    _, records, sim = run_sim(reqs, SHARED, keepalive="fixed[ttl=600]")
    r = by_id(records)
    assert r[0].ttft_s == pytest.approx(7.125)
    assert r[1].ttft_s == pytest.approx(7.125)
    assert r[0].gpu == r[1].gpu
    assert sim.usage.models["small-b"].base_bytes_saved == BASE


# ---------------------------------------------------------------------------------------------
# GPU memory


def test_one_copy_of_the_base_per_gpu_fits_twice_as_many_task_models():
    # Without sharing an instance holds 3 GB: 3 fit on 10 GB. Sharing: the first holds 1.6 GB of
    # base + 1.4 GB, the others 1.4 GB each: 1 + floor(7 / 1.4) = 6.
    reqs = [req(i, 0.0, f"small-{i}", out=400) for i in range(8)]
    plain = profile_from_dict(small_profile_dict(), "plain")
    _, rec_plain, sim_plain = run_sim(reqs, plain, keepalive="fixed[ttl=600]")
    _, rec_shared, sim_shared = run_sim(reqs, SHARED, keepalive="fixed[ttl=600]")
    assert sim_plain._next_id == 3 or max(r.instance_id for r in rec_plain) < 8
    started_first = {r.instance_id for r in rec_shared if r.load_wait_s < 10}
    assert len(started_first) == 6
    assert len({r.instance_id for r in rec_plain if r.load_wait_s < 10}) == 3


def test_the_base_is_freed_with_its_last_user_and_charged_to_it_meanwhile():
    # small-a serves at 7.125 and is evicted 5 s later (12.125), taking the base's copy with it:
    # small-b at 20 loads the base onto the GPU again, from the page cache (1.6 GB at 2 GB/s),
    # and its own 0.4 GB from SSD: first token at 20 + 3 + 0.8 + 0.4 + 2 + 0.125, the run's end.
    reqs = [req(0, 0.0, "small-a"), req(1, 20.0, "small-b")]
    row, records, sim = run_sim(reqs, SHARED, keepalive="fixed[ttl=5]")
    assert by_id(records)[1].ttft_s == pytest.approx(6.325)
    usage = sim.usage.models
    assert usage["small-b"].base_bytes_saved == 0
    assert usage["base:sb"].mem_byte_s / GB == pytest.approx(1.6 * (12.125 + 6.325))
    assert usage["small-a"].mem_byte_s / GB == pytest.approx(1.4 * 12.125)  # its own 1.4 GB
    assert usage["small-b"].mem_byte_s / GB == pytest.approx(1.4 * 6.325)
    assert row["gpu_mem_gb_hours"] * 3600 == pytest.approx(3.0 * (12.125 + 6.325))


def test_the_base_is_idle_only_while_every_user_is():
    # a (5 tokens) and b (400 tokens) share the GPU's copy; a finishes long before b. `big` at
    # 100 keeps the run going: the base is idle from b's finish to the end, not from a's.
    reqs = [req(0, 0.0, "small-a", out=5), req(1, 0.5, "small-b", out=400), req(2, 100.0, "big")]
    row, records, sim = run_sim(reqs, SHARED, gpus=2, keepalive="fixed[ttl=600]")
    check_records(reqs, records, "full")
    r = by_id(records)
    assert r[0].gpu == r[1].gpu and r[0].finish_s < r[1].finish_s < 100
    u = sim.usage.models["base:sb"]
    assert u.idle_byte_s / GB == pytest.approx(1.6 * (row["horizon_s"] - r[1].finish_s))


# ---------------------------------------------------------------------------------------------
# placement prefers GPUs that hold the base


class _Cluster:
    """What the built-in placements read, over real GPUs (sim.cluster.Gpu)."""

    def __init__(self, gpus):
        self.gpus = gpus
        self.now = 50.0
        self.memory_epoch = 0

    def checkpoint_tier(self, model, node):
        return "dram"

    def checkpoint_tiers(self, model):
        return frozenset({"dram"})

    def loads_in_flight(self, node, gpu):
        return 0

    def instances_of(self, model):
        return []

    def arrivals(self, model):
        return []


def _gpus(base_on: int | None, used: tuple[float, float]):
    from sim.cluster import BaseResidency, Gpu
    from sim.flows import Link

    gpus = [Gpu(0, i, int(10 * GB), Link(f"pcie{i}", "pcie", 4 * GB), used_bytes=int(u * GB))
            for i, u in enumerate(used)]
    if base_on is not None:
        gpus[base_on].bases["sb"] = BaseResidency("sb", BASE, -1, loaded=True, holders={7})
    return gpus


def _deployment(name: str, profile=SHARED):
    from sim.deployment import Deployment

    return Deployment(name, profile.model(name), profile.hardware, profile.engine)


@pytest.mark.parametrize("placement", ["first_fit", "best_fit", "spread", "locality", "greedy_dual"])
def test_placement_prefers_a_gpu_holding_the_base(placement):
    # GPU 0 is empty; GPU 1 holds the base (and 8.4 GB in all): a task model needs 1.4 GB there,
    # 3 GB anywhere else. Every built-in placement picks GPU 1; without the base, GPU 0.
    from policies import load_policy

    policy = load_policy("placement", placement)
    assert policy.place(_deployment("small-b"), _Cluster(_gpus(1, (0.0, 8.4)))).gpu == 1
    assert load_policy("placement", placement).place(_deployment("small-b"), _Cluster(_gpus(None, (0.0, 8.4)))).gpu == 0


def test_a_gpu_with_the_base_but_no_room_for_the_task_part_is_passed_over():
    from policies import load_policy

    for placement in ("first_fit", "best_fit", "spread", "locality"):
        place = load_policy("placement", placement).place(_deployment("small-b"), _Cluster(_gpus(1, (0.0, 9.0))))
        assert place.gpu == 0, placement


def test_placement_prefers_the_base_in_a_run():
    # spread: `big` takes GPU 0, small-a the empty GPU 1; small-c would spread to the empty
    # GPU 2, and goes next to small-a with a shared base (loading 0.4 GB instead of 2).
    reqs = [req(0, 0.0, "big", out=2000), req(1, 1.0, "small-a", out=3000), req(2, 30.0, "small-c")]
    plain = profile_from_dict(small_profile_dict(), "plain")
    _, records, _ = run_sim(reqs, plain, gpus=3, placement="spread", keepalive="fixed[ttl=600]")
    assert [r.gpu for r in sorted(records, key=lambda r: r.request_id)] == [0, 1, 2]
    _, records, _ = run_sim(reqs, SHARED, gpus=3, placement="spread", keepalive="fixed[ttl=600]")
    r = by_id(records)
    assert [r[i].gpu for i in range(3)] == [0, 1, 1]
    assert r[2].ttft_s == pytest.approx(5.525)


# ---------------------------------------------------------------------------------------------
# storage-only sharing (separate engine processes reading one checkpoint)


def test_storage_only_sharing_reads_the_base_from_the_page_cache():
    # share_gpu_memory false: small-b holds its own copy on GPU 1, but the node read the base
    # for small-a already: 1.6 GB from DRAM at 2 GB/s, then 0.4 GB from SSD at 1 GB/s.
    reqs = [req(0, 0.0, "small-a", out=400), req(1, 20.0, "small-b")]
    _, records, sim = run_sim(reqs, STORAGE_ONLY, gpus=2, placement="spread", keepalive="fixed[ttl=600]")
    r = by_id(records)
    assert r[1].gpu != r[0].gpu
    assert r[1].ttft_s == pytest.approx(3 + 0.8 + 0.4 + 2 + 0.125)
    assert sim.usage.models["small-b"].base_bytes_saved == 0
    assert sim.usage.models["small-b"].bytes_loaded == pytest.approx(2 * GB)


def test_storage_only_sharing_holds_full_copies_on_the_gpu():
    reqs = [req(i, 0.0, f"small-{i}", out=400) for i in range(4)]
    _, records, _ = run_sim(reqs, STORAGE_ONLY, keepalive="fixed[ttl=600]")
    assert len({r.instance_id for r in records if r.load_wait_s < 10}) == 3


# ---------------------------------------------------------------------------------------------
# sleeping and waking with a base


def test_a_level_one_wake_copies_back_only_the_task_part_while_the_base_is_resident():
    from test_sim_properties import SleepTiers

    # a sleeps (weights to DRAM) 2 s after its request; b keeps the base resident; a's wake
    # copies 0.4 GB over PCIe (2 GB/s): 0.5 + 0.2 s
    reqs = [req(0, 0.0, "small-a"), req(1, 0.0, "small-b", out=2000), req(2, 20.0, "small-a")]
    _, records, sim = run_sim(reqs, SHARED, keepalive=SleepTiers(2.0, 100.0, 0.0))
    r = by_id(records)
    assert r[2].woke
    assert r[2].ttft_s == pytest.approx(0.5 + 0.2 + 0.125)
    assert sim.usage.models["small-a"].base_bytes_saved == BASE


# ---------------------------------------------------------------------------------------------
# invariants across policy mixes


@settings(max_examples=examples(50), deadline=None)
@given(reqs=workloads(models=["small-a", "small-b", "small-c", "big", "small"]), nodes=st.integers(1, 2),
       gpus=st.integers(1, 2), fidelity=FIDELITY, staging=STAGING, keepalive=KEEPALIVE, admission=ADMISSION,
       placement=st.one_of(PLACEMENT, st.sampled_from(["locality", "greedy_dual"])), router=ROUTER,
       prewarm=PREWARM, storage=st.sampled_from(["ssd", "remote"]), gpu_memory=st.booleans())
def test_shared_base_invariants(reqs, nodes, gpus, fidelity, staging, keepalive, admission, placement, router,
                                prewarm, storage, gpu_memory):
    profile = SHARED if gpu_memory else STORAGE_ONLY
    keepalive_policy = keepalive if placement != "greedy_dual" else "greedy_dual"
    row, records, sim = run_sim(reqs, profile, nodes, gpus, fidelity, storage, staging=staging,
                                keepalive=keepalive_policy, admission=admission, placement=placement,
                                router=router, prewarm=prewarm)
    check_records(reqs, records, staging)
    assert row["requests"] == len(reqs) == row["served"] + row["rejected"]
    assert sim.pending_total == 0 and not sim.memory_queue and sim.outstanding == 0
    check_ledger(row, records, sim)
    saved = sum(u.base_bytes_saved for u in sim.usage.models.values())
    assert math.isclose(row.get("gb_base_saved", 0.0), saved / GB, abs_tol=1e-12)
    if not gpu_memory:
        assert saved == 0


def test_both_fidelities_agree_with_a_shared_base():
    reqs = [req(i, 0.37 * i, f"small-{i % 3}", prompt=50 + 13 * i, out=1 + (7 * i) % 40) for i in range(60)]
    a = run_sim(reqs, SHARED, fidelity="request", staging="progressive", keepalive="fixed[ttl=5]")
    b = run_sim(reqs, SHARED, fidelity="iteration", staging="progressive", keepalive="fixed[ttl=5]")
    ra, rb = by_id(a[1]), by_id(b[1])
    for i in ra:
        assert ra[i].ttft_s == pytest.approx(rb[i].ttft_s, abs=1e-9)
        assert ra[i].cold == rb[i].cold


# ---------------------------------------------------------------------------------------------
# the profile's declaration


def test_a_base_larger_than_the_weights_is_refused_naming_the_field():
    d = small_profile_dict()
    d["models"][0]["shared_base"] = {"name": "sb", "bytes": 3_000_000_000}
    with pytest.raises(ProfileError, match=r"models\[0\]\.shared_base\.bytes.*exceeds"):
        profile_from_dict(d, "p.json")


def test_two_models_declaring_one_base_differently_are_refused():
    d = small_profile_dict()
    d["models"][0]["shared_base"] = {"name": "sb", "bytes": 1_000_000_000}
    d["models"][1]["shared_base"] = {"name": "sb", "bytes": 2_000_000_000}
    with pytest.raises(ProfileError, match=r"models\[1\]\.shared_base.*declared differently"):
        profile_from_dict(d, "p.json")


def test_a_base_without_a_name_is_refused():
    d = small_profile_dict()
    d["models"][0]["shared_base"] = {"bytes": 1_000_000_000}
    with pytest.raises(ProfileError, match=r"shared_base\.name"):
        profile_from_dict(d, "p.json")


def test_the_declaration_survives_a_round_trip():
    again = profile_from_dict(copy.deepcopy(SHARED.to_dict()), "again")
    assert again.models[0].shared_base == SHARED.models[0].shared_base
    assert again.models[1].shared_base is None


# ---------------------------------------------------------------------------------------------
# the CLI, as a user runs it


def test_the_cli_declares_a_shared_base_and_reports_what_it_saved(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    import pandas as pd

    repo = Path(__file__).resolve().parent.parent
    rows = {}
    for label, extra in (("plain", []), ("shared", ["--shared-base", "0.9"])):
        out = tmp_path / label
        done = subprocess.run([sys.executable, "-m", "sim", "--trace", "azure_functions", "--staging", "full",
                               "--keepalive", "fixed", "--nodes", "1", "--gpus-per-node", "2", "--quiet", "--no-records", "--out", str(out),
                               *extra], capture_output=True, text=True, cwd=repo, timeout=240)
        assert done.returncode == 0, done.stderr
        rows[label] = (pd.read_csv(out / "summary.csv").iloc[0], pd.read_csv(out / "models.csv"))
        assert len(pd.read_csv(out / "summary.csv")) == 1
    plain, shared = rows["plain"], rows["shared"]
    assert "gb_base_saved" not in plain[0] or plain[0]["gb_base_saved"] == 0
    assert shared[0]["gb_base_saved"] > 0
    models = shared[1].set_index("model")
    assert "base:llama-2-7b-base" in models.index
    assert models["base_load_s_saved"].sum() > 0
    assert math.isclose(models["gb_base_saved"].sum(), shared[0]["gb_base_saved"], rel_tol=1e-9)
    # memory is the bottleneck on 2 GPUs: one copy of the base per GPU keeps more models warm
    assert shared[0]["cold_start_pct"] < plain[0]["cold_start_pct"]


def test_the_cli_refuses_a_bad_shared_base_in_one_line(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-m", "sim", "--shared-base", "1.5", "--quiet"], capture_output=True,
                          text=True, cwd=repo, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "--shared-base" in done.stderr


# ---------------------------------------------------------------------------------------------
# loads share the page cache (`engine.shares_reads`)


def one_at_a_time(shares_reads: bool, **engine):
    """`small` with a batch of one: three requests at once start three instances on one GPU."""
    d = small_profile_dict(shares_reads=shares_reads, **engine)
    d["models"][0]["max_batch"] = 1
    return profile_from_dict(d, f"small-shares-reads-{shares_reads}")


@pytest.mark.parametrize("storage, alone_s, apart_s", [("ssd", 2.0, 3.0), ("remote", 4.0, 6.0)])
def test_loads_of_one_checkpoint_read_it_once(storage, alone_s, apart_s):
    # Three loads of small's 2 GB at once. Reading apart: three flows share the SSD (2 GB/s:
    # 3 s each) or the network (1 GB/s: 6 s). Through the page cache: one reads at the loader's
    # cap (1 GB/s from SSD, 0.5 from remote), the others copy from host DRAM as it arrives.
    reqs = [req(i, 0.0, "small") for i in range(3)]
    for shares, load_s in ((True, alone_s), (False, apart_s)):
        row, records, sim = run_sim(reqs, one_at_a_time(shares), storage=storage, keepalive="fixed[ttl=600]")
        assert len({r.instance_id for r in records}) == 3
        assert [r.ttft_s for r in records] == pytest.approx([3 + load_s + 2 + 0.125] * 3)
        link = "ssd" if storage == "ssd" else "network"
        assert row[f"gb_{link}"] == pytest.approx(2.0 if shares else 6.0)
        assert row["gb_pcie"] == pytest.approx(6.0)


def test_a_load_that_starts_during_a_read_waits_for_it_and_no_longer():
    # The first load reads from 3 s to 5 s; a second instance starts 0.5 s later and copies
    # from the page cache (2 GB over PCIe at 2 GB/s: 3.5 to 4.5 s), then waits for the read's
    # last byte at 5 s: both serve 2 s after 5 s.
    reqs = [req(0, 0.0, "small"), req(1, 0.5, "small")]
    _, records, _ = run_sim(reqs, one_at_a_time(True), keepalive="fixed[ttl=600]")
    r = by_id(records)
    assert r[0].first_token_s == pytest.approx(7.125)
    assert r[1].first_token_s == pytest.approx(7.125)


def test_a_copy_from_the_page_cache_runs_at_the_loaders_host_dram_share():
    # As above, with a loader that reaches only 0.125 of PCIe from host DRAM (the engine
    # measured on an H200 reached 0.066): the second instance copies 2 GB at 0.5 GB/s, from
    # 3.5 to 7.5 s, after the read's end at 5 s; the first, reading from the SSD at 0.5 x 2
    # GB/s, is unchanged.
    reqs = [req(0, 0.0, "small"), req(1, 0.5, "small")]
    _, records, _ = run_sim(reqs, one_at_a_time(True, loader_efficiency_dram=0.125), keepalive="fixed[ttl=600]")
    r = by_id(records)
    assert r[0].first_token_s == pytest.approx(7.125)
    assert r[1].first_token_s == pytest.approx(7.5 + 2 + 0.125)


# ---------------------------------------------------------------------------------------------
# the memory ledger's epoch (placement's "no room" answer holds only while it stays)


def test_every_change_placement_reads_moves_the_memory_epoch_on():
    """Memory reserved or released, an instance idle or busy, an instance come or gone: each
    moves the epoch on (never back), so a remembered "no room" answer cannot outlive it."""
    from test_sim_properties import CheckedSimulator, Recorder

    from sim.config import SimConfig
    from sim.policyset import PolicySet

    reqs = [req(0, 0.0, "small-a", out=40), req(1, 0.5, "small-b", out=3), req(2, 30.0, "big")]
    sim = CheckedSimulator(SHARED, PolicySet.from_specs(staging="full", keepalive="fixed[ttl=5]",
                                                        router="least_loaded"),
                           SimConfig(nodes=1, gpus_per_node=1), Recorder("x"))
    ledger = sim.memory
    epochs: list[tuple[str, int, int]] = []
    for name in ("reserve", "release", "set_idle", "touch"):
        original = getattr(ledger, name)

        def watched(*a, _original=original, _name=name, **kw):
            before = ledger.epoch
            out = _original(*a, **kw)
            epochs.append((_name, before, ledger.epoch))
            return out

        setattr(ledger, name, watched)
    sim.run(reqs)
    assert {name for name, _, _ in epochs} == {"reserve", "release", "set_idle", "touch"}
    assert all(after > before for _, before, after in epochs), epochs
    assert [b for _, b, _ in epochs] == sorted(b for _, b, _ in epochs)
