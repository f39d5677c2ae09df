"""ServeGen as a trace: a multi-model, multi-tenant workload drawn from per-client processes.

ServeGen publishes no per-request log but, for each model (one folder) and each client
(a tenant of that model), the fitted arrival process of every 600 s window and the token
lengths of every 6 h window (`traces.servegen_files`). A replay draws requests from them:

- **count**: a window's `rate x 600` is the number of requests the client sent in it (the
  files' rates are whole counts over 600); `rate_scale` scales it, with stochastic rounding
  so the expected total is kept;
- **times**: the count is spread over the window by gaps of the fitted family (Gamma or
  Weibull with the row's shape), the first gap drawn from the residual-life (equilibrium)
  distribution so the window's start is not an arrival, then scaled to fill the window,
  as ServeGen's own generator does;
- **lengths**: prompt and output tokens from the client's distributions for that 6 h
  window; a client with none there (no length file, or an empty window) borrows those of a
  client of the same model, picked in proportion to its rate in the window.

Windows are generated one at a time and in time order, so memory does not grow with the
replayed span. Every client has its own `numpy.random.Generator`s (arrivals, lengths),
seeded from `(seed, model, client)`, so a client's requests do not change when other
models or clients are left out.
"""

from __future__ import annotations

import zlib
from collections import Counter, OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from traces.base import Trace
from traces.errors import TraceError
from traces.locate import search_dirs
from traces.request import Request
from traces.servegen_files import (
    LENGTH_WINDOW_S,
    WINDOW_S,
    ClientFiles,
    Lengths,
    WindowRow,
    client_files,
    read_lengths,
    read_series,
)
from traces.textio import iter_lines

MAX_WINDOW_REQUESTS = 20_000_000  # one 600 s window, all clients; the real peak is 2.3 M at rate_scale 1
_CACHE_ENTRIES = 4096  # parsed (client, 6 h window) distributions kept across passes


@dataclass(frozen=True)
class ServeGenOptions:
    """Options for the ServeGen trace."""

    models: tuple[str, ...] = field(default=(), metadata={
        "help": "model folders to serve, e.g. m-large,deepseek-r1 (default: every one found)"})
    clients: str = field(default="all", metadata={
        "help": "all | with_lengths: every client, or only those with a length file (as ServeGen's loader)"})
    rate_scale: float = field(default=0.001, metadata={
        "help": "multiply every client's rate (default 1/1000: about 3 requests/s over the five models)"})
    start_s: float = field(default=0.0, metadata={"help": "seconds into the trace to start from (e.g. 86400)"})
    model: str = field(default="llama-2-7b", metadata={
        "help": "base model name: folder m-large becomes deployment '<model>-m-large'"})
    model_map: tuple[str, ...] = field(default=(), metadata={
        "help": "explicit names, e.g. m-large=qwen3-32b,deepseek-r1=deepseek-r1"})
    failures: str = field(default="drop", metadata={"help": "drop | keep requests drawn with 0 output tokens"})

    def check(self) -> None:
        if self.clients not in ("all", "with_lengths"):
            raise TraceError(f"option clients: {self.clients!r} is not all or with_lengths")
        if not 0 < self.rate_scale < float("inf"):
            raise TraceError(f"option rate_scale: must be a positive number, got {self.rate_scale}")
        if not 0 <= self.start_s < float("inf"):
            raise TraceError(f"option start_s: must be a non-negative number of seconds, got {self.start_s}")
        if self.failures not in ("drop", "keep"):
            raise TraceError(f"option failures: {self.failures!r} is not drop or keep")
        for item in self.model_map:
            if "=" not in item:
                raise TraceError(f"option model_map: {item!r} is not FOLDER=MODEL")

    def name_for(self, folder: str) -> str:
        mapping = dict(item.split("=", 1) for item in self.model_map)
        return mapping.get(folder, f"{self.model}-{folder}")


