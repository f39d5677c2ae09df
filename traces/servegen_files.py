"""Reading ServeGen's per-client files: arrival-process rows and length distributions.

ServeGen (Alibaba Model Studio) publishes, per model folder and per client `<id>`:

- `chunk-<id>-trace.csv`, no header, one row per 600 s window:
  `timestamp, rate, cv, pattern, shape, scale` (rate in requests per second; pattern
  `Gamma` or `Weibull`, the family of the inter-arrival times fitted in that window, with
  its shape and scale; an idle window is `t,0,0,,0,0`);
- `chunk-<id>-dataset.json` (not for every client): `{window start: {field: "<pdf>"}}`
  with one entry per 6 h, each field an empirical distribution written as a Python dict
  literal, parsed here by `traces.pdfparse` (never `eval`).

Both are read lazily: rows one window at a time, a dataset file only when a window of it
is needed, and then only that window's distributions are parsed and kept.
"""

from __future__ import annotations

import json
import lzma
import math
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from traces.errors import TraceError, where
from traces.llm import MAX_TOKENS
from traces.pdfparse import Pdf, PdfError, parse_pdf
from traces.textio import iter_lines, open_text

WINDOW_S = 600.0
LENGTH_WINDOW_S = 21600.0  # the dataset files hold one entry per 6 h
FAMILIES = ("Gamma", "Weibull")
COLUMNS = ("timestamp", "rate", "cv", "pattern", "shape", "scale")
# Beyond any real client (the busiest ServeGen model peaks at 3,880 req/s over all its clients);
# low enough that one window's draw cannot ask for an absurd allocation.
MAX_RATE = 100_000.0
MAX_ITEMS = 1_000  # images/audio clips/videos in one multimodal request
LANGUAGE_FIELDS = ("input_tokens", "output_tokens")
MULTIMODAL_FIELDS = ("text_tokens", "image_tokens", "audio_tokens", "video_tokens", "image_count", "audio_count",
                     "video_count", "output_tokens")
_CLIENT = re.compile(r"chunk-(\d+)-trace\.csv(?:\.gz|\.xz|\.bz2)?$")


@dataclass(frozen=True, slots=True)
class WindowRow:
    """One client's arrival process in one 600 s window; `family` is "" when idle."""

    start_s: float
    rate: float
    cv: float
    family: str
    shape: float


@dataclass(frozen=True)
class ClientFiles:
    """One client of one model: its rate series and, where published, its length file."""

    model: str
    client: int
    series: Path
    lengths: Path | None

    @property
    def tenant(self) -> str:
        return f"{self.model}/c{self.client}"


def client_files(folder: Path) -> list[ClientFiles]:
    """The clients of one model folder, by client id."""
    out = []
    for path in folder.iterdir():
        m = _CLIENT.match(path.name)
        if m and path.is_file():
            cid = int(m.group(1))
            js = [folder / f"chunk-{cid}-dataset.json{s}" for s in ("", ".gz", ".xz", ".bz2")]
            out.append(ClientFiles(folder.name, cid, path, next((j for j in js if j.is_file()), None)))
    return sorted(out, key=lambda c: c.client)


def _number(path: Path, line: int, name: str, text: str, *, positive: bool = False) -> float:
    try:
        if "_" in text:
            raise ValueError
        v = float(text)
    except ValueError:
        raise TraceError(f"{where(str(path), line, name)}: {text!r} is not a number", path=str(path), line=line,
                         field_name=name) from None
    if not math.isfinite(v) or v < 0 or (positive and v == 0):
        need = "a positive" if positive else "a non-negative"
        raise TraceError(f"{where(str(path), line, name)}: {text!r} is not {need} finite number", path=str(path),
                         line=line, field_name=name)
    return v


