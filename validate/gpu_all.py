"""`bash validate/gpu_run.sh all`: everything a lent GPU should measure, in one call within a budget.

A lent machine gives 15 minutes in all (its start included) and 10 per command, so the
whole GPU check is one call of at most `BUDGET_S` seconds. Its steps, in order of value:
the CUDA unit tests, the GPU bench of the three execution modes, the 7B measurement, the
7B replay on the short preset, and the small model's measurement. The 7B checkpoint
(13.5 GB) is built by a background process from the first second, while the steps that do
not need it run; nothing waits for it before it is needed.

Results land under `--out` as they are made: each step's output is appended to `all.log`
while it runs, its results are tarred (or copied) into the folder when it ends, and
`steps.json` is rewritten after every step, so a call cut short keeps what it measured. A
step is skipped, with the reason, when what it needs is missing (pytest, the profile of a
failed step) or when the budget left is under half of what it is expected to take.

`--dry-run` is the CPU rehearsal: the same walk through the same steps, with each GPU
command replaced by a check that runs without a GPU (pytest collects the CUDA tests, the
bench's real command runs and reports no CUDA, the validate commands are parsed by the
real parser and the replay preset's segment is built from the traces), the checkpoint
writer and a cold read measured on a one-layer 7B-shaped checkpoint, and the budget
checked: expected seconds per step from those measured figures (docs/validate.md).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
BUDGET_S = 480.0  # one call of 8 minutes; the command limit is 10, the machine's whole loan 15
SKIP_BELOW = 0.5  # a step starts only if at least this share of its expected time is left
CKPT_SHAPE, CKPT_DTYPE = "llama2-7b", "float16"


@dataclass(frozen=True)
class Figures:
    """What the step estimates are computed from; `measured` says which came from this machine."""

    # the defaults are the first call's on an H200 (2026-11-29: checkpoint.log, the 7B report)
    ckpt_bytes: float = 13.48e9  # LLaMA-2-7B fp16
    write_gbps: float = 0.84  # the tiled checkpoint writer, end to end (13.48 GB in 16.1 s)
    cold_read_gbps: float = 1.41  # a checkpoint read with its pages dropped
    process_start_s: float = 5.25  # python + torch + the engine, once per step
    measured: tuple[str, ...] = ()


@dataclass(frozen=True)
class Step:
    """One command of the call: what it runs, how long it should take, what it leaves behind."""

    name: str
    argv: tuple[str, ...]
    gpu_s: float  # its GPU and fixed work on one H200, excluding cold disk reads (docs/validate.md)
    cold_reads: float = 0.0  # checkpoints' worth of bytes read with the page cache dropped
    needs_checkpoint: bool = False
    needs_module: str | None = None
    requires: tuple[str, ...] = ()  # files an earlier step writes
    results: tuple[str, ...] = ()  # paths under the repo root kept in --out afterwards

    def expect_s(self, f: Figures) -> float:
        return f.process_start_s + self.gpu_s + self.cold_reads * f.ckpt_bytes / (f.cold_read_gbps * 1e9)


@dataclass
class StepRecord:
    name: str
    status: str  # ok, failed, timeout, skipped, rehearsed
    seconds: float
    expect_s: float
    rc: int | None = None
    note: str = ""


def checkpoint_dir(cache: Path) -> Path:
    return cache / f"{CKPT_SHAPE}-random-{CKPT_DTYPE}"


REPLAY_POLICIES = "full/none,progressive/none"  # the GPU's short preset
REPLAY_MODELS = 3  # validate's --replay-models default: each model's first load per policy is cold


def plan_steps(py: str, cache: Path, replay_policies: str = REPLAY_POLICIES) -> list[Step]:
    """The call's steps, in order of value (the small model's run last: skipped first when time
    runs out). `cold_reads` counts 13.5 GB reads with the page cache dropped: the 7B
    measurement's disk probe (3 x 1 GiB: 0.24), the full and pipelined cold starts (1 each), the
    progressive one without and with init overlapped, each to its first token (stage 0: 24 of
    32 layers and the embedding and head, 0.76 each); the replay's first load of each of 3
    models under each policy. `gpu_s` is the first call's seconds less those parts."""
    policies = [p for p in replay_policies.split(",") if p]
    ckpt = str(checkpoint_dir(cache))
    c = str(cache)
    v = (py, "-m", "validate", "--gpu", "--cache-dir", c)
    return [
        Step(
            "cuda-tests",
            (
                py,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:randomly",
                "-p",
                "no:cacheprovider",
                "tests/test_engine_cuda.py",
                "tests/test_engine_device_guard.py",
            ),
            gpu_s=9.0,
            needs_module="pytest",
        ),  # fmt: skip
        Step(
            "bench",
            (py, "bench/bench_engine_gpu.py", "--ckpt", ckpt, "--out", "runs/bench-gpu.json"),
            gpu_s=21.0,
            needs_checkpoint=True,
            results=("runs/bench-gpu.json",),
        ),  # fmt: skip
        Step(
            "measure-7b",
            (*v, "--out", "runs/gpu-7b"),
            # 111 s measured, + 4 engines loaded from the page cache (2.8 GB/s warm) to serve
            # side by side (validate/sharing.py)
            gpu_s=140.0,
            cold_reads=3.76,
            needs_checkpoint=True,
            results=("runs/gpu-7b",),
        ),  # fmt: skip
        Step(
            "replay-7b",
            (
                *v,
                "--replay",
                "--replay-preset",
                "short",
                "--policies",
                ",".join(policies),
                "--profile",
                "runs/gpu-7b/profile.json",
                "--out",
                "runs/gpu-7b-replay",
            ),
            gpu_s=20.0 + 30.0 * len(policies),  # per policy: 27 s of arrivals, the simulator's run
            cold_reads=float(REPLAY_MODELS * len(policies)),
            needs_checkpoint=True,
            requires=("runs/gpu-7b/profile.json",),
            results=("runs/gpu-7b-replay",),
        ),  # fmt: skip
        Step("small", (*v, "--small", "--out", "runs/gpu-small"), gpu_s=88.0, results=("runs/gpu-small",)),
    ]


