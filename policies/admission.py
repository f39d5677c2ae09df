"""Built-in admission policies: serve everything, or shed under overload."""

from __future__ import annotations

from typing import TYPE_CHECKING

from contracts.decisions import SERVE, Admit
from policies.base import AdmissionPolicy
from policies.ttft import TtftEstimator
from policies.views import ClusterView

if TYPE_CHECKING:  # a type only: importing traces here would load its readers
    from contracts.request import Request


class Always(AdmissionPolicy):
    """Admit every request; overload shows up as queueing delay."""

    name = "always"


class MaxQueue(AdmissionPolicy):
    """Reject a request when `depth` requests of its model are already waiting."""

    name = "max_queue"

    def __init__(self, depth: int = 64):
        if int(depth) < 1:
            raise ValueError(f"depth must be >= 1 (0 would reject every request), got {depth}")
        self.depth = int(depth)

    def admit(self, request: Request, cluster: ClusterView) -> Admit:
        if cluster.waiting(request.model) >= self.depth:
            return Admit("reject", f"queue full ({self.depth} waiting)")
        return SERVE


def _overloaded(est: TtftEstimator, request: Request, cluster: ClusterView, limit: float) -> tuple[bool, float]:
    """(whether the model is overloaded, the best expected TTFT on its instances).

    Overloaded: the fastest instance's expected TTFT exceeds `limit` and no GPU has room for
    another instance. A model with no instance is never overloaded (shedding its requests
    would keep it cold for good), nor is one that could start another instance: a cold start
    adds capacity, and it is the router's to ask for.
    """
    insts = cluster.instances_of(request.model)
    if not insts:
        return False, 0.0
    _, ttft = est.best(request, insts, cluster)
    if ttft <= limit or est.room_for(cluster.model(request.model), cluster):
        return False, ttft
    return True, ttft


class Deadline(AdmissionPolicy):
    """Reject a request whose predicted TTFT already exceeds `slo` x `factor` (goodput over throughput).

    Deadline-aware shedding as in Clockwork (Gujarati et al., OSDI'20: a request that cannot
    meet its SLO is dropped early rather than served late), here for TopFull's goal (Park et
    al., SIGCOMM'24: maximise requests served within the SLO under overload). The prediction is
    the best expected TTFT over the model's instances (`policies.ttft.TtftEstimator`: time
    until it serves, its queue at the profile's speeds, the prefill). `slo` is a parameter
    because a policy does not see the run's `--slo-ttft`; keep them equal.

    Simplified: a request is shed only when no GPU has room for another instance (while one
    could start, the cold start is not overload) and never while its model has no instance;
    the prediction does not know which instance the router will pick.
    """

    name = "deadline"

    def __init__(self, factor: float = 1.0, slo: float = 5.0):
        if not float(factor) > 0 or not float(slo) > 0:
            raise ValueError(f"factor and slo must be > 0, got factor={factor}, slo={slo}")
        self.factor = float(factor)
        self.slo = float(slo)
        self._est = TtftEstimator()

    def admit(self, request: Request, cluster: ClusterView) -> Admit:
        self._est.observe(request, cluster)
        over, ttft = _overloaded(self._est, request, cluster, self.slo * self.factor)
        if over:
            return Admit("reject", f"predicted TTFT {ttft:.1f} s > {self.slo * self.factor:g} s")
        return SERVE


