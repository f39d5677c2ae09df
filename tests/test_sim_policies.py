"""The policy registry, specs and labels, staging plans, and the built-in policies' choices
on hand-made views (no simulator)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies import Keep, KeepAlivePolicy, Place, Prewarm, StagePlan
from policies.admission import MaxQueue
from policies.decisions import Admit
from policies.placement import BestFit, FirstFit, Spread
from policies.plan import full_plan, importance_order, pipelined_plan, progressive_plan
from policies.prewarm import Popular
from policies.registry import KINDS, PolicySpecError, load_policy, names, register, split_specs
from policies.router import LeastLoaded, PreferFull
from traces.request import Request

# ---------------------------------------------------------------------------------------------
# registry


def test_every_kind_has_builtins_and_the_defaults_exist():
    assert set(KINDS) == {"staging", "keepalive", "prewarm", "placement", "router", "admission"}
    assert {"full", "pipelined", "progressive"} <= set(names("staging"))
    assert {"none", "fixed", "two_tier"} <= set(names("keepalive"))
    assert "none" in names("prewarm") and "first_fit" in names("placement")
    assert "least_loaded" in names("router") and "always" in names("admission")


@pytest.mark.parametrize("kind", list(KINDS))
def test_unknown_name_lists_the_valid_ones(kind):
    with pytest.raises(PolicySpecError) as e:
        load_policy(kind, "no_such_policy")
    msg = str(e.value)
    assert "no_such_policy" in msg
    for name in names(kind):
        assert name in msg


def test_unknown_kind_lists_kinds():
    with pytest.raises(PolicySpecError, match="staging, keepalive"):
        load_policy("sheduling", "full")
    with pytest.raises(PolicySpecError, match="kinds"):
        register("sheduling", KeepAlivePolicy)


def test_duplicate_registration_is_an_error():
    class Fixed2(KeepAlivePolicy):
        name = "fixed"

        def on_idle(self, inst, now):
            return []

    with pytest.raises(PolicySpecError, match="already registered"):
        register("keepalive", Fixed2)
    # re-registering the same class is harmless
    same = type(load_policy("keepalive", "fixed"))
    assert register("keepalive", same) is same


def test_register_checks_kind_and_name():
    class Nameless(KeepAlivePolicy):
        def on_idle(self, inst, now):
            return []

    with pytest.raises(PolicySpecError, match="no `name`"):
        register("keepalive", Nameless)
    with pytest.raises(PolicySpecError, match="StagingPolicy"):
        register("staging", Nameless)


def test_registered_user_policy_loads_by_name():
    from policies import registry

    class Hold(KeepAlivePolicy):
        name = "test_hold_policy"

        def __init__(self, seconds: float = 1.0):
            self.seconds = float(seconds)

        def on_idle(self, inst, now):
            return [Keep("gpu", self.seconds)]

    register("keepalive", Hold)
    try:
        p = load_policy("keepalive", "test_hold_policy[seconds=3]")
        assert isinstance(p, Hold) and p.seconds == 3.0
        assert load_policy("keepalive", p.label).label == p.label == "test_hold_policy[seconds=3.0]"
        assert "test_hold_policy" in names("keepalive")
    finally:
        registry._REGISTRY["keepalive"].pop("test_hold_policy", None)


def all_builtin_specs():
    specs = []
    for kind in KINDS:
        for name in names(kind):
            specs.append((kind, name))
    specs += [
        ("keepalive", "fixed[ttl=1.5]"),
        ("keepalive", "fixed[ttl=0]"),
        ("keepalive", "two_tier[gpu=60,dram=0.25]"),
        ("staging", "progressive[fractions=0.5/1.0]"),
        ("admission", "max_queue[depth=3]"),
        ("prewarm", "popular[window=60,min_requests=1,interval=5,tier=process]"),
    ]
    return specs


@pytest.mark.parametrize("kind, spec", all_builtin_specs())
def test_label_round_trips(kind, spec):
    p = load_policy(kind, spec)
    again = load_policy(kind, p.label)
    assert type(again) is type(p)
    assert again.label == p.label
    assert vars(again) == vars(p)


def test_parameters_are_converted_to_the_defaults_types():
    p = load_policy("keepalive", "two_tier[gpu=60, dram=7]")
    assert p.gpu == 60.0 and isinstance(p.gpu, float) and p.dram == 7.0
    q = load_policy("admission", "max_queue[depth=5]")
    assert q.depth == 5 and isinstance(q.depth, int)


@pytest.mark.parametrize("kind, spec, words", [
    ("keepalive", "fixed[ttl=soon]", ["ttl", "'soon'", "float"]),
    ("admission", "max_queue[depth=many]", ["depth", "int"]),
    ("keepalive", "fixed[forever=1]", ["unknown parameter", "forever", "ttl"]),
    ("keepalive", "none[ttl=1]", ["unknown parameter", "none"]),
    ("keepalive", "fixed[ttl]", ["key=value"]),
    ("keepalive", "fixed[ttl=5", ["expected"]),
    ("keepalive", "fixed[ttl=-1]", ["ttl", ">= 0"]),
    ("admission", "max_queue[depth=-1]", ["depth"]),
    ("staging", "progressive[fractions=0.5/0.9]", ["fractions"]),
    ("staging", "progressive[fractions=a/b]", ["fractions"]),
    ("prewarm", "popular[tier=disk]", ["tier", "gpu", "process"]),
])
def test_bad_parameters_are_spec_errors(kind, spec, words):
    with pytest.raises(PolicySpecError) as e:
        load_policy(kind, spec)
    for w in words:
        assert w in str(e.value), (w, str(e.value))


def test_fractional_value_for_an_int_parameter_is_an_error():
    with pytest.raises(PolicySpecError):
        load_policy("admission", "max_queue[depth=2.7]")


def test_two_tier_negative_seconds_is_an_error_at_load_time():
    with pytest.raises(PolicySpecError):
        load_policy("keepalive", "two_tier[gpu=-1]")


def test_import_path_and_file_specs(tmp_path):
    p = load_policy("keepalive", "policies.keepalive:Fixed[ttl=2]")
    assert p.ttl == 2.0
    f = tmp_path / "mine.py"
    f.write_text(
        "from policies import KeepAlivePolicy\n"
        "class Mine(KeepAlivePolicy):\n"
        "    name = 'mine'\n"
        "    def __init__(self, k: int = 1):\n"
        "        self.k = int(k)\n"
        "    def on_idle(self, inst, now):\n"
        "        return []\n"
        "class NotAPolicy:\n"
        "    pass\n"
    )
    q = load_policy("keepalive", f"{f}:Mine[k=4]")
    assert q.k == 4 and q.label == "mine[k=4]"
    with pytest.raises(PolicySpecError, match="not a subclass of KeepAlivePolicy"):
        load_policy("keepalive", f"{f}:NotAPolicy")
    with pytest.raises(PolicySpecError, match="not a subclass of StagingPolicy"):
        load_policy("staging", f"{f}:Mine")
    with pytest.raises(PolicySpecError, match="has no 'Missing'"):
        load_policy("keepalive", f"{f}:Missing")
    with pytest.raises(PolicySpecError, match="not found"):
        load_policy("keepalive", f"{tmp_path / 'nope.py'}:Mine")
    with pytest.raises(PolicySpecError, match="cannot import"):
        load_policy("keepalive", "no_such_pkg.mod:Mine")


def test_split_specs_keeps_brackets_together():
    assert split_specs("full, progressive[fractions=0.5/1.0]") == ["full", "progressive[fractions=0.5/1.0]"]
    assert split_specs("fixed[ttl=5],two_tier[gpu=1,dram=2]") == ["fixed[ttl=5]", "two_tier[gpu=1,dram=2]"]
    assert split_specs(" , ,") == []
    assert split_specs("a:B[x=1,y=2],none") == ["a:B[x=1,y=2]", "none"]


# ---------------------------------------------------------------------------------------------
# decisions


def test_decisions_validate():
    with pytest.raises(ValueError, match="tier"):
        Keep("disk", 1.0)
    with pytest.raises(ValueError, match=">= 0"):
        Keep("gpu", -1.0)
    with pytest.raises(ValueError, match=">= 0"):
        Keep("gpu", float("nan"))
    with pytest.raises(ValueError, match="action"):
        Admit("maybe")
    with pytest.raises(ValueError, match="tier"):
        Prewarm("m", "dram")
    assert Keep("dram", 0.0).seconds == 0.0


# ---------------------------------------------------------------------------------------------
# staging plans


def test_stage_plan_validation():
    with pytest.raises(ValueError, match="exactly once"):
        StagePlan("p", 4, ((0, 1), (2,)), 0)  # layer 3 missing
    with pytest.raises(ValueError, match="exactly once"):
        StagePlan("p", 3, ((0, 1), (1, 2)), 0)  # layer 1 twice
    with pytest.raises(ValueError, match="exactly once"):
        StagePlan("p", 2, ((0, 1, 2),), 0)  # layer 2 does not exist
    with pytest.raises(ValueError, match="serve_from"):
        StagePlan("p", 2, ((0,), (1,)), 2)
    with pytest.raises(ValueError, match="serve_from"):
        StagePlan("p", 2, ((0,), (1,)), -1)
    with pytest.raises(ValueError, match="empty stage"):
        StagePlan("p", 2, ((0, 1), ()), 0)


def test_stage_plan_accessors_and_round_trip():
    plan = StagePlan("p", 4, ((3, 0), (1,), (2,)), serve_from=0)
    assert plan.num_stages == 3
    assert plan.layers_after(0) == (0, 3) and plan.layers_after(1) == (0, 1, 3)
    assert plan.gates_after(0) == [1.0, 0.0, 0.0, 1.0]
    assert plan.gates_after(2) == [1.0] * 4
    assert StagePlan.from_dict(plan.to_dict()) == plan


def test_full_and_pipelined_plans():
    f = full_plan(5)
    assert f.stages == ((0, 1, 2, 3, 4),) and f.serve_from == 0 and not f.pipelined
    p = pipelined_plan(5)
    assert p.stages == tuple((i,) for i in range(5)) and p.serve_from == 4 and p.pipelined


def test_progressive_plan_seed_shape():
    plan = progressive_plan(32)
    assert [len(s) for s in plan.stages] == [24, 4, 4]
    assert plan.serve_from == 0
    # without a measurement: first and last layers first, the middle last
    assert {0, 31, 1, 30} <= set(plan.stages[0])
    assert set(plan.stages[2]) == {14, 15, 16, 17}


def test_progressive_plan_puts_the_most_important_layers_in_stage_one():
    importance = [0.1, 5.0, 0.3, 9.0, 0.2, 7.0, 0.05, 4.0]  # top 6: 3, 5, 1, 7, 2, 4
    plan = progressive_plan(8, importance=importance)
    assert [len(s) for s in plan.stages] == [6, 1, 1]
    assert set(plan.stages[0]) == {3, 5, 1, 7, 2, 4}
    assert plan.stages[1] == (0,) and plan.stages[2] == (6,)


@settings(max_examples=150, deadline=None)
@given(n=st.integers(1, 80), data=st.data())
def test_progressive_plan_properties(n, data):
    k = data.draw(st.integers(1, 4))
    cuts = sorted(data.draw(st.lists(st.floats(0.05, 0.99), min_size=k - 1, max_size=k - 1, unique=True)))
    fractions = (*cuts, 1.0)
    importance = data.draw(st.one_of(st.none(), st.lists(st.floats(0, 10), min_size=n, max_size=n)))
    plan = progressive_plan(n, fractions, importance)
    assert plan.num_layers == n and plan.serve_from == 0
    assert 1 <= plan.num_stages <= len(fractions)
    order = importance_order(n, importance)
    assert sorted(order) == list(range(n))
    # stage j holds the next most important layers: stages are consecutive runs of `order`
    pos = 0
    for stage in plan.stages:
        assert set(stage) == set(order[pos:pos + len(stage)])
        pos += len(stage)
    if importance is not None:
        first = plan.stages[0]
        rest = [i for s in plan.stages[1:] for i in s]
        if rest:
            assert min(importance[i] for i in first) >= max(importance[i] for i in rest)


@pytest.mark.parametrize("fractions", [(), (0.5,), (0.9, 0.5, 1.0), (0.5, 1.1)])
def test_progressive_plan_rejects_bad_fractions(fractions):
    with pytest.raises(ValueError, match="fractions"):
        progressive_plan(8, fractions)


def test_progressive_plan_rejects_importance_of_wrong_length():
    with pytest.raises(ValueError, match="importance"):
        progressive_plan(8, importance=[1.0] * 7)


def test_staging_policies_use_the_model():
    model = SimpleNamespace(name="m", num_layers=8, weight_bytes=1, footprint_bytes=1,
                            layer_importance=(0, 0, 0, 0, 0, 0, 1, 1))
    plan = load_policy("staging", "progressive[fractions=0.25/1.0]").plan(model)
    assert plan.stages[0] == (6, 7)
    assert load_policy("staging", "full").plan(model) == full_plan(8)
    assert load_policy("staging", "pipelined").plan(model) == pipelined_plan(8)


# ---------------------------------------------------------------------------------------------
# built-in choices on hand-made views


def inst(iid, state="full", active=0, capacity=4, idle_since=None, last_used=0.0, memory=3, gpu=0, node=0):
    return SimpleNamespace(id=iid, model="m", state=state, active=active, capacity=capacity,
                           can_serve=state in ("ready", "full"), idle_since=idle_since, last_used=last_used,
                           memory_bytes=memory, gpu=gpu, node=node)


def gpu(node, index, capacity, instances=()):
    used = sum(i.memory_bytes for i in instances)
    return SimpleNamespace(node=node, index=index, capacity_bytes=capacity, used_bytes=used,
                           free_bytes=capacity - used, instances=list(instances))


MODEL = SimpleNamespace(name="m", num_layers=4, weight_bytes=2, footprint_bytes=3, layer_importance=None)


def cluster(gpus, **kw):
    return SimpleNamespace(gpus=gpus, now=kw.get("now", 0.0), **{k: v for k, v in kw.items() if k != "now"})


def test_first_fit_best_fit_spread():
    g = [gpu(0, 0, 10, [inst(1, memory=8)]), gpu(0, 1, 10, [inst(2, memory=4)]), gpu(1, 0, 10)]
    c = cluster(g)
    assert FirstFit().place(MODEL, c) == Place(0, 1)
    assert BestFit().place(MODEL, c) == Place(0, 1)
    assert Spread().place(MODEL, c) == Place(1, 0)


def test_placement_evicts_idle_least_recently_used_first():
    busy = inst(1, memory=3)
    old = inst(2, memory=3, idle_since=5.0, last_used=1.0)
    new = inst(3, memory=3, idle_since=5.0, last_used=4.0)
    loading = inst(4, state="loading", memory=1, idle_since=None)
    g = [gpu(0, 0, 10, [busy, new, old, loading])]
    assert FirstFit().place(MODEL, cluster(g)) == Place(0, 0, (2,))
    # no idle instance anywhere: nothing can start now
    assert FirstFit().place(MODEL, cluster([gpu(0, 0, 10, [busy, inst(5, memory=6)])])) is None
    assert BestFit().place(MODEL, cluster([gpu(0, 0, 3, [inst(6, memory=3)])])) is None


def test_least_loaded_router_order():
    req = Request(0.0, "m", 10, 10)
    full = inst(1, active=4)
    busy = inst(2, active=2)
    light = inst(3, active=1)
    loading = inst(4, state="loading", active=1)
    sleeping = inst(5, state="sleeping")
    r = LeastLoaded()
    assert r.route(req, [full, busy, light, loading, sleeping], None) == 3
    assert r.route(req, [full, loading, sleeping], None) == 4
    assert r.route(req, [full, sleeping], None) == 5
    assert r.route(req, [full], None) is None
    assert r.route(req, [], None) is None


def test_prefer_full_router():
    req = Request(0.0, "m", 10, 10)
    partial = inst(1, state="ready", active=0)
    full = inst(2, state="full", active=3)
    assert PreferFull().route(req, [partial, full], None) == 2
    assert PreferFull().route(req, [partial, inst(3, active=4)], None) == 1


def test_max_queue_admission():
    req = Request(0.0, "m", 10, 10)
    c = SimpleNamespace(waiting=lambda model: 2)
    assert MaxQueue(3).admit(req, c).action == "serve"
    out = MaxQueue(2).admit(req, c)
    assert out.action == "reject" and "2" in out.reason
    assert load_policy("admission", "always").admit(req, c).action == "serve"


def test_keepalive_builtins():
    assert load_policy("keepalive", "none").on_idle(inst(1), 0.0) == []
    assert load_policy("keepalive", "fixed[ttl=7]").on_idle(inst(1), 0.0) == [Keep("gpu", 7.0)]
    assert load_policy("keepalive", "two_tier[gpu=1,dram=2]").on_idle(inst(1), 0.0) == [
        Keep("gpu", 1.0), Keep("dram", 2.0)]


def test_popular_prewarm():
    arrivals = {"hot": [10.0, 50.0, 90.0], "warm": [95.0], "old": [1.0, 2.0, 3.0], "running": [90.0] * 5}
    c = SimpleNamespace(
        now=100.0,
        models_seen=list(arrivals),
        arrivals=lambda m: arrivals[m],
        instances_of=lambda m: [inst(1)] if m == "running" else [],
    )
    p = Popular(window=60.0, min_requests=2, interval=10.0)
    assert p.interval_s == 10.0
    assert p.on_tick(c) == [Prewarm("hot")]  # 50 and 90 are within 60 s; `running` has an instance
    assert Popular(window=60.0, min_requests=3).on_tick(c) == []
    p1 = Popular(window=60.0, min_requests=1, interval=10.0, tier="process")
    assert p1.on_tick(c) == [Prewarm("hot", "process"), Prewarm("warm", "process")]
    p2 = Popular(window=99.0, min_requests=3)
    assert p2.on_tick(c) == [Prewarm("hot"), Prewarm("old")]
    assert load_policy("prewarm", "none").on_tick(c) == []


def test_max_queue_needs_room_for_one():
    with pytest.raises(PolicySpecError, match="depth must be >= 1"):
        load_policy("admission", "max_queue[depth=0]")


@pytest.mark.parametrize("fractions", ["0.5/0.5/1.0", "-0.1/1.0", "0.0/1.0", "0.9/0.5/1.0"])
def test_progressive_fractions_must_increase_strictly(fractions):
    with pytest.raises(PolicySpecError):
        load_policy("staging", f"progressive[fractions={fractions}]")