def is_model_folder(folder: Path) -> bool:
    return folder.is_dir() and any(folder.glob("chunk-*-trace.csv*"))


def model_folders(root: Path) -> list[Path]:
    """`root` itself when it is a model folder, else the model folders up to five levels below it
    (the downloaded repository keeps them in `ServeGen-<commit>/data/<category>/<model>/`)."""
    if is_model_folder(root):
        return [root]
    for depth in range(1, 6):
        hits = sorted({p.parent for p in root.glob("*/" * depth + "chunk-*-trace.csv*")})
        if hits:
            return hits
    return []


def find_servegen(trace_dir: str | None) -> tuple[list[Path], Path | None, list[Path]]:
    """Model folders from the first search folder that has any; that folder; the folders searched."""
    dirs = search_dirs(trace_dir)
    for d in dirs:
        hits = model_folders(d) if d.is_dir() else []
        if hits:
            return hits, d, dirs
    return [], None, dirs


def gap_positions(n: int, family: str, shape: float, rng: np.random.Generator) -> np.ndarray:
    """`n` arrival offsets in [0, 1): gaps of `family(shape)`, the first from its residual life.

    Drawn as logarithms, so the tiny shapes of the real files (Gamma 0.035, Weibull 0.1),
    whose gaps underflow or overflow as plain floats, still give the right shape:
    Gamma(k) = Gamma(k+1) * U^(1/k); Weibull(k) = E^(1/k); a residual life is U times a
    length-biased gap, which is Gamma(k+1) for Gamma(k) and Gamma(1+1/k)^(1/k) for Weibull(k).
    """
    tiny = np.finfo(float).tiny
    if family == "Gamma":
        logs = np.log(np.maximum(rng.gamma(shape + 1.0, size=n + 1), tiny)) + \
            np.log(np.maximum(rng.random(n + 1), tiny)) / shape
        biased = np.log(max(rng.gamma(shape + 1.0), tiny))
    else:
        logs = np.log(np.maximum(rng.standard_exponential(n + 1), tiny)) / shape
        biased = np.log(max(rng.gamma(1.0 + 1.0 / shape), tiny)) / shape
    logs[0] = biased + np.log(max(rng.random(), tiny))
    weights = np.exp(logs - logs.max())
    ends = np.cumsum(weights)
    # a last gap below float resolution would put an arrival on the next window's start
    return np.minimum(ends[:n] / ends[-1], np.nextafter(1.0, 0.0))


def stochastic_round(x: float, rng: np.random.Generator) -> int:
    base = int(x)
    return base + (rng.random() < x - base)


@dataclass
class _Client:
    files: ClientFiles
    index: int
    arrivals: np.random.Generator
    lengths: np.random.Generator


class ServeGenSource:
    """The clients of the chosen models, their random streams' seeds and a cache of lengths."""

    def __init__(self, folders: list[Path], opts: ServeGenOptions, seed: int):
        self.opts, self.seed = opts, seed
        self.models = [f.name for f in folders]
        self.clients: list[ClientFiles] = []
        for folder in folders:
            found = client_files(folder)
            if opts.clients == "with_lengths":
                found = [c for c in found if c.lengths is not None]
            self.clients += found
        if not self.clients:
            raise TraceError(f"servegen: no client files (chunk-<id>-trace.csv) in {', '.join(map(str, folders))}"
                             + (" with a length file (clients=with_lengths)" if opts.clients == "with_lengths" else ""))
        self.span_s = {m: 0.0 for m in self.models}
        for c in self.clients:  # each model's length: the rows of its first client's file
            if not self.span_s[c.model]:
                self.span_s[c.model] = WINDOW_S * sum(1 for _ in iter_lines(c.series))
        self._cache: OrderedDict[tuple[int, str], Lengths | None] = OrderedDict()
        self._donors: OrderedDict[tuple[str, str], list[int]] = OrderedDict()

    def streams(self) -> list[_Client]:
        out = []
        for i, c in enumerate(self.clients):
            ss = np.random.SeedSequence(self.seed, spawn_key=(zlib.crc32(c.model.encode()), c.client))
            a, b = ss.spawn(2)
            out.append(_Client(c, i, np.random.default_rng(a), np.random.default_rng(b)))
        return out

    def lengths(self, index: int, window: str) -> Lengths | None:
        key = (index, window)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        path = self.clients[index].lengths
        value = read_lengths(path, window) if path is not None else None
        self._cache[key] = value
        if len(self._cache) > _CACHE_ENTRIES:
            self._cache.popitem(last=False)
        return value

    def donors(self, model: str, window: str) -> list[int]:
        """Clients of `model` with lengths in `window` (every length file of the model is read)."""
        key = (model, window)
        if key not in self._donors:
            self._donors[key] = [i for i, c in enumerate(self.clients)
                                 if c.model == model and c.lengths is not None and self.lengths(i, window)]
            if len(self._donors) > 64:
                self._donors.popitem(last=False)
        return self._donors[key]