@dataclass(frozen=True)
class Budget:
    """The critical path: the checkpoint builds beside the steps before the first that needs it."""

    rows: tuple[tuple[str, float], ...]
    checkpoint_s: float
    total_s: float
    budget_s: float

    @property
    def fits(self) -> bool:
        return self.total_s <= self.budget_s

    def to_dict(self) -> dict:
        return {**asdict(self), "fits": self.fits}


def budget(steps: list[Step], f: Figures, budget_s: float = BUDGET_S) -> Budget:
    ckpt_s = f.ckpt_bytes / (f.write_gbps * 1e9)
    t, waited = 0.0, False
    rows = []
    for s in steps:
        if s.needs_checkpoint and not waited:
            t = max(t, ckpt_s)  # wait for the background build
            waited = True
        t += s.expect_s(f)
        rows.append((s.name, s.expect_s(f)))
    return Budget(tuple(rows), ckpt_s, t, budget_s)


# -- running -------------------------------------------------------------------------------------
class Call:
    """One walk through the steps: records, logs and results written to `out` as it goes."""

    def __init__(
        self, out: Path, steps: list[Step], figures: Figures, budget_s: float, *, rehearsal: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        self.out, self.steps, self.figures, self.budget_s = out, steps, figures, budget_s
        self.rehearsal = rehearsal  # files an earlier step would write are not required
        self.clock = clock
        self.t0 = clock()
        self.records: list[StepRecord] = []
        out.mkdir(parents=True, exist_ok=True)
        self.log_path = out / "all.log"

    def left_s(self) -> float:
        return self.budget_s - (self.clock() - self.t0)

    def log(self, text: str) -> None:
        line = f"[gpu_all {self.clock() - self.t0:6.1f}s] {text}"
        print(line, flush=True)
        with self.log_path.open("a") as fh:
            fh.write(line + "\n")

    def write_status(self, extra: dict | None = None) -> None:
        doc = {
            "budget_s": self.budget_s,
            "elapsed_s": self.clock() - self.t0,
            "expected": budget(self.steps, self.figures, self.budget_s).to_dict(),
            "figures": asdict(self.figures),
            "steps": [asdict(r) for r in self.records],
            **(extra or {}),
        }
        tmp = self.out / "steps.json.tmp"
        tmp.write_text(json.dumps(doc, indent=1) + "\n")
        tmp.replace(self.out / "steps.json")

    def keep_results(self, step: Step) -> str:
        """Copy a file, tar a folder, into `out`; returns what was kept."""
        kept = []
        for rel in step.results:
            src = PROJECT_ROOT / rel
            if src.is_dir():
                with tarfile.open(self.out / f"{src.name}.tgz", "w:gz") as tar:
                    tar.add(src, arcname=rel, filter=lambda ti: None if ti.name.endswith(".parquet") else ti)
                kept.append(f"{src.name}.tgz")
            elif src.is_file():
                shutil.copy2(src, self.out / src.name)
                kept.append(src.name)
        return ", ".join(kept)

    def run(
        self, execute: Callable[[Step, float], tuple[str, int | None, str]], wait_checkpoint
    ) -> list[StepRecord]:
        """`execute(step, timeout)` -> (status, rc, note); `wait_checkpoint(timeout)` -> None or why not."""
        for step in self.steps:
            expect = step.expect_s(self.figures)
            t = self.clock()
            why = self._why_skip(step, expect, wait_checkpoint)
            if why:
                self.records.append(StepRecord(step.name, "skipped", self.clock() - t, expect, None, why))
                self.log(f"{step.name}: skipped ({why})")
                self.write_status()
                continue
            self.log(
                f"{step.name}: start (expect {expect:.0f} s, {self.left_s():.0f} s left): {' '.join(step.argv)}"
            )
            status, rc, note = execute(step, max(1.0, self.left_s() - 5.0))
            kept = self.keep_results(step)
            note = "; ".join(x for x in (note, f"kept {kept}" if kept else "") if x)
            rec = StepRecord(step.name, status, self.clock() - t, expect, rc, note)
            self.records.append(rec)
            self.log(f"{step.name}: {status} in {rec.seconds:.1f} s{' (' + note + ')' if note else ''}")
            self.write_status()
        return self.records

    def _why_skip(self, step: Step, expect: float, wait_checkpoint) -> str:
        if step.needs_module and not _importable(step.needs_module):
            return f"{step.needs_module} is not installed (carry its wheel in .whl)"
        if step.needs_checkpoint:
            why = wait_checkpoint(max(0.0, self.left_s() - SKIP_BELOW * expect))
            if why:
                return why
        missing = [r for r in step.requires if not (PROJECT_ROOT / r).exists()]
        if missing and not self.rehearsal:
            return f"{', '.join(missing)} missing (an earlier step failed)"
        if self.left_s() < SKIP_BELOW * expect:
            return f"{self.left_s():.0f} s left, it expects {expect:.0f} s"
        return ""


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _child_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if p)
    env.setdefault("MPLBACKEND", "Agg")
    return env


