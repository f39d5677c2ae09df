"""GitHub Copilot coding-agent traces 2026 (Azure/AzurePublicDataset): one request per LLM call.

The release holds one folder per UTC day, `date=YYYY-MM-DD/`, of gzip JSONL shards
`shard-NNNN.jsonl.gz`; each line is one agentic session:
`{session_id, date, turns: [{turn_id, llm_calls: [{timestamp, duration_ms, initiator_type,
model, result, status_code, tokens: {prompt, completion, cached, ...}, ...}], tool_batches}]}`.
Every LLM call becomes a `Request` at its `timestamp` (ISO-8601), for the anonymised model
it names (`Model A` ... : 37 of them, the richest public multi-model trace), with
`tokens.prompt` and `tokens.completion`, and the session as its tenant.

Order: a shard's sessions are not in time order and a session can run past midnight, but
no call is earlier than its day folder's date. So each day is read whole and sorted, and
the next day is read only when the replay reaches its midnight: memory holds at most about
two days of calls. A call earlier than its folder's day is reported, never moved.
Written from the published schema; the full release has not been read by this reader yet.
"""

from __future__ import annotations

import datetime as dt
import heapq
import json
import re
from collections.abc import Iterator
from pathlib import Path

from traces.base import Trace
from traces.errors import Issues, TraceError
from traces.llm import MAX_TOKENS, parse_timestamp
from traces.locate import search_dirs
from traces.rowtrace import RowOptions, row_trace
from traces.textio import iter_lines

SHARD = "shard-*.jsonl*"
_DAY = re.compile(r"date=(\d{4}-\d{2}-\d{2})$")


def day_of(folder: Path) -> str:
    m = _DAY.match(folder.name)
    return m.group(1) if m else ""


def shards_under(root: Path) -> list[Path]:
    """Shard files in `root` (a shard, a `date=` folder, or a folder of them, up to three levels)."""
    if root.is_file():
        return [root]
    for depth in range(0, 4):
        hits = sorted(p for p in root.glob("*/" * depth + SHARD) if p.is_file())
        if hits:
            return hits
    return []


def find_ghcp(trace_dir: str | None) -> tuple[list[Path], Path | None, list[Path]]:
    """Shards from the first search folder that has any (they must sit in `date=` folders there)."""
    dirs = search_dirs(trace_dir)
    for d in dirs:
        hits = [p for p in shards_under(d) if day_of(p.parent)] if d.is_dir() else []
        if hits:
            return hits, d, dirs
    return [], None, dirs


def _count(p: str, line: int, name: str, value: object, issues: Issues) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_TOKENS:
        issues.row(p, line, name, f"{value!r} is not a whole number of tokens in [0, {MAX_TOKENS:,}]", "bad_tokens")
        return None
    return value


def read_session_calls(path: Path, issues: Issues) -> Iterator[tuple[float, int, tuple]]:
    """`(epoch seconds, line, (model label, prompt, completion, session, ()))` per LLM call, in file order."""
    p = str(path)
    for line, text in iter_lines(path):
        try:
            session = json.loads(text)
        except ValueError as exc:
            issues.row(p, line, "", f"not a JSON object: {exc}", "bad_json")
            continue
        if not isinstance(session, dict) or not isinstance(session.get("turns"), list):
            issues.row(p, line, "turns", "a session needs a list of turns", "bad_session")
            continue
        tenant = str(session.get("session_id", ""))
        for ti, turn in enumerate(session["turns"]):
            calls = turn.get("llm_calls") if isinstance(turn, dict) else None
            if not isinstance(calls, list):
                issues.row(p, line, f"turns[{ti}].llm_calls", "not a list", "bad_session")
                continue
            for ci, call in enumerate(calls):
                at = f"turns[{ti}].llm_calls[{ci}]"
                got = _call(p, line, at, call, issues)
                if got is not None:
                    yield got[0], line, (*got[1:], tenant, ())