class Goodput(AdmissionPolicy):
    """An AIMD limit on each model's admitted rate that keeps its queue within the SLO.

    TopFull (Park et al., SIGCOMM'24) sets per-API admitted rates to maximise goodput with a
    learned controller; here the classic controller in its place: additive increase,
    multiplicative decrease, as Breakwater (Cho et al., OSDI'20) applies to credits from a
    queueing-delay signal. Every `interval` seconds (checked at arrivals) a model's limit moves:
    congested, it is multiplied by `decrease` (the first time: from the admitted rate measured
    since the last step); not congested, `increase` req/s is added, and once the limit is above
    twice the arrival rate it is lifted. Requests pass through a token bucket at the limit
    (burst: one interval's worth).

    The congestion signal is a prediction, not an outcome: admission sees no request finish,
    so "congested" means the best expected TTFT on the model's instances (as `deadline`
    predicts it) exceeds `slo` with no room for another instance, and has not fallen since
    the last step (a queue already draining needs no further cut).
    """

    name = "goodput"

    def __init__(self, slo: float = 5.0, increase: float = 1.0, decrease: float = 0.5, interval: float = 1.0):
        if not float(slo) > 0 or not float(increase) > 0 or not float(interval) > 0:
            raise ValueError(f"slo, increase and interval must be > 0, got {slo}, {increase}, {interval}")
        if not 0 < float(decrease) < 1:
            raise ValueError(f"decrease must be in (0, 1), got {decrease}")
        self.slo = float(slo)
        self.increase = float(increase)
        self.decrease = float(decrease)
        self.interval = float(interval)
        self._est = TtftEstimator()
        self._state: dict[str, _Aimd] = {}
        self._now = float("-inf")

    def admit(self, request: Request, cluster: ClusterView) -> Admit:
        now = cluster.now
        if now < self._now:  # a new run with the same object
            self._state.clear()
        self._now = now
        self._est.observe(request, cluster)
        st = self._state.get(request.model)
        if st is None:
            st = self._state[request.model] = _Aimd(now)
        if now >= st.next_step:
            self._step(st, request, cluster, now)
        st.arrived += 1
        if st.rate is not None:
            st.tokens = min(max(1.0, st.rate * self.interval), st.tokens + st.rate * (now - st.last))
            st.last = now
            if st.tokens < 1.0:
                return Admit("reject", f"admitted rate limited to {st.rate:.2f} req/s (AIMD)")
            st.tokens -= 1.0
        st.admitted += 1
        return SERVE

    def _step(self, st: _Aimd, request: Request, cluster: ClusterView, now: float) -> None:
        if st.arrived == 0:  # nothing measured since the last step (the first arrival, or a lull)
            st.window_start, st.next_step = now, now + self.interval
            return
        over, ttft = _overloaded(self._est, request, cluster, self.slo)
        elapsed = max(now - st.window_start, self.interval)
        if over and ttft >= st.last_ttft:
            base = st.rate if st.rate is not None else st.admitted / elapsed
            st.rate = max(base * self.decrease, 1.0 / (10 * self.interval))
            st.tokens = min(st.tokens, 1.0)
            st.last = now
        elif not over and st.rate is not None:
            st.rate += self.increase
            if st.rate > 2.0 * st.arrived / elapsed:
                st.rate = None
        st.last_ttft = ttft
        st.window_start, st.arrived, st.admitted = now, 0, 0
        st.next_step = now + self.interval


class _Aimd:
    """One model's AIMD state: the limit (None: none), its token bucket and the current window."""

    __slots__ = ("rate", "tokens", "last", "next_step", "window_start", "arrived", "admitted", "last_ttft")

    def __init__(self, now: float):
        self.rate: float | None = None
        self.tokens = 1.0
        self.last = now
        self.next_step = now
        self.window_start = now
        self.arrived = 0
        self.admitted = 0
        self.last_ttft = 0.0


class Degrade(Deadline):
    """Under overload, serve from a progressive instance's first stage rather than queue for
    the full model: quality for latency.

    The alpha gates that let a progressive engine serve before its last stage binds also let a
    fully loaded one skip its later stages: a step over fewer layers is as fast as the profile
    measured that stage (`latency_scale`) at that stage's quality. When the model is
    overloaded (as `deadline` predicts it: the best expected TTFT on its instances exceeds
    `slo` x `factor` and no GPU has room for another instance) the request is admitted with
    `degrade`, and the simulator closes those gates on the model's fully loaded instances with
    a multi-stage plan; the first arrival admitted while the model is not overloaded opens
    them again (the tokens produced meanwhile then need a refill, as after a bind). In the
    spirit of quality-scalable serving under load (e.g. early-exit and layer-skipping
    inference); the trade is the progressive engine's.

    Simplified: every instance of the model degrades together; the decision is re-made at
    each arrival of the model, not on a timer; with `full` or `pipelined` staging (one stage)
    nothing changes.
    """

    name = "degrade"  # the parameters and the overload prediction are `deadline`'s

    def admit(self, request: Request, cluster: ClusterView) -> Admit:
        self._est.observe(request, cluster)
        over, ttft = _overloaded(self._est, request, cluster, self.slo * self.factor)
        if over:
            return Admit("degrade", f"predicted TTFT {ttft:.1f} s > {self.slo * self.factor:g} s")
        return SERVE