def run_on_device(out: Path, cache: Path, budget_s: float, steps: list[Step] | None = None) -> int:
    """The real call: background checkpoint build, then every step as a child process."""
    py = sys.executable
    steps = plan_steps(py, cache) if steps is None else steps
    call = Call(out, steps, Figures(), budget_s)
    builder = None
    if not (checkpoint_dir(cache) / ".complete").exists():
        log = (out / "checkpoint.log").open("a")
        builder = subprocess.Popen(
            [py, "-m", "validate.gpu_all", "--build-checkpoint", str(cache)],
            cwd=PROJECT_ROOT, env=_child_env(), stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        call.log(f"building {checkpoint_dir(cache)} in the background (pid {builder.pid})")

    def wait_checkpoint(timeout: float) -> str:
        if builder is None:
            return ""
        try:
            rc = builder.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return f"the 7B checkpoint was not built within {timeout:.0f} s"
        return "" if rc == 0 else f"building the 7B checkpoint failed (status {rc}; checkpoint.log)"

    def execute(step: Step, timeout: float) -> tuple[str, int | None, str]:
        with call.log_path.open("a") as fh:
            proc = subprocess.Popen(
                step.argv, cwd=PROJECT_ROOT, env=_child_env(), stdout=fh, stderr=subprocess.STDOUT
            )
            try:
                rc = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                return "timeout", None, f"stopped after {timeout:.0f} s"
        return ("ok" if rc == 0 else "failed"), rc, ""

    try:
        records = call.run(execute, wait_checkpoint)
    finally:
        if builder is not None and builder.poll() is None:
            builder.kill()
            builder.wait()
    call.write_status()
    return 0 if all(r.status == "ok" for r in records) else 1


# -- the CPU rehearsal ---------------------------------------------------------------------------
def measure_figures(tmp: Path) -> Figures:
    """The writer's and a cold read's GB/s on a one-layer 7B-shaped checkpoint, and a process start."""
    from dataclasses import replace as dc_replace

    from progressive_serve.checkpoint import write_random_checkpoint
    from progressive_serve.config import SHAPES
    from validate.probes import drop_file_cache

    shape = dc_replace(SHAPES[CKPT_SHAPE], num_layers=1)
    t = time.perf_counter()
    d = write_random_checkpoint(tmp / "one-layer", shape, dtype=CKPT_DTYPE, tiled=True)
    write_s = time.perf_counter() - t
    files = sorted(d.glob("*.safetensors"))
    nbytes = sum(f.stat().st_size for f in files)
    buf = bytearray(64 << 20)
    reads = []
    for _ in range(2):  # the better of two: other jobs on a shared machine slow one read down
        drop_file_cache(files)
        t = time.perf_counter()
        for f in files:
            with f.open("rb", buffering=0) as fh:
                while fh.readinto(buf):
                    pass
        reads.append(time.perf_counter() - t)
    read_s = min(reads)
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import progressive_serve.engine"], check=True, env=_child_env(),
                   cwd=PROJECT_ROOT, capture_output=True)  # fmt: skip
    start_s = time.perf_counter() - t
    return Figures(
        write_gbps=nbytes / write_s / 1e9,
        cold_read_gbps=nbytes / read_s / 1e9,
        process_start_s=start_s,
        measured=("write_gbps", "cold_read_gbps", "process_start_s"),
    )


