"""The `--out` folder of a run: its manifest, per-combination parts, and how a run that was
interrupted (SIGINT, SIGTERM) or killed (SIGKILL) is finished with `--resume`.

Layout while a run is going (every file written under a temporary name and renamed when
complete, see `sim.atomic`):

    run.json            the manifest: command, seed, versions, input fingerprints, and per
                        policy combination its status (pending, done, partial, failed), its
                        summary row and where its files are; rewritten after each combination
    parts/NNN.parquet   the per-request records of finished combination NNN
    parts/NNN.json      its summary row, per-model rows and plot data

When every combination is done the summaries, plots and `requests.parquet` (all the parts,
in order) are written, run.json says `complete`, and parts/ is removed. A run stopped by
SIGINT/SIGTERM writes the summary of the combinations that finished and
`requests.partial.parquet` (their records and those of the interrupted combination so far,
marked partial in the file's metadata), and run.json says `interrupted`. `--resume` skips
the combinations run.json marks done, if the inputs are the same, and recomputes the rest;
each combination is independent of the others, so the result is the uninterrupted run's.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import math
import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from sim.atomic import discard, is_temp_name, lock_folder, write_text
from sim.interrupt import SignalGuard
from sim.records import RecordWriter, concat_records
from sim.report import PlotSeries, write_csv, write_results

MANIFEST = "run.json"
PARTS = "parts"
RECORDS = "requests.parquet"
PARTIAL_RECORDS = "requests.partial.parquet"
SUMMARY_FILES = ("summary.csv", "summary.md", "models.csv", "ttft_cdf.png", "gpu_memory.png", "pareto.png",
                 "per_model.png", "quality_over_time.png", "report.html")
# Everything a run writes into --out: a folder holding any of these holds a run's results.
OUTPUT_NAMES = (MANIFEST, *SUMMARY_FILES, RECORDS, PARTIAL_RECORDS, PARTS)
MANIFEST_KIND = "progressive-serve simulation run"
MANIFEST_VERSION = 1
PARTIAL_METADATA = {"progressive_serve.status": "partial"}

_HEAD_TAIL = 1 << 20  # bytes hashed at each end of a trace file


class OutError(Exception):
    """`--out` cannot be used as asked (exit 2, before anything is simulated)."""


# --- fingerprints ----------------------------------------------------------------------------------

def file_fingerprint(path: str | Path) -> dict[str, Any]:
    """Size and a SHA-256 of the first and last MiB: cheap for multi-GB traces, and it changes
    when a file is replaced, truncated or appended to."""
    path = Path(path)
    size = path.stat().st_size
    h = hashlib.sha256()
    with path.open("rb") as fh:
        h.update(fh.read(_HEAD_TAIL))
        if size > 2 * _HEAD_TAIL:
            fh.seek(size - _HEAD_TAIL)
            h.update(fh.read(_HEAD_TAIL))
        elif size > _HEAD_TAIL:
            h.update(fh.read())
    return {"name": path.name, "size": size, "sha256_head_tail": h.hexdigest()}


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def code_fingerprint() -> str:
    """SHA-256 over the simulator's own code (sim, policies, traces, the trace calibration).
    run.json records it per combination; --resume keeps combinations computed by other code
    (a docstring edit changes it too) but says so."""
    root = Path(__file__).resolve().parent.parent
    files = []
    for package in ("sim", "policies", "traces"):
        files += sorted((root / package).rglob("*.py"))
    files += sorted((root / "traces" / "calibration").glob("*.json"))
    h = hashlib.sha256()
    for f in files:
        h.update(f.relative_to(root).as_posix().encode() + b"\0")
        h.update(f.read_bytes() + b"\0")
    return h.hexdigest()


def versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for dist in ("progressive-serve", "simpy", "numpy", "scipy", "pyarrow", "matplotlib"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def _normal(value: Any) -> Any:
    """JSON's view of a value (tuples as lists, NaN and infinities as null), for comparing
    with what a manifest holds and for writing strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _normal(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_normal(v) for v in value]
    return value


