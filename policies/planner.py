"""`planned`: a staging planner that chooses the load order and the stage boundaries from measured numbers.

Sources. The idea is the seed's progressive loading (serve from a first stage of the most
important layers with the rest alpha-gated off, then bind the others stage by stage); the
planner replaces its fixed fractions (24, 28, 32 of 32 layers) with a choice made from the
profile. Its time model is the bytes-over-bandwidth estimate ServerlessLLM (OSDI'24) uses to
predict a model's startup time from where its checkpoint sits; the load order by measured
layer importance follows layer-removal work such as ShortGPT (Men et al., 2024), which drops
the layers whose removal changes the output least.

What it decides, from the profile only:
- Load order: most important layers first, by the profile's `layer_importance`. A plan of more
  than one stage needs it; a profile without it is refused (the quality of a stage holds only
  for the layers it was measured with, and a guessed order would serve unmeasured quality).
- Boundaries: only at layer counts whose quality the profile measured (its `stages` with a
  quality); never at an interpolated count. The last boundary is every layer. The target picks
  among them: `floor=Q`, the smallest measured first stage with quality >= Q (later boundaries
  by area); `stages=N`, N boundaries maximising the area; `target=area`, any number of them
  maximising the area. A target the measured numbers cannot meet is refused with one line
  naming the model and what is missing.

The area is the quality-over-time area of one cold start on idle links: the integral of the
instance's quality from the start of the load to its end, quality 0 until the first stage
binds and the instance serves, then stepping up as each stage binds. Each layer takes
`layer_bytes / (loader_efficiency x slowest link on the tier's path) + bind_s_per_layer`
(`tier`: ssd by default, dram or remote). The simulator's load waits for engine init
(KV allocation, graph capture) after the serving stage, overlapped or not, before loading the
next stage, so init and the first stage's embedding and head shift the whole staircase without
changing its area: area = sum over consecutive boundaries a < b of q(a) x (b - a) x seconds per
layer. Each later stage that binds while serving costs a refill (a prefill over the context,
`context` tokens, from the profile's prefill table) during which no token comes out, taken off
its step: q(a) x max(0, (b - a) x seconds per layer - refill). Without the refill every measured
boundary would add area; with it, two boundaries close together may not be worth the second.

Simplified: one cold start on idle links (no contention, no queue); the area counts quality,
not tokens (a stage's `latency_scale` is not weighed); the refill is charged as if a request
were running at every bind; the layers a stage holds are the top of the importance order, which
is assumed to be how the profile's stage qualities were measured.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from contracts.plan import StagePlan, full_plan, importance_order
from policies.base import StagingPolicy
from policies.views import ModelView

TARGETS = ("area", "floor", "stages")
TIERS = ("dram", "ssd", "remote")


class PlanRefused(ValueError):
    """The target cannot be met with measured numbers; the message names the model and what is missing."""


@dataclass(frozen=True)
class LoadFacts:
    """What the planner knows of one model's cold start, every number from its profile.

    `measured` holds `(layers, quality)` for the partial stages (fewer layers than the model)
    whose quality was measured; `unmeasured` names the partial stages listed with quality null.
    """

    model: str
    num_layers: int
    seconds_per_layer: float
    refill_s: float
    measured: tuple[tuple[int, float], ...]
    unmeasured: tuple[str, ...]
    importance: tuple[float, ...] | None

    @classmethod
    def of(cls, model: ModelView, tier: str = "ssd", context: int = 1024) -> LoadFacts:
        """Read them from the model's view: its partial stages, layer load time and importance."""
        measured, unmeasured = [], []
        for name, layers, quality in model.partial_stages:
            if quality is None:
                unmeasured.append(name)
            else:
                measured.append((layers, quality))
        shape_name = model.profile_model
        importance = model.layer_importance
        return cls(
            model=model.name if model.name == shape_name else f"{model.name} (profile model {shape_name})",
            num_layers=model.num_layers,
            seconds_per_layer=model.layer_load_s(tier),
            refill_s=float(model.prefill_s(context)),
            measured=tuple(sorted(measured)),
            unmeasured=tuple(unmeasured),
            importance=tuple(importance) if importance else None,
        )


def segment(facts: LoadFacts, a: int, b: int, first: bool) -> float:
    """Quality-seconds while the instance serves with `a` layers bound, until `b` are: the first
    stage serves from its bind; a later one refills first (module docstring)."""
    seconds = (b - a) * facts.seconds_per_layer - (0.0 if first else facts.refill_s)
    return dict(facts.measured)[a] * max(0.0, seconds)


def area(facts: LoadFacts, bounds: tuple[int, ...]) -> float:
    """Quality-seconds from the start of the load to its end with these boundaries."""
    return sum(segment(facts, a, b, j == 0) for j, (a, b) in enumerate(zip(bounds, bounds[1:], strict=False)))


def _missing(facts: LoadFacts) -> str:
    if facts.unmeasured:
        return f"quality null for {', '.join(facts.unmeasured)}"
    return "it lists no partial stage"


