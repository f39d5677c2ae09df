"""Where each tensor of a safetensors checkpoint lies on disk, and reading byte ranges of it.

The staged loader reads a whole decoder layer with as few `readinto` calls as the file
layout allows, straight into a reusable (pinned, on CUDA) host buffer or into the
parameter itself, instead of materialising one new tensor per name. The format is small
enough to parse here: 8 bytes of header length, a JSON header, then raw data.
"""

from __future__ import annotations

import json
import struct
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch

DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


@dataclass(frozen=True)
class TensorEntry:
    """One tensor of a checkpoint: its file and absolute byte range."""

    name: str
    path: Path
    dtype: torch.dtype
    shape: tuple[int, ...]
    start: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start


def read_header(path: Path) -> dict[str, TensorEntry]:
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    base = 8 + n
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        if meta["dtype"] not in DTYPES:
            raise ValueError(f"{path}: tensor {name!r} has unsupported dtype {meta['dtype']}")
        b, e = meta["data_offsets"]
        out[name] = TensorEntry(name, path, DTYPES[meta["dtype"]], tuple(meta["shape"]), base + b, base + e)
    return out


def index_checkpoint(ckpt_dir: str | Path) -> dict[str, TensorEntry]:
    """Every tensor of every `*.safetensors` file in a Hugging Face checkpoint folder."""
    files = sorted(Path(ckpt_dir).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors files in {ckpt_dir}")
    entries: dict[str, TensorEntry] = {}
    for path in files:
        entries.update(read_header(path))
    return entries


@dataclass(frozen=True)
class ReadRun:
    """A contiguous byte range in one file covering one or more tensors."""

    path: Path
    start: int
    end: int
    entries: tuple[TensorEntry, ...]


def plan_reads(entries: list[TensorEntry]) -> list[ReadRun]:
    """Merge tensors that are adjacent in the same file into single reads."""
    by_file: dict[Path, list[TensorEntry]] = defaultdict(list)
    for e in entries:
        by_file[e.path].append(e)
    runs: list[ReadRun] = []
    for path, es in by_file.items():
        es.sort(key=lambda e: e.start)
        group = [es[0]]
        for e in es[1:]:
            if e.start == group[-1].end:
                group.append(e)
            else:
                runs.append(ReadRun(path, group[0].start, group[-1].end, tuple(group)))
                group = [e]
        runs.append(ReadRun(path, group[0].start, group[-1].end, tuple(group)))
    return runs


def read_into(run: ReadRun, buffer: torch.Tensor) -> dict[str, torch.Tensor]:
    """Read `run` into the first bytes of the uint8 CPU `buffer`; return typed views per tensor."""
    n = run.end - run.start
    if buffer.numel() < n:
        raise ValueError(f"buffer of {buffer.numel()} bytes for a read of {n}")
    view = buffer[:n]
    with open(run.path, "rb", buffering=0) as f:
        f.seek(run.start)
        mv = memoryview(view.numpy())
        got = 0
        while got < n:
            k = f.readinto(mv[got:])
            if not k:
                raise OSError(f"{run.path}: short read at byte {run.start + got} of {run.end}")
            got += k
    out = {}
    for e in run.entries:
        raw = view[e.start - run.start : e.end - run.start]
        out[e.name] = raw.view(e.dtype).view(e.shape)
    return out