def _call(p: str, line: int, at: str, call: object, issues: Issues) -> tuple[float, str, int, int] | None:
    if not isinstance(call, dict):
        issues.row(p, line, at, "an LLM call must be an object", "bad_call")
        return None
    try:
        t = parse_timestamp(str(call.get("timestamp", "")))
    except ValueError:
        issues.row(p, line, f"{at}.timestamp", f"{call.get('timestamp')!r} is not an ISO-8601 time", "bad_time")
        return None
    model = call.get("model")
    if not isinstance(model, str) or not model.strip():
        issues.row(p, line, f"{at}.model", f"{model!r} is not a model label", "bad_model")
        return None
    tokens = call.get("tokens")
    if not isinstance(tokens, dict):
        issues.row(p, line, f"{at}.tokens", "missing or not an object", "bad_tokens")
        return None
    prompt = _count(p, line, f"{at}.tokens.prompt", tokens.get("prompt"), issues)
    completion = _count(p, line, f"{at}.tokens.completion", tokens.get("completion"), issues) \
        if prompt is not None else None
    if completion is None:
        return None
    return t, model.strip(), prompt, completion  # type: ignore[return-value]


def _day_rows(day: str, shards: list[Path], issues: Issues) -> list[tuple[float, int, str, tuple]]:
    """Every call of one day's shards, sorted; a call before the day's midnight is reported."""
    start = (dt.date.fromisoformat(day) - dt.date(1970, 1, 1)).days * 86400.0 if day else float("-inf")
    rows = []
    for shard in shards:
        for t, line, payload in read_session_calls(shard, issues):
            if t < start:
                issues.row(str(shard), line, "timestamp", f"call at {t:.3f} is before its folder's day {day}",
                           "before_day")
                continue
            rows.append((t, line, str(shard), payload))
    rows.sort(key=lambda r: (r[0], r[2], r[1]))
    return rows


def in_day_order(shards: list[Path], issues: Issues) -> Iterator[tuple[float, tuple]]:
    """All calls in time order, reading a day's shards only when the replay reaches that day."""
    days: dict[str, list[Path]] = {}
    for s in shards:
        days.setdefault(day_of(s.parent), []).append(s)
    if "" in days and len(days) > 1:
        raise TraceError(f"{days[''][0]}: a shard outside a date=YYYY-MM-DD folder, mixed with dated ones",
                         path=str(days[""][0]))
    pending = sorted(days)
    heap: list[tuple[float, int, tuple]] = []
    seq = 0
    while heap or pending:
        nxt = pending[0] if pending else None
        if nxt is not None and (not heap or not nxt or heap[0][0] >= parse_timestamp(f"{nxt} 00:00:00")):
            for t, _, _, payload in _day_rows(pending.pop(0), days[nxt], issues):
                heapq.heappush(heap, (t, seq, payload))
                seq += 1
            continue
        t, _, payload = heapq.heappop(heap)
        yield t, payload


def ghcp_trace(shards: list[Path], opts: RowOptions, *, where: str, duration_s: float | None) -> Trace:
    """A `Trace` over Copilot coding-agent shards: every LLM call a request, sessions as tenants."""
    if not shards:
        raise TraceError(f"{where}: no {SHARD} shards found")
    details = {"models": f"the call's anonymised model label -> {opts.model}-<label>"
                         + (f" (map {','.join(opts.model_map)})" if opts.model_map else ""),
               "tokens": "tokens.prompt, tokens.completion", "tenant": "session_id",
               "shards": len(shards), "note": "written from the published schema; not yet run on the full release"}
    root = Path(where)
    return row_trace("ghcp_coding_agent_2026", [(root, "")], lambda _p, _k, issues: in_day_order(shards, issues),
                     opts, where=where, duration_s=duration_s, details=details,
                     size_bytes=sum(s.stat().st_size for s in shards))