def first_difference(old: Any, new: Any, where: str = "") -> str | None:
    """`key: OLD there, NEW now` for the first place two JSON values differ, else None."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in list(old) + [k for k in new if k not in old]:
            if key not in old or key not in new or old[key] != new[key]:
                return first_difference(old.get(key), new.get(key), f"{where}.{key}" if where else key)
        return None
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            if a != b:
                return first_difference(a, b, f"{where}[{i}]")
        return None
    if old == new:
        return None

    def show(v: Any) -> str:
        text = json.dumps(v) if v is not None else "absent"
        return text if len(text) <= 60 else text[:57] + "..."

    return f"{where or 'inputs'}: {show(old)} there, {show(new)} now"


# --- one combination's results ---------------------------------------------------------------------

@dataclass
class ComboResult:
    """What the summary needs of one finished combination, and how many records it wrote."""

    row: dict[str, Any]
    models: list[dict[str, Any]]
    plot: PlotSeries
    records: int | None

    def to_json(self) -> str:
        # Python's JSON (NaN allowed) round-trips every float exactly: a resumed run writes
        # the same bytes as an uninterrupted one.
        return json.dumps({"row": self.row, "models": self.models, "plot": self.plot.to_dict(),
                           "records": self.records}) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ComboResult:
        d = json.loads(text)
        return cls(dict(d["row"]), [dict(m) for m in d["models"]], PlotSeries.from_dict(d["plot"]),
                   d["records"])


# --- the folder ------------------------------------------------------------------------------------

def _check_location(out: Path) -> None:
    """Refuse an --out that is a file, lies under a file, or cannot be written, before any
    simulation: create it if needed and write and remove a probe file."""
    if out.exists() and not out.is_dir():
        raise OutError(f"--out {out}: exists and is not a folder")
    above = out
    while not above.exists() and above.parent != above:
        above = above.parent
    if not above.is_dir():
        raise OutError(f"--out {out}: {above} is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutError(f"--out {out}: cannot create the folder ({e.strerror or e})") from None
    probe = out / f".write-test-{os.getpid()}.tmp"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, b"probe")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as e:
        raise OutError(f"--out {out}: the folder is not writable ({e.strerror or e})") from None


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _remove_temps(folder: Path) -> None:
    if folder.is_dir():
        for p in folder.iterdir():
            if is_temp_name(p.name) and p.is_file():
                discard(p)


class RunStore:
    """The --out folder of one run; see the module docstring."""

    def __init__(self, out: Path, manifest: dict[str, Any], records: bool, guard: SignalGuard) -> None:
        self.out = out
        self.manifest = manifest
        self.records = records
        self.guard = guard
        self.done: dict[int, ComboResult] = {}  # finished combinations found by --resume
        self.complete = False  # --resume found a complete run: nothing to do
        self.other_code = 0  # kept combinations that ran on other code than this
        self._lock: int | None = None

    def release(self) -> None:
        """Let go of the folder's lock (the process ending does it too)."""
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    # -- opening ------------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        out: Path,
        *,
        inputs: Mapping[str, Any],
        labels: Sequence[str],
        command: Sequence[str],
        sources: Mapping[str, Any],
        code: str,
        records: bool,
        resume: bool,
        overwrite: bool,
        guard: SignalGuard,
    ) -> RunStore:
        """Check --out and prepare it: a fresh manifest, or the one being resumed. Raises
        OutError (with one line to show) when the folder cannot or may not be used."""
        out = Path(out).expanduser()
        _check_location(out)
        lock = lock_folder(out, OutError(f"--out {out} is in use by another run of python -m sim that is still going"))
        try:
            store = cls._open(out, lock, inputs=inputs, labels=labels, command=command, sources=sources,
                              code=code, records=records, resume=resume, overwrite=overwrite, guard=guard)
        except BaseException:
            if lock is not None:
                os.close(lock)
            raise
        return store

    @classmethod
    def _open(cls, out: Path, lock: int | None, *, inputs: Mapping[str, Any], labels: Sequence[str],
              command: Sequence[str], sources: Mapping[str, Any], code: str, records: bool, resume: bool,
              overwrite: bool, guard: SignalGuard) -> RunStore:
        found = [name for name in OUTPUT_NAMES if (out / name).exists()]
        inputs = _normal(inputs)
        old = None
        if found and not (resume or overwrite):
            raise OutError(f"--out {out} already holds a run's results ({', '.join(found)}); pass --resume to "
                           "finish that run, --overwrite to replace it, or choose another folder")
        if found and resume:
            old = cls._load_manifest(out, found)
            if old.get("inputs") != inputs:
                diff = first_difference(old.get("inputs"), inputs)
                raise OutError(f"--resume: the run in {out} had other inputs ({diff}); pass --overwrite to "
                               "replace it, or choose another folder")
        if found and overwrite:
            for name in found:
                _remove(out / name)
        _remove_temps(out)
        fresh = {
            "manifest": MANIFEST_KIND,
            "version": MANIFEST_VERSION,
            "status": "running",
            "message": None,
            "command": list(command),
            "seed": inputs.get("seed"),
            "versions": inputs.get("versions"),
            "code": code,
            "inputs": inputs,
            "sources": _normal(sources),
            "combinations": [
                {"index": i, "label": label, "status": "pending", "records": None, "summary": None, "files": {},
                 "code": None}
                for i, label in enumerate(labels)
            ],
            "outputs": [],
        }
        store = cls(out, fresh, records, guard)
        store._lock = lock
        if old is not None:
            store._adopt(old)
        store.save()
        return store

    @staticmethod
    def _load_manifest(out: Path, found: list[str]) -> dict[str, Any]:
        path = out / MANIFEST
        if MANIFEST not in found:
            raise OutError(f"--resume: {out} holds results ({', '.join(found)}) but no {MANIFEST} to resume from; "
                           "pass --overwrite to replace them, or choose another folder")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise OutError(f"--resume: {path} cannot be read ({e}); pass --overwrite to start again") from None
        if not isinstance(data, dict) or data.get("manifest") != MANIFEST_KIND:
            raise OutError(f"--resume: {path} is not a progressive-serve run manifest; pass --overwrite "
                           "to start again")
        if data.get("version") != MANIFEST_VERSION:
            raise OutError(f"--resume: {path} is manifest version {data.get('version')}, this is version "
                           f"{MANIFEST_VERSION}; pass --overwrite to start again")
        return data

    def _adopt(self, old: dict[str, Any]) -> None:
        """Take over the finished combinations of the manifest being resumed (same inputs,
        hence the same combinations); anything not verifiably finished is run again."""
        combos = self.manifest["combinations"]
        old_combos = old.get("combinations") or []
        if old.get("status") == "complete" and len(old_combos) == len(combos):
            self.manifest = old
            self.complete = True
            _remove(self.out / PARTS)
            return
        for name in (*SUMMARY_FILES, RECORDS, PARTIAL_RECORDS):  # outputs of the stopped attempt
            _remove(self.out / name)
        _remove_temps(self.parts)
        for entry, was in zip(combos, old_combos, strict=False):
            if was.get("status") != "done" or was.get("label") != entry["label"]:
                continue
            result = self._load_part(entry["index"], was.get("records"))
            if result is None:
                continue
            self.done[entry["index"]] = result
            entry.update(status="done", records=was.get("records"), summary=was.get("summary"),
                         files=self._part_files(entry["index"]), code=was.get("code"))
            self.other_code += was.get("code") != self.manifest["code"]
        if self.parts.is_dir():  # leftovers of combinations that did not finish
            keep = {p.name for i in self.done for p in self._part_paths(i)}
            for p in self.parts.iterdir():
                if p.name not in keep:
                    _remove(p)

    def _load_part(self, index: int, records: int | None) -> ComboResult | None:
        state, rec = self._part_paths(index)
        try:
            result = ComboResult.from_json(state.read_text(encoding="utf-8"))
            if self.records and pq.read_metadata(rec).num_rows != records:
                return None
        except Exception:  # a part that cannot be read is simply recomputed
            return None
        return result

    # -- parts ---------------------------------------------------------------------------------
    @property
    def parts(self) -> Path:
        return self.out / PARTS

    def _part_paths(self, index: int) -> tuple[Path, Path]:
        return self.parts / f"{index:03d}.json", self.parts / f"{index:03d}.parquet"

    def _part_files(self, index: int) -> dict[str, str]:
        state, rec = self._part_paths(index)
        files = {"state": f"{PARTS}/{state.name}"}
        if self.records:
            files["records"] = f"{PARTS}/{rec.name}"
        return files

    def part_writer(self, index: int) -> RecordWriter | None:
        """The record writer for combination `index` (None with --no-records)."""
        if not self.records:
            return None
        self.parts.mkdir(exist_ok=True)
        return RecordWriter(self._part_paths(index)[1], critical=self.guard.critical)

    def finish_combo(self, index: int, result: ComboResult, writer: RecordWriter | None) -> None:
        """Commit a finished combination: its records, its state, then the manifest (in that
        order, so the manifest never marks done a combination whose files are missing)."""
        with self.guard.critical(deliver=False):
            self.parts.mkdir(exist_ok=True)
            if writer is not None:
                writer.close()
                result.records = writer.rows_written
            write_text(self._part_paths(index)[0], result.to_json())
            self.manifest["combinations"][index].update(
                status="done", records=result.records, summary=_normal(result.row), files=self._part_files(index),
                code=self.manifest["code"])
            self.save()

    # -- results -------------------------------------------------------------------------------
    def save(self) -> None:
        write_text(self.out / MANIFEST, json.dumps(self.manifest, indent=1, allow_nan=False) + "\n")

    def _write_summaries(self, results: Sequence[ComboResult], header: Mapping[str, Any],
                         indices: Sequence[int]) -> list[Path]:
        parts = [self._part_paths(i)[1] for i in indices] if self.records else None  # for the per-request plots
        paths = write_results(self.out, [r.row for r in results], [r.plot for r in results], header,
                              [m for r in results for m in r.models], parts)
        write_csv(self.out / "models.csv", [m for r in results for m in r.models])
        return [*paths.values(), self.out / "models.csv"]

    def write_final(self, results: Sequence[ComboResult], header: Mapping[str, Any]) -> list[Path]:
        """All combinations are done: write the summaries and requests.parquet, mark the
        run complete, drop the parts. Returns the files written."""
        written = self._write_summaries(results, header, range(len(results)))
        if self.records:
            sources = [self._part_paths(i)[1] for i in range(len(results))]
            concat_records(sources, self.out / RECORDS, critical=self.guard.critical)
            written.insert(0, self.out / RECORDS)
        _remove(self.out / PARTIAL_RECORDS)
        for entry in self.manifest["combinations"]:
            entry["files"] = {"summary": "summary.csv", **({"records": RECORDS} if self.records else {})}
        self.manifest.update(status="complete", message=None,
                             outputs=[p.name for p in written] + [MANIFEST])
        self.save()
        _remove(self.parts)
        return written + [self.out / MANIFEST]

    def write_partial(
        self,
        results: Mapping[int, ComboResult],
        current: int | None,
        writer: RecordWriter | None,
        *,
        status: str,
        message: str,
        header: Mapping[str, Any],
    ) -> list[Path]:
        """The run stopped (`status` "interrupted" or "failed") during combination `current`:
        write the summary of the finished combinations and requests.partial.parquet (their
        records, then those `writer` got so far), and record it all in the manifest."""
        written: list[Path] = []
        done = sorted(results)
        partial_records = None
        partial_part = None
        if writer is not None:
            try:
                writer.close()
                partial_part, partial_records = writer.path, writer.rows_written
            except Exception:  # its records cannot be saved; the finished ones still can
                writer.discard()
        if done:
            written += self._write_summaries([results[i] for i in done], header, done)
        if self.records and (done or partial_part is not None):
            sources = [self._part_paths(i)[1] for i in done] + ([partial_part] if partial_part else [])
            meta = {**PARTIAL_METADATA, "progressive_serve.combinations_done": str(len(done)),
                    "progressive_serve.combinations": str(len(self.manifest["combinations"]))}
            concat_records(sources, self.out / PARTIAL_RECORDS, metadata=meta)
            written.insert(0, self.out / PARTIAL_RECORDS)
        if partial_part is not None:
            _remove(partial_part)
        if current is not None:
            entry = self.manifest["combinations"][current]
            entry.update(status="partial" if status == "interrupted" else "failed", records=partial_records,
                         summary=None, files={"records": PARTIAL_RECORDS} if partial_records is not None else {})
        self.manifest.update(status=status, message=message,
                             outputs=[p.name for p in written] + [MANIFEST])
        self.save()
        return written + [self.out / MANIFEST]


def trace_option_files(options: Mapping[str, Any], trace_dir: str | None) -> dict[str, Any]:
    """Fingerprints of the files a trace's options name: a file given as an option's value,
    or the token-length trace `tokens=` names (none for calibrated or fixed lengths)."""
    from traces import TraceError
    from traces.registry import resolve as resolve_trace

    found: dict[str, Any] = {}
    for key, value in options.items():
        path = Path(str(value)).expanduser()
        if path.is_file():
            found[key] = file_fingerprint(path)
    if "tokens" in options and "tokens" not in found:
        try:
            _, token_files, _ = resolve_trace(str(options["tokens"]), trace_dir)
            found["tokens"] = [file_fingerprint(p) for p, _ in token_files]
        except TraceError:
            pass
    return found