def _draw_window(src: ServeGenSource, active: list[tuple[_Client, WindowRow]], start: float,
                 counts: Counter) -> list[tuple[np.ndarray, ...]]:
    """Arrays `(times, client index, prompt, output)` per active client in the window at `start`."""
    window = str(int(start // LENGTH_WINDOW_S * LENGTH_WINDOW_S))
    rates = {c.index: row.rate for c, row in active}
    out = []
    for c, row in active:
        n = stochastic_round(row.rate * WINDOW_S * src.opts.rate_scale, c.arrivals)
        if n == 0:
            continue
        times = np.minimum(start + WINDOW_S * gap_positions(n, row.family, row.shape, c.arrivals),
                           np.nextafter(start + WINDOW_S, start))  # rounding must not reach the next window
        own = src.lengths(c.index, window)
        if own is not None:
            prompt, output = own.draw(c.lengths, n)
        else:
            donors = src.donors(c.files.model, window)
            if not donors:
                counts[f"requests_dropped.no_lengths.{c.files.model}"] += n
                continue
            weights = np.array([rates.get(d, 0.0) for d in donors])
            weights = weights / weights.sum() if weights.sum() > 0 else np.full(len(donors), 1 / len(donors))
            pick = c.lengths.choice(len(donors), size=n, p=weights)
            prompt, output = np.empty(n, np.int64), np.empty(n, np.int64)
            for j in np.unique(pick):
                sel = pick == j
                prompt[sel], output[sel] = src.lengths(donors[j], window).draw(  # type: ignore[union-attr]
                    c.lengths, int(sel.sum()))
            counts["lengths_borrowed"] += n
        out.append((times, np.full(n, c.index), prompt, output))
    return out


def _requests(src: ServeGenSource, end_s: float, details: dict) -> Iterator[tuple]:
    """`(arrival_s, client index, prompt, output)` in time order over all chosen clients."""
    opts = src.opts
    clients = src.streams()
    series = {c.index: read_series(c.files.series) for c in clients}
    counts: Counter = Counter()
    k = 0
    while series:
        start = k * WINDOW_S
        k += 1
        if start >= end_s:
            break
        active = []
        for c in clients:
            it = series.get(c.index)
            got = next(it, None) if it is not None else None
            if got is None:
                series.pop(c.index, None)
            elif got[1].rate > 0 and start + WINDOW_S > opts.start_s:
                active.append((c, got[1]))
        parts = _draw_window(src, active, start, counts)
        if not parts:
            continue
        times, who, prompt, output = (np.concatenate(x) for x in zip(*parts, strict=True))
        if len(times) > MAX_WINDOW_REQUESTS:
            raise TraceError(f"servegen: {len(times):,} requests in the window at {start:g} s, more than the "
                             f"{MAX_WINDOW_REQUESTS:,} one window may hold; lower rate_scale (now {opts.rate_scale:g})")
        order = np.argsort(times, kind="stable")
        for i in order:
            t = float(times[i])
            if t >= end_s:
                break
            if t < opts.start_s:
                continue
            if opts.failures == "drop" and output[i] == 0:
                counts["failures_dropped"] += 1
                continue
            counts[f"requests.{src.clients[who[i]].model}"] += 1
            yield t - opts.start_s, int(who[i]), int(prompt[i]), int(output[i])
    details.update(sorted(counts.items()))


def servegen_trace(folders: list[Path], opts: ServeGenOptions, *, where: str, duration_s: float | None,
                   seed: int) -> Trace:
    """A `Trace` over ServeGen model folders (see the module docstring)."""
    names = {f.name for f in folders}
    if opts.models:
        unknown = sorted(set(opts.models) - names)
        if unknown:
            raise TraceError(f"option models: {', '.join(unknown)} not found in {where}; "
                             f"found: {', '.join(sorted(names))}")
        folders = [f for f in folders if f.name in opts.models]
    if len(names) != len(folders) and not opts.models:
        raise TraceError(f"servegen: two model folders named alike under {where}; choose with models=")
    src = ServeGenSource(folders, opts, seed)
    span = max(src.span_s.values()) - opts.start_s
    if max(src.span_s.values()) <= 0:
        raise TraceError(f"servegen: no rate windows in {where} (its chunk-<id>-trace.csv files are empty)")
    if span <= 0:
        raise TraceError(f"option start_s: {opts.start_s:g} s is at or after the end of the trace "
                         f"({max(src.span_s.values()):g} s)")
    length = span if duration_s is None else min(duration_s, span)
    end_s = opts.start_s + length
    per_model = Counter(c.model for c in src.clients)
    with_lengths = Counter(c.model for c in src.clients if c.lengths is not None)
    details: dict = {
        "trace": "servegen", "source": "drawn from ServeGen's real per-client arrival processes and lengths",
        "files": where, "seed": seed, "rate_scale": opts.rate_scale, "start_s": opts.start_s,
        "duration_s": length, "clients": len(src.clients), "clients.how": opts.clients,
        "models": ", ".join(f"{m} -> {opts.name_for(m)} ({per_model[m]} clients, {with_lengths[m]} with lengths, "
                            f"{src.span_s[m] / 86400:g} d)" for m in src.models),
        "arrivals": "per 600 s window: rate x 600 x rate_scale requests (stochastic rounding), spread by the "
                    "window's Gamma/Weibull gaps from an equilibrium start",
        "lengths": "per 6 h window: the client's own distributions, else a same-model client's (by rate)",
        "failures": opts.failures,
    }
    details.update(suggest_cluster(len(src.models)))
    tenants = [c.tenant for c in src.clients]
    models = [opts.name_for(c.model) for c in src.clients]

    def make_iter() -> Iterator[Request]:
        for i, (t, who, prompt, output) in enumerate(_requests(src, end_s, details)):
            yield Request(t, models[who], prompt, output, i, tenant=tenants[who])

    name = f"servegen (real per-client processes: {where}; {len(src.models)} models, {len(src.clients)} clients)"
    return Trace(name, make_iter, False, details)


def suggest_cluster(models: int) -> dict:
    """The cluster a run of this scenario gets unless `--nodes`/`--gpus-per-node` say otherwise.

    Whole 8-GPU servers, as the production fleets ServeGen comes from are built, with one GPU
    per served model: at the default 1/1000 load each model keeps one instance under a
    keep-alive policy (docs/traces.md gives the measured run), so the rest is room for the
    busiest model to scale out and for cold starts to overlap.
    """
    nodes = max(1, -(-models // 8))
    return {"cluster.nodes": nodes, "cluster.gpus_per_node": 8,
            "cluster.why": f"{nodes} x 8-GPU server(s): one GPU per served model ({models}) plus room to scale "
                           f"out (for the default rate_scale; pass --nodes for more load)"}