@lru_cache(maxsize=256)
def choose(facts: LoadFacts, target: str, floor: float = 0.0, stages: int = 0) -> tuple[int, ...]:
    """The stage boundaries (cumulative layer counts, the last every layer) the target asks for.

    Among the measured boundaries, a chain of the most area; ties go to fewer stages, then to
    the earlier boundaries. A dynamic programme over (last boundary, stages so far): the area is
    a sum over consecutive boundaries, and only a chain's first segment pays no refill.
    """
    n = facts.num_layers
    if target == "stages" and stages == 1:
        return (n,)
    where = f"planned: model {facts.model}"
    counts = [k for k, _ in facts.measured]
    if not counts:
        raise PlanRefused(f"{where}: no partial stage has a measured quality ({_missing(facts)}); "
                          "a stage boundary would be a guess")
    if target == "stages" and stages - 1 > len(counts):
        raise PlanRefused(f"{where}: stages={stages} needs {stages - 1} measured partial stages, the profile "
                          f"measures {len(counts)} ({', '.join(map(str, counts))} layers)"
                          + (f"; {_missing(facts)}" if facts.unmeasured else ""))
    firsts = counts
    if target == "floor":
        firsts = [k for k, q in facts.measured if q >= floor][:1]
        if not firsts:
            best = max(q for _, q in facts.measured)
            raise PlanRefused(f"{where}: no measured partial stage reaches quality {floor:g} (the best, "
                              f"{best:g}, is below it" + (f"; {_missing(facts)})" if facts.unmeasured else ")"))
    nodes = counts + [n]
    # best[(k, c)]: the best chain from an allowed first boundary to k with c boundaries.
    best: dict[tuple[int, int], tuple[float, tuple[int, ...]]] = {(k, 1): (0.0, (k,)) for k in firsts}
    for b in nodes:
        for a in counts:
            if a >= b:
                break
            for c in range(1, len(nodes)):
                if (a, c) not in best:
                    continue
                value, chain = best[(a, c)]
                candidate = (value + segment(facts, a, b, c == 1), chain + (b,))
                if (b, c + 1) not in best or _better(candidate, best[(b, c + 1)]):
                    best[(b, c + 1)] = candidate
    ends = [(c, v) for (k, c), v in best.items() if k == n and (target != "stages" or c == stages)]
    return max(ends, key=lambda e: (e[1][0], -e[0], [-k for k in e[1][1]]))[1][1]


def _better(x: tuple[float, tuple[int, ...]], y: tuple[float, tuple[int, ...]]) -> bool:
    return x[0] > y[0] or (x[0] == y[0] and x[1] < y[1])


def build_plan(facts: LoadFacts, bounds: tuple[int, ...], overlap: bool = False) -> StagePlan:
    """The plan that loads the most important layers first and binds a stage at each boundary."""
    if len(bounds) == 1:
        plan = full_plan(facts.num_layers)
        return StagePlan("planned", plan.num_layers, plan.stages, 0, overlap_init=overlap)
    if facts.importance is None:
        raise PlanRefused(f"planned: model {facts.model} has no layer_importance in its profile: the load "
                          "order (most important first) would be a guess")
    order = importance_order(facts.num_layers, list(facts.importance))
    stages = tuple(tuple(sorted(order[a:b])) for a, b in zip((0,) + bounds, bounds, strict=False))
    return StagePlan("planned", facts.num_layers, stages, serve_from=0, overlap_init=overlap)


class Planned(StagingPolicy):
    """Stage boundaries and load order chosen from the profile's measured numbers (module docstring).

    `target`: `area` (default), or given by `floor=Q` (the smallest measured first stage of
    quality >= Q) or `stages=N` (N measured boundaries, the last every layer). `tier`: the
    checkpoint's tier the load times assume (`ssd`, `dram`, `remote`). `context`: tokens a refill
    re-prefills at each later bind. `overlap`: KV allocation and graph capture while the weights
    load, as `progressive[overlap=1]`.
    """

    name = "planned"

    def __init__(self, target: str = "area", floor: float = 0.0, stages: int = 0, tier: str = "ssd",
                 context: int = 1024, overlap: bool = False):
        floor, stages, target = float(floor), int(stages), str(target)
        if target not in TARGETS:
            raise ValueError(f"target must be one of {', '.join(TARGETS)}, got {target!r}")
        if not 0.0 <= floor <= 1.0:
            raise ValueError(f"floor must be a quality in (0, 1], got {floor}")
        if stages < 0:
            raise ValueError(f"stages must be >= 1, got {stages}")
        if floor > 0 and stages > 0:
            raise ValueError("give one target: floor or stages, not both")
        given = "floor" if floor > 0 else "stages" if stages > 0 else None
        if given is not None and target not in ("area", given):  # `area` is the default: a number overrides it
            raise ValueError(f"target={target} contradicts {given}={floor if given == 'floor' else stages}")
        target = given or target
        if target == "floor" and floor == 0:
            raise ValueError("target=floor needs floor=Q, a quality in (0, 1]")
        if target == "stages" and stages == 0:
            raise ValueError("target=stages needs stages=N >= 1")
        if tier not in TIERS:
            raise ValueError(f"tier must be one of {', '.join(TIERS)}, got {tier!r}")
        if int(context) < 1:
            raise ValueError(f"context must be >= 1 token, got {context}")
        self.target, self.floor, self.stages = target, floor, stages
        self.tier, self.context, self.overlap = tier, int(context), bool(overlap)

    def plan(self, model: ModelView) -> StagePlan:
        facts = LoadFacts.of(model, self.tier, self.context)
        return build_plan(facts, choose(facts, self.target, self.floor, self.stages), self.overlap)

    @property
    def label(self) -> str:
        aim = {"area": "target=area", "floor": f"floor={self.floor!r}", "stages": f"stages={self.stages}"}[self.target]
        extra = ",overlap=True" if self.overlap else ""
        return f"planned[{aim},tier={self.tier},context={self.context}{extra}]"
