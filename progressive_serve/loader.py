"""The staged loader: follow a `StagePlan`, copy each layer's weights in place, then open its gate.

Per loading unit (the embedding/norm/head unit with stage 0, then one decoder layer at a
time) it records how long the read from the file, the copy into the preallocated parameter
and the bind (gate open) took. On CUDA the read goes into one of two pinned host buffers
and the copy is issued on a side stream, so reading unit k+1 overlaps copying unit k and
both overlap serving on the main stream; a gate opens on the main stream only after that
layer's copy event, so a step never sees half a layer. On CPU the read goes straight into
the parameter's memory when the dtypes agree (no second copy).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from progressive_serve.model import AlphaGatedLlama, layer_of
from progressive_serve.safetensors_index import TensorEntry, index_checkpoint, plan_reads, read_into

if TYPE_CHECKING:  # plans are plain data; importing `policies` would pull in its siblings
    from contracts.plan import StagePlan


@dataclass
class LayerLoadRecord:
    """Timing of one loading unit. `layer` is None for the embedding/final-norm/head unit."""

    stage: int
    layer: int | None
    nbytes: int
    read_s: float
    copy_s: float
    bind_s: float
    start_s: float
    end_s: float

    def to_dict(self) -> dict:
        return asdict(self)


class StagedLoader:
    """Loads `ckpt_dir` into `model` stage by stage; never allocates a parameter."""

    def __init__(
        self,
        ckpt_dir: str | Path,
        model: AlphaGatedLlama,
        plan: StagePlan,
        device: torch.device | str | None = None,
        *,
        gate_lock: threading.Lock | None = None,
        direct_read: bool = True,
        prepare_unit: Callable[[int | None], None] | None = None,
    ) -> None:
        if plan.num_layers != model.shape.num_layers:
            raise ValueError(
                f"plan {plan.name!r} has {plan.num_layers} layers, the model {model.shape.num_layers}"
            )
        self.ckpt_dir = Path(ckpt_dir)
        self.model = model
        self.plan = plan
        self.device = torch.device(device) if device is not None else model.device
        self.gate_lock = gate_lock or threading.Lock()
        self.prepare_unit = prepare_unit  # e.g. map a layer's physical memory (cuda_vmm) before its copy
        self.direct_read = direct_read and self.device.type == "cpu"
        self.records: list[LayerLoadRecord] = []
        self.stage_done_s: list[float] = []
        self.bound_stage = -1  # updated under gate_lock together with the gates
        self._cancel = threading.Event()
        self._groups = model.parameter_groups()
        self._entries = self._match_entries(index_checkpoint(self.ckpt_dir))
        self._cuda = self.device.type == "cuda"
        self._stream = torch.cuda.Stream(device=self.device) if self._cuda else None
        self._buffers: list[torch.Tensor] = []
        self._buffer_events: list[torch.cuda.Event | None] = [None, None]
        self._copy_timers: list = []  # (record, [(start, end) events]) of the stage being loaded
        self._t0 = time.perf_counter()

    def _match_entries(self, entries: dict[str, TensorEntry]) -> dict[int | None, list[TensorEntry]]:
        params = {n for g in self._groups.values() for n in g}
        tied = self.model.shape.tie_word_embeddings
        unknown = [n for n in entries if n not in params and not (tied and n == "lm_head.weight")]
        if unknown:
            raise ValueError(f"{self.ckpt_dir}: tensors the model does not have: {unknown[:5]}")
        missing = sorted(params - set(entries))
        if missing:
            raise ValueError(f"{self.ckpt_dir}: parameters missing from the checkpoint: {missing[:5]}")
        units: dict[int | None, list[TensorEntry]] = {k: [] for k in self._groups}
        for name, e in entries.items():
            if name in params:
                units[layer_of(name)].append(e)
        return units

    def unit_bytes(self, unit: int | None) -> int:
        return sum(e.nbytes for e in self._entries[unit])

    # -- host buffers (CUDA path) ---------------------------------------------------------------
    def _host_buffer(self, k: int, nbytes: int) -> torch.Tensor:
        while len(self._buffers) <= k:
            self._buffers.append(torch.empty(0, dtype=torch.uint8))
        if self._buffers[k].numel() < nbytes:
            self._buffers[k] = torch.empty(nbytes, dtype=torch.uint8, pin_memory=self._cuda)
        event = self._buffer_events[k]
        if event is not None:  # the copy out of this buffer must finish before it is overwritten
            event.synchronize()
        return self._buffers[k]

    # -- one unit ---------------------------------------------------------------------------------
    def load_unit(self, unit: int | None, stage: int, slot: int = 0) -> LayerLoadRecord:
        """Read and copy one unit's tensors into their parameters (gates untouched)."""
        start = time.perf_counter()
        if self.prepare_unit is not None:
            self.prepare_unit(unit)
        params = self._groups[unit]
        entries = self._entries[unit]
        read_s = copy_s = 0.0
        if self.direct_read:
            for e in entries:
                p = params[e.name]
                t = time.perf_counter()
                if p.dtype == e.dtype and p.is_contiguous() and tuple(p.shape) == e.shape:
                    run = plan_reads([e])[0]
                    read_into(run, p.data.view(-1).view(torch.uint8))
                    read_s += time.perf_counter() - t
                else:
                    buf = self._host_buffer(slot, e.nbytes)
                    views = read_into(plan_reads([e])[0], buf)
                    t2 = time.perf_counter()
                    read_s += t2 - t
                    p.data.copy_(views[e.name])
                    copy_s += time.perf_counter() - t2
        else:
            runs = plan_reads(entries)
            buf = self._host_buffer(slot, max(r.end - r.start for r in runs))
            timers = []
            for i, run in enumerate(runs):
                t = time.perf_counter()
                views = read_into(run, buf)
                t2 = time.perf_counter()
                read_s += t2 - t
                timers.append(self._copy(views, params, slot))
                copy_s += time.perf_counter() - t2
                if self._cuda and i < len(runs) - 1:
                    self._buffer_events[slot].synchronize()  # buffer reused by the next run
        end = time.perf_counter()
        rec = LayerLoadRecord(
            stage, unit, self.unit_bytes(unit), read_s, copy_s, 0.0, start - self._t0, end - self._t0
        )
        if self._cuda:
            # an asynchronous copy returns at once: its time is read from the stream's events
            # once the stage has synchronised (load_stage)
            self._copy_timers.append((rec, timers))
        self.records.append(rec)
        return rec

    def _copy(self, views: dict[str, torch.Tensor], params: dict, slot: int):
        """Copy one read's tensors into their parameters; on CUDA, asynchronously on the side
        stream, returning the (start, end) timing events of the copies."""
        if not self._cuda:
            for name, v in views.items():
                params[name].data.copy_(v)
            return None
        with torch.cuda.stream(self._stream):
            begin = torch.cuda.Event(enable_timing=True)
            begin.record(self._stream)
            for name, v in views.items():
                params[name].data.copy_(v, non_blocking=True)
            event = torch.cuda.Event(enable_timing=True)
            event.record(self._stream)
        self._buffer_events[slot] = event
        return begin, event

    def _settle_copy_times(self) -> None:
        """Device time of each unit's copies (after the stage's copies have completed)."""
        for rec, timers in self._copy_timers:
            rec.copy_s = sum(b.elapsed_time(e) for b, e in timers) / 1e3
        self._copy_timers.clear()

    # -- stages -----------------------------------------------------------------------------------
    def load_stage(self, stage: int) -> list[LayerLoadRecord]:
        """Load every unit of `stage`, then open the stage's gates together (under `gate_lock`)."""
        units: list[int | None] = ([None] if stage == 0 else []) + list(self.plan.stages[stage])
        recs = []
        for k, u in enumerate(units):
            if self._cancel.is_set():  # unloading: leave this stage's gates closed
                return recs
            recs.append(self.load_unit(u, stage, slot=k % 2))
        with self.gate_lock:
            if self._cuda:  # the main stream waits for the copies; the host never blocks on them
                torch.cuda.current_stream(self.device).wait_stream(self._stream)
            for rec in recs:
                if rec.layer is None:
                    continue
                t = time.perf_counter()
                self.model.set_gate(rec.layer, 1.0)
                rec.bind_s = time.perf_counter() - t
            self.bound_stage = stage
        if self._cuda:
            torch.cuda.current_stream(self.device).synchronize()
            self._settle_copy_times()
        self.stage_done_s.append(time.perf_counter() - self._t0)
        return recs

    def run(self, on_stage: Callable[[int], None] | None = None) -> list[LayerLoadRecord]:
        """Load every stage in order; `on_stage(j)` is called after stage j's gates are open."""
        self._t0 = time.perf_counter()
        for j in range(self.plan.num_stages):
            if self._cancel.is_set():
                break
            self.load_stage(j)
            if on_stage is not None:
                on_stage(j)
        return self.records

    def cancel(self) -> None:
        """Stop at the next unit; the stage being loaded keeps its gates closed (never half bound)."""
        self._cancel.set()

    def release(self) -> None:
        """Drop the host buffers and every reference to the model's parameters (views into a
        VMM arena must be gone before the arena is freed)."""
        self._buffers.clear()
        self._buffer_events = [None, None]
        self._copy_timers.clear()
        self.model = None
        self._groups = {}