def rehearse_step(step: Step, tmp: Path) -> tuple[str, int | None, str]:
    """Run what of `step` runs without a GPU; raise nothing, report what was checked."""
    args = list(step.argv[1:])
    if args[:2] == ["-m", "pytest"]:
        files = [a for a in args if a.endswith(".py")]
        r = subprocess.run([step.argv[0], "-m", "pytest", "--collect-only", "-q", "-p", "no:randomly", *files],
                           cwd=PROJECT_ROOT, env=_child_env(), capture_output=True, text=True)  # fmt: skip
        last = (r.stdout.strip().splitlines() or [""])[-1]
        return ("rehearsed" if r.returncode == 0 else "failed"), r.returncode, f"collected: {last}"
    if args[:2] == ["-m", "validate"]:
        return _rehearse_validate(args[2:])
    if args and args[0].endswith(".py"):  # a bench script: the real command, which reports no CUDA
        argv = [step.argv[0], args[0], *_swap(args[1:], {"--ckpt": str(tmp / "one-layer"),
                                                          "--out": str(tmp / "bench.json")})]  # fmt: skip
        r = subprocess.run(argv, cwd=PROJECT_ROOT, env=_child_env(), capture_output=True, text=True)
        return ("rehearsed" if r.returncode == 0 else "failed"), r.returncode, r.stdout.strip()[:120]
    return "failed", None, f"no rehearsal for {step.argv!r}"


def _swap(args: list[str], values: dict[str, str]) -> list[str]:
    out = list(args)
    for i, a in enumerate(out[:-1]):
        if a in values:
            out[i + 1] = values[a]
    return out


def _rehearse_validate(args: list[str]) -> tuple[str, int | None, str]:
    """The real parser on the real arguments; for a replay, the preset's segment from the traces."""
    from validate.cli import build_parser, config_from_args
    from validate.errors import ValidateError

    try:
        cfg = config_from_args(build_parser().parse_args(args), args)
    except (ValidateError, SystemExit) as e:
        return "failed", 2, f"arguments refused: {e}"
    note = f"parsed: gpu={cfg.gpu} small={cfg.small} replay={cfg.replay}"
    if cfg.replay:
        from validate.replay.pipeline import segment_spec
        from validate.replay.segment import build_segment

        try:
            seg = build_segment(segment_spec(cfg))
        except ValidateError as e:
            return "rehearsed", 0, f"{note}; segment not built here ({e})"
        note += (
            f"; segment {len(seg)} requests over {float(seg['arrival_s'].max()):.0f} s, policies "
            + ",".join(f"{s}/{k}" for s, k in cfg.policies)
        )
    return "rehearsed", 0, note