def read_series(path: Path) -> Iterator[tuple[int, WindowRow]]:
    """`(line, row)` for every window of a `chunk-<id>-trace.csv`, checked field by field.

    Windows must start at 0, 600, 1200, ... in order (a missing or repeated window would
    shift every later arrival); a row with a rate needs a pattern, and an idle row has rate 0.
    """
    expected = 0.0
    for line, text in iter_lines(path):
        f = [c.strip() for c in text.split(",")]
        if len(f) != len(COLUMNS):
            name = COLUMNS[len(f)] if len(f) < len(COLUMNS) else f"#{len(COLUMNS) + 1}"
            raise TraceError(f"{where(str(path), line, name)}: {len(f)} fields, expected {len(COLUMNS)} "
                             f"({','.join(COLUMNS)})", path=str(path), line=line, field_name=name)
        start = _number(path, line, "timestamp", f[0])
        if start != expected:
            raise TraceError(f"{where(str(path), line, 'timestamp')}: window starts at {f[0]}, expected "
                             f"{expected:g} (one row per {WINDOW_S:g} s window, in order)", path=str(path),
                             line=line, field_name="timestamp")
        rate = _number(path, line, "rate", f[1])
        if rate > MAX_RATE:
            raise TraceError(f"{where(str(path), line, 'rate')}: {rate:g} requests/s is more than the "
                             f"{MAX_RATE:g} this reader accepts", path=str(path), line=line, field_name="rate")
        cv = _number(path, line, "cv", f[2])
        family = f[3]
        if family not in FAMILIES and family != "":
            raise TraceError(f"{where(str(path), line, 'pattern')}: {family!r} is not Gamma, Weibull or empty",
                             path=str(path), line=line, field_name="pattern")
        if family and rate > 0:
            shape = _number(path, line, "shape", f[4], positive=True)
            _number(path, line, "scale", f[5], positive=True)
        elif rate > 0:
            raise TraceError(f"{where(str(path), line, 'pattern')}: rate {rate:g} but no arrival pattern",
                             path=str(path), line=line, field_name="pattern")
        else:
            shape = 0.0
            family = ""
        yield line, WindowRow(start, rate, cv, family, shape)
        expected += WINDOW_S


@dataclass(frozen=True)
class Lengths:
    """One client's token-length distributions in one 6 h window."""

    fields: dict[str, Pdf]

    def draw(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """`n` (prompt, output) pairs; fields are drawn independently, as ServeGen does.

        Multimodal: the prompt is the text tokens plus one draw of `<kind>_tokens` per item
        for `<kind>_count` items of each kind (image, audio, video).
        """
        f = self.fields
        if "input_tokens" in f:
            prompt = f["input_tokens"].sample(rng, n)
        else:
            prompt = f["text_tokens"].sample(rng, n)
            for kind in ("image", "audio", "video"):
                counts = f[f"{kind}_count"].sample(rng, n)
                total = int(counts.sum())
                if total:
                    per_item = f[f"{kind}_tokens"].sample(rng, total)
                    owner = np.repeat(np.arange(n), counts)
                    prompt = prompt + np.bincount(owner, weights=per_item, minlength=n).astype(np.int64)
        return np.minimum(prompt, MAX_TOKENS), f["output_tokens"].sample(rng, n)


def _field_lines(text: str) -> dict[tuple[str, str], int]:
    """`(window, field) -> line` for the pretty-printed JSON ServeGen writes (1 if minified)."""
    out: dict[tuple[str, str], int] = {}
    window = ""
    for i, line in enumerate(text.splitlines(), start=1):
        m = re.match(r'\s*"([^"]*)"\s*:\s*(\{|")', line)
        if m and m.group(2) == "{":
            window = m.group(1)
        elif m:
            out.setdefault((window, m.group(1)), i)
    return out


def read_lengths(path: Path, window: str) -> Lengths | None:
    """The distributions of `window` (a key such as "21600") in a dataset file; None when the
    file has no data there (the key is absent, `{}`, or its distributions are `{}`)."""
    try:
        with open_text(path) as f:
            text = f.read()
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TraceError(f"{path}:{exc.lineno}: not JSON: {exc.msg}", path=str(path), line=exc.lineno) from None
    except (OSError, EOFError, UnicodeDecodeError, ValueError, zlib.error, lzma.LZMAError) as exc:
        raise TraceError(f"{path}: cannot read file: {exc}", path=str(path)) from None
    if not isinstance(data, dict):
        raise TraceError(f"{path}:1: expected an object keyed by window start, got {type(data).__name__}",
                         path=str(path), line=1)
    entry = data.get(window)
    if not entry:
        return None
    lines = _field_lines(text)
    if not isinstance(entry, dict):
        raise TraceError(f"{where(str(path), lines.get((window, ''), 1), window)}: expected an object of "
                         f"distributions", path=str(path), field_name=window)
    needed = LANGUAGE_FIELDS if "input_tokens" in entry else MULTIMODAL_FIELDS
    missing = [k for k in needed if k not in entry]
    if missing:
        raise TraceError(f"{path}: window {window}: field '{missing[0]}' missing (has {', '.join(entry)}; expected "
                         f"{', '.join(LANGUAGE_FIELDS)} or the multimodal {', '.join(MULTIMODAL_FIELDS)})",
                         path=str(path), field_name=missing[0])
    if all(isinstance(entry[k], str) and entry[k].strip() == "{}" for k in needed):
        return None
    fields = {}
    for name in needed:
        line = lines.get((window, name))
        try:
            limit = MAX_ITEMS if name.endswith("_count") else MAX_TOKENS
            fields[name] = parse_pdf(entry[name], integer_values=True, max_value=limit)
        except PdfError as exc:
            raise TraceError(f"{where(str(path), line, name)}: window {window}: {exc}", path=str(path), line=line,
                             field_name=name) from None
    return Lengths(fields)