def rehearse(out: Path, cache: Path, budget_s: float, steps: list[Step]) -> int:
    """Walk every step on the CPU with the GPU commands stubbed; fail if the budget does not fit."""
    with tempfile.TemporaryDirectory(prefix="gpu-all-rehearsal-") as td:
        tmp = Path(td)
        t = time.perf_counter()
        figures = measure_figures(tmp)
        call = Call(out, steps, figures, budget_s, rehearsal=True)
        call.log(f"rehearsal: measured {figures.write_gbps:.2f} GB/s writing, {figures.cold_read_gbps:.2f} GB/s "
                 f"reading cold, {figures.process_start_s:.1f} s per process start ({time.perf_counter() - t:.1f} s)")  # fmt: skip
        call.run(lambda s, _timeout: rehearse_step(s, tmp), lambda _timeout: "")
    plan = budget(steps, figures, budget_s)
    for name, s in plan.rows:
        call.log(f"expected {name}: {s:.0f} s")
    call.log(f"expected: checkpoint {plan.checkpoint_s:.0f} s beside the first steps; critical path "
             f"{plan.total_s:.0f} s of {budget_s:.0f} s ({'fits' if plan.fits else 'DOES NOT FIT'})")  # fmt: skip
    call.write_status({"rehearsal": True})
    ok = plan.fits and all(r.status == "rehearsed" for r in call.records)
    return 0 if ok else 1


def build_checkpoint(cache: Path) -> int:
    from validate.models import random_checkpoint_dir

    t = time.perf_counter()
    d = random_checkpoint_dir(cache, CKPT_SHAPE, CKPT_DTYPE)
    print(f"built {d} in {time.perf_counter() - t:.1f} s", flush=True)
    return 0


def without(steps: list[Step], skip: tuple[str, ...]) -> list[Step]:
    """The plan less the steps named in `skip` (`--skip`): steps measured by an earlier call."""
    names = [s.name for s in steps]
    unknown = [n for n in skip if n not in names]
    if unknown:
        raise SystemExit(f"gpu_all: --skip {','.join(unknown)}: no such step (steps: {', '.join(names)})")
    return [s for s in steps if s.name not in skip]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m validate.gpu_all", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "runs/out")))
    p.add_argument("--cache-dir", type=Path, default=Path("runs/cache"))
    p.add_argument("--budget", type=float, default=BUDGET_S, help="seconds for the whole call (default 480)")
    p.add_argument("--dry-run", action="store_true", help="the CPU rehearsal: GPU commands stubbed")
    p.add_argument("--skip", default="", metavar="NAMES",
                   help="steps to leave out, comma-separated (cuda-tests, bench, measure-7b, replay-7b, small)")  # fmt: skip
    p.add_argument("--replay-policies", default=REPLAY_POLICIES, metavar="LIST",
                   help=f"the 7B replay's STAGING/KEEPALIVE pairs (default {REPLAY_POLICIES})")  # fmt: skip
    p.add_argument("--build-checkpoint", type=Path, metavar="CACHE", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    a.cache_dir = a.cache_dir.resolve()  # the children run in the project root
    if a.build_checkpoint is not None:
        return build_checkpoint(a.build_checkpoint)
    skip = tuple(n for n in a.skip.split(",") if n)
    if not any(pair.strip() for pair in a.replay_policies.split(",")):
        p.error("--replay-policies needs at least one STAGING/KEEPALIVE pair")
    steps = without(plan_steps(sys.executable, a.cache_dir, a.replay_policies), skip)
    if a.dry_run:
        return rehearse(a.out, a.cache_dir, a.budget, steps)
    import torch

    if not torch.cuda.is_available():
        print("gpu_all: no CUDA device here; `--dry-run` rehearses the call on the CPU.", file=sys.stderr)
        return 2
    return run_on_device(a.out, a.cache_dir, a.budget, steps)


if __name__ == "__main__":
    raise SystemExit(main())
