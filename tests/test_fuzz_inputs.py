"""Fuzzing every input the user hands the simulator: trace files (every format the trace registry
reads, and the synthetic generator's calibration), profiles, policy specs and policy files.

Each case starts from a small valid input, then applies random damage: truncations, byte
flips and insertions, fields replaced by wrong types and extreme numbers, lines dropped,
duplicated or moved, compression on top. Reading it must end either in a result or in the
project's own error (`TraceError`, `ProfileError`, `PolicySpecError`) on one line naming the
file (or the policy spec), which the CLI turns into exit 2 and one line; any other exception
is a bug.

The cases are derandomized (the same every run, so CI is stable); `FUZZ_RANDOM=1` draws new
ones and `FUZZ_SCALE=4` runs four times as many. The number of cases run is printed at the
end of the module (and written to $FUZZ_REPORT as JSON when set).
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import itertools
import json
import lzma
import os
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_traces_helpers import HEADER_2019, row_2019

from policies.base import Policy
from policies.registry import KINDS, PolicySpecError, load_policy, names, split_specs
from sim.profile import PROFILES_DIR, Profile, ProfileError, load_profile
from traces import TraceError, open_trace
from traces.azure2019 import read_durations, read_memory
from traces.synthetic import CALIBRATION

SCALE = float(os.environ.get("FUZZ_SCALE", "1"))
CASES: Counter = Counter()
REFUSED: Counter = Counter()  # cases that ended in the project's error (the rest read successfully)
READ_LIMIT = 20_000  # requests taken from a trace: enough to read every row of these small files


def fuzz_settings(examples: int):
    return settings(max_examples=max(1, int(examples * SCALE)), deadline=None,
                    derandomize=not os.environ.get("FUZZ_RANDOM"), database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


@pytest.fixture(scope="module", autouse=True)
def _report(request):
    started = time.perf_counter()
    yield
    total = sum(CASES.values())
    parts = ", ".join(f"{k} {v} ({REFUSED[k]} refused)" for k, v in sorted(CASES.items()))
    line = f"fuzz: {total} cases in {time.perf_counter() - started:.1f} s: {parts}"
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None:
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            reporter.write_line("\n" + line)
    if os.environ.get("FUZZ_REPORT"):
        report = {"total": total, "seconds": round(time.perf_counter() - started, 1), "cases": CASES,
                  "refused": REFUSED}
        Path(os.environ["FUZZ_REPORT"]).write_text(json.dumps(report) + "\n")


@pytest.fixture(scope="module")
def scratch():
    with tempfile.TemporaryDirectory(prefix="fuzz-") as d:
        yield Path(d)


# -- damage ------------------------------------------------------------------------------------

EXTREME_TEXT = [
    "", " ", "-1", "-0", "0", "1", "99999999999", "1000001", "9223372036854775808", "9" * 40, "9" * 5000,
    "1e308", "1e309", "-1e308", "inf", "-inf", "nan", "NaN", "1_000", "0x10", "1.5", "1e3", "１２",
    "abc", '"', '"a,b"', "\x00", "\t", "\r", "é", "\ufeff", "2023-11-16 18:15:46.6805900",
    "1970-01-01 00:00:00", "9999-12-31 23:59:59.9999999", "2023-02-30 10:00:00", "2023-11-16 24:00:00",
    "2023-11-16 18:15:46+25:00", "2023-11-16T18:15:46Z", "0001-01-01 00:00:00", "2023-11-16",
]
field_values = st.one_of(
    st.sampled_from(EXTREME_TEXT),
    st.integers(-(2**70), 2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=6),
)


@st.composite
def text_damage(draw):
    """A list of line/field-level edits, as (op, fractions..., value)."""
    ops = []
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(["field", "field", "field", "field", "drop_field", "dup_line", "del_line",
                                   "move_line", "insert", "header"]))
        ops.append((op, draw(st.floats(0, 1)), draw(st.floats(0, 1)), draw(field_values)))
    return ops


@st.composite
def byte_damage(draw):
    """Byte-level edits (most cases get none, so the text edits reach the rows)."""
    ops = []
    for _ in range(draw(st.sampled_from([0, 0, 0, 0, 1, 1, 2, 3]))):
        op = draw(st.sampled_from(["truncate", "set", "set", "flip", "insert"]))
        value = draw(st.one_of(st.sampled_from([b"0", b"9", b",", b"-", b".", b"e", b":", b" ", b"\n", b'"', b"x"]),
                               st.binary(min_size=1, max_size=4)))
        ops.append((op, draw(st.floats(0, 1)), value))
    return ops


def apply_text(text: str, ops) -> str:
    """Apply `text_damage` edits; all but "header" edit the data lines (the header is line 0)."""
    lines = text.split("\n")
    for op, a, b, value in ops:
        i = 0 if op == "header" or len(lines) < 2 else 1 + min(int(a * (len(lines) - 1)), len(lines) - 2)
        if op == "header":
            op = "field" if a < 0.5 else "drop_field"
        if op in ("field", "drop_field"):
            fields = lines[i].split(",")
            j = min(int(b * len(fields)), len(fields) - 1)
            if op == "field":
                fields[j] = value
            else:
                del fields[j]
            lines[i] = ",".join(fields)
        elif op == "dup_line":
            lines.insert(i, lines[i])
        elif op == "del_line" and len(lines) > 1:
            del lines[i]
        elif op == "move_line" and i:
            line = lines.pop(i)
            lines.insert(1 + min(int(b * len(lines)), len(lines) - 1), line)
        elif op == "insert":
            pos = int(b * len(lines[i]))
            lines[i] = lines[i][:pos] + value + lines[i][pos:]
    return "\n".join(lines)


def apply_bytes(data: bytes, ops) -> bytes:
    for op, a, value in ops:
        pos = min(int(a * len(data)), max(len(data) - 1, 0))
        if op == "truncate":
            data = data[:pos]
        elif op == "flip" and data:
            data = data[:pos] + bytes([data[pos] ^ (value[0] or 1)]) + data[pos + 1:]
        elif op == "set" and data:
            data = data[:pos] + value[:1] + data[pos + 1:]
        elif op == "insert":
            data = data[:pos] + value + data[pos:]
    return data


COMPRESS = {"": lambda b: b, ".gz": lambda b: gzip.compress(b, mtime=0), ".xz": lzma.compress, ".bz2": bz2.compress}


def one_line(message: str) -> None:
    assert message.strip() and "\n" not in message and "\r" not in message, repr(message)
    assert "Traceback" not in message


# -- trace readers -------------------------------------------------------------------------------

SAMPLES = {
    "azure_functions_2019": ("invocations_per_function_md.anon.d01.csv", "\n".join([
        HEADER_2019,
        row_2019("o1", "a1", "f1", "http", {0: 2, 1: 1, 5: 3, 700: 1, 1439: 2}),
        row_2019("o1", "a1", "f2", "timer", {10: 1, 70: 1, 130: 1}),
        row_2019("o2", "a2", "f3", "queue", {3: 5, 4: 5}),
    ]) + "\n"),
    "azure_functions_2021": ("AzureFunctionsInvocationTraceForTwoWeeksJan2021.txt",
                             "app,func,end_timestamp,duration\n"
                             "a1,f1,10.5,0.5\na1,f2,11.0,2.0\na2,f1,12.25,0.01\na1,f1,30.0,1.0\na2,f1,31.5,0.5\n"),
    "azure_llm_2023": ("AzureLLMInferenceTrace_conv.csv",
                       "TIMESTAMP,ContextTokens,GeneratedTokens\n"
                       "2023-11-16 18:15:46.6805900,374,44\n2023-11-16 18:15:50.9951690,396,109\n"
                       "2023-11-16 18:15:51.1000000,879,0\n2023-11-16 18:16:10.4405740,91,9\n"
                       "2023-11-16 18:16:11.0000000,4000,250\n2023-11-16 18:45:00.0000000,120,12"),  # the real files end without a newline
    "azure_llm_2024": ("AzureLLMInferenceTrace_code_1week.csv",
                       "TIMESTAMP,ContextTokens,GeneratedTokens\n"
                       "2024-05-10 00:00:00.008370+00:00,100,10\n2024-05-10 00:00:01.500000+00:00,200,20\n"
                       "2024-05-10 00:00:03.000000+00:00,300,30\n"),
    "burstgpt": ("BurstGPT_1.csv",
                 "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
                 "5,ChatGPT,472,18,490,Conversation log\n45,ChatGPT,1087,230,1317,Conversation log\n"
                 "46,GPT-4,100,0,100,API log\n118,ChatGPT,417,276,693,Conversation log\n"),
    "requests_csv": ("requests.csv",
                     "arrival_s,model,prompt_tokens,output_tokens,function,adapter\n"
                     "0.0,llama-2-7b,512,128,f1,\n0.8,mistral-7b,90,300,f2,a1\n2.5,llama-2-7b,7,1,,\n"),
    "azure_functions_2019_durations": ("function_durations_percentiles.anon.d01.csv",
                                       "HashOwner,HashApp,HashFunction,Average,Count,Minimum,Maximum,"
                                       "percentile_Average_0,percentile_Average_1,percentile_Average_25,"
                                       "percentile_Average_50,percentile_Average_75,percentile_Average_99,"
                                       "percentile_Average_100\n"
                                       "o1,a1,f1,120,30,2,900,2,3,50,100,150,800,900\n"
                                       "o1,a1,f2,5,2,4,6,4,4,4,5,6,6,6\n"),
    "azure_functions_2019_memory": ("app_memory_percentiles.anon.d01.csv",
                                    "HashOwner,HashApp,SampleCount,AverageAllocatedMb,AverageAllocatedMb_pct1,"
                                    "AverageAllocatedMb_pct5,AverageAllocatedMb_pct25,AverageAllocatedMb_pct50,"
                                    "AverageAllocatedMb_pct75,AverageAllocatedMb_pct95,AverageAllocatedMb_pct99,"
                                    "AverageAllocatedMb_pct100\n"
                                    "o1,a1,100,130,100,110,120,130,140,150,160,170\n"),
}
TABLES = {"azure_functions_2019_durations": read_durations, "azure_functions_2019_memory": read_memory}


def read_trace(fmt: str, path: Path, lenient: bool) -> None:
    """Read `path` to the end, as the simulator would (at most READ_LIMIT requests)."""
    if fmt in TABLES:
        for _ in TABLES[fmt](path):
            pass
        return
    trace = open_trace(str(path), lenient=lenient)
    for _ in itertools.islice(trace, READ_LIMIT):
        pass


@pytest.mark.parametrize("fmt", list(SAMPLES))
def test_damaged_trace_files_read_or_fail_with_one_located_line(fmt, scratch):
    name, base = SAMPLES[fmt]
    read_trace(fmt, _write(scratch / "base", name, base.encode()), lenient=False)  # the sample itself is valid

    @fuzz_settings(250)
    @given(edits=text_damage(), damage=byte_damage(), suffix=st.sampled_from(["", "", "", "", "", ".gz", ".xz", ".bz2"]),
           lenient=st.booleans())
    def case(edits, damage, suffix, lenient):
        CASES[f"trace.{fmt}"] += 1
        data = COMPRESS[suffix](apply_text(base, edits).encode("utf-8", "surrogatepass"))
        path = _write(scratch / fmt, name + suffix, apply_bytes(data, damage))
        try:
            read_trace(fmt, path, lenient)
        except TraceError as e:
            REFUSED[f"trace.{fmt}"] += 1
            if os.environ.get("FUZZ_MESSAGES"):
                with open(os.environ["FUZZ_MESSAGES"], "a") as f:
                    f.write(f"{fmt}\t{str(e).replace(str(path), 'PATH')}\n")
            one_line(str(e))
            assert str(path) in str(e), str(e)

    case()


def _write(folder: Path, name: str, data: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():  # one file per folder: the name tells the reader its format
        old.unlink()
    path = folder / name
    path.write_bytes(data)
    return path


# -- the multi-file formats: a damaged file among valid ones ----------------------------------------

def _mooncake(t: int, inp: int, out: int) -> str:
    return json.dumps({"timestamp": t, "input_length": inp, "output_length": out,
                       "hash_ids": list(range(-(-inp // 512)))})


def _ghcp_session(sid: str, calls: list[tuple[str, str, int, int]]) -> str:
    return json.dumps({"session_id": sid, "date": "2026-06-01", "turns": [{"turn_id": "t0", "llm_calls": [
        {"message_id": "m", "timestamp": ts, "duration_ms": 900.0, "initiator_type": "agent", "model": model,
         "result": "Success", "status_code": "OK",
         "tokens": {"total": p + c, "prompt": p, "completion": c, "cached": 0, "cached_pct": 0.0}}
        for ts, model, p, c in calls]}]})


SERVEGEN_SERIES = "0,0.5,1.4,Gamma,0.5,2.0\n600,0,0,,0,0\n1200,0.25,1.2,Weibull,0.4,2.0\n"
SERVEGEN_LENGTHS = json.dumps({"0": {"input_tokens": "{100: 0.5, 200: 0.5}", "output_tokens": "{7: 0.9, 0: 0.1}"},
                               "1200": {"input_tokens": "{64: 1.0}", "output_tokens": "{3: 1.0}"}}, indent=1)
# format -> (the file damaged, its valid text, the valid files beside it, what is opened: "" the
# damaged file itself, else a folder), all paths relative to the case's folder
TREES = {
    "mooncake": ("conversation_trace.jsonl", "\n".join([_mooncake(0, 600, 5), _mooncake(1000, 1030, 7),
                                                        _mooncake(2000, 100, 0), _mooncake(2500, 40, 3)]) + "\n",
                 {}, ""),
    "azure_lmm_2025": ("AzureLMMInferenceTrace_multimodal.csv",
                       "TIMESTAMP,NumImages,ContextTokens,GeneratedTokens\n"
                       "2024-10-15T12:00:00.269Z,0,770,491\n2024-10-15T12:00:00.900Z,1,949,126\n"
                       "2024-10-15T12:00:02.269Z,1,964,79\n2024-10-15T12:00:05.000Z,0,78,0\n", {}, ""),
    "ghcp_coding_agent_2026": ("date=2026-06-01/shard-0000.jsonl", "\n".join([
        _ghcp_session("s1", [("2026-06-01T23:59:00Z", "Model A", 100, 10), ("2026-06-02T00:00:30.5Z", "Model B", 200, 0)]),
        _ghcp_session("s2", [("2026-06-01T10:00:00Z", "Model A", 50, 5)])]) + "\n",
        {"date=2026-06-02/shard-0000.jsonl": _ghcp_session("s3", [("2026-06-02T00:00:10Z", "Model C", 7, 3)]) + "\n"},
        "."),
    "servegen_series": ("m-a/chunk-0-trace.csv", SERVEGEN_SERIES, {"m-a/chunk-0-dataset.json": SERVEGEN_LENGTHS},
                        "m-a"),
    "servegen_lengths": ("m-a/chunk-0-dataset.json", SERVEGEN_LENGTHS, {"m-a/chunk-0-trace.csv": SERVEGEN_SERIES},
                         "m-a"),
}
TREE_OPTIONS = {"servegen_series": {"rate_scale": 0.1}, "servegen_lengths": {"rate_scale": 0.1}}
NO_LENIENT = {"servegen_series", "servegen_lengths"}  # ServeGen has no bad rows to skip: it refuses the file


def _write_tree(folder: Path, files: dict[str, bytes]) -> None:
    if folder.exists():
        shutil.rmtree(folder)
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)


@pytest.mark.parametrize("fmt", list(TREES))
def test_damaged_files_of_folder_formats_read_or_fail_with_one_located_line(fmt, scratch):
    """ServeGen folders, Mooncake JSON lines, Azure LMM 2025 and Copilot shards: one file damaged
    (the others valid), opened as a user would; the error names the damaged file or, for a
    folder-level refusal, the folder opened."""
    name, base, beside, target = TREES[fmt]
    options = TREE_OPTIONS.get(fmt, {})
    folder = scratch / f"tree-{fmt}"

    def read(files: dict[str, bytes], damaged: str, lenient: bool) -> Path:
        _write_tree(folder, files)
        opened = folder / (target or damaged)
        trace = open_trace(str(opened), **options, **({} if fmt in NO_LENIENT else {"lenient": lenient}))
        for _ in itertools.islice(trace, READ_LIMIT):
            pass
        return opened

    valid = {rel: text.encode() for rel, text in {name: base, **beside}.items()}
    read(valid, name, lenient=False)  # the sample itself is valid

    @fuzz_settings(100)
    @given(edits=text_damage(), damage=byte_damage(), suffix=st.sampled_from(["", "", "", "", ".gz", ".xz"]),
           lenient=st.booleans())
    def case(edits, damage, suffix, lenient):
        CASES[f"trace.{fmt}"] += 1
        data = COMPRESS[suffix](apply_text(base, edits).encode("utf-8", "surrogatepass"))
        files = {**{rel: text.encode() for rel, text in beside.items()}, name + suffix: apply_bytes(data, damage)}
        damaged = folder / (name + suffix)
        try:
            read(files, name + suffix, lenient)
        except TraceError as e:
            REFUSED[f"trace.{fmt}"] += 1
            one_line(str(e))
            opened = folder / (target or name + suffix)
            assert str(damaged) in str(e) or str(opened.resolve()) in str(e) or str(opened) in str(e), str(e)

    case()


# -- JSON damage ---------------------------------------------------------------------------------

EXTREME_JSON = [None, True, False, 0, -1, 1, 0.5, -0.5, 1e308, -1e308, 2**63, 10**30, -(10**30), "", "x", "12",
                [], {}, [1], [0, 0], [1, -1], [1, "x"], [[1]], {"x": 1}, float("nan"), float("inf"), -float("inf")]


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*prefix, i))


def _edit(doc, path, op, value):
    parent = doc
    for k in path[:-1]:
        parent = parent[k]
    key = path[-1]
    if op == "delete":
        del parent[key]
    elif op == "wrap":
        parent[key] = [parent[key]]
    else:
        parent[key] = value


# -- the synthetic generator's calibration file (the `calibration` option) ---------------------------

BASE_CALIBRATION = json.loads(CALIBRATION.read_text())
CALIBRATION_PATHS = [p for p in _paths(BASE_CALIBRATION) if p and "source" not in p and "cdf_points" not in p]


@given(edits=st.lists(st.tuples(st.sampled_from(CALIBRATION_PATHS), st.sampled_from(["set", "set", "delete", "wrap"]),
                                st.sampled_from(EXTREME_JSON)), max_size=3),
       damage=byte_damage(), tokens=st.sampled_from(["calibrated", "calibrated:code", "fixed:10,5"]))
@fuzz_settings(250)
def test_damaged_calibrations_generate_or_fail_with_one_line_naming_the_file(scratch, edits, damage, tokens):
    CASES["calibration"] += 1
    doc = json.loads(json.dumps(BASE_CALIBRATION))
    for path, op, value in edits:
        try:
            _edit(doc, path, op, json.loads(json.dumps(value)))
        except (KeyError, IndexError, TypeError):
            pass
    path = scratch / "calibration" / f"c{CASES['calibration']}.json"  # load_calibration caches by path
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(apply_bytes(json.dumps(doc).encode(), damage))
    try:
        trace = open_trace("synthetic", duration_s=600, calibration=str(path), tokens=tokens)
        for _ in itertools.islice(trace, READ_LIMIT):
            pass
    except TraceError as e:
        REFUSED["calibration"] += 1
        one_line(str(e))
        assert str(path) in str(e), str(e)


# -- the profile loader --------------------------------------------------------------------------

PROFILE = PROFILES_DIR / "a6000-llama2-7b-published.json"

BASE_PROFILE = json.loads(PROFILE.read_text())
PROFILE_PATHS = [p for p in _paths(BASE_PROFILE) if p and "notes" not in p]


@given(edits=st.lists(st.tuples(st.sampled_from(PROFILE_PATHS), st.sampled_from(["set", "set", "delete", "wrap"]),
                                st.sampled_from(EXTREME_JSON)), max_size=4),
       damage=byte_damage(), top=st.sampled_from([None, None, None, None, [], "x", 1]))
@fuzz_settings(600)
def test_damaged_profiles_load_or_fail_with_one_line_naming_the_file(scratch, edits, damage, top):
    CASES["profile"] += 1
    doc = json.loads(json.dumps(BASE_PROFILE))
    for path, op, value in edits:
        try:
            _edit(doc, path, op, json.loads(json.dumps(value)))
        except (KeyError, IndexError, TypeError):
            pass  # an earlier edit removed or replaced the path
    text = json.dumps(doc if top is None else top, indent=1)
    path = scratch / "profile" / "p.json"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(apply_bytes(text.encode(), damage))
    try:
        assert isinstance(load_profile(path), Profile)
    except ProfileError as e:
        REFUSED["profile"] += 1
        one_line(str(e))
        assert str(path) in str(e), str(e)


def test_a_profile_that_is_a_folder_unreadable_or_not_text_is_one_line(scratch, monkeypatch):
    folder = scratch / "profile_dir"
    folder.mkdir()
    with pytest.raises(ProfileError, match=f"^{folder}: is a directory"):
        load_profile(folder)
    binary = scratch / "binary.json"
    binary.write_bytes(b"\xff\xfe\x00{")
    with pytest.raises(ProfileError, match="not UTF-8"):
        load_profile(binary)
    deep = scratch / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ProfileError, match=str(deep)):
        load_profile(deep)

    def refuse(self):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_bytes", refuse)  # as root, chmod 000 would not stop the read
    with pytest.raises(ProfileError, match=f"^{PROFILE}: cannot read the profile \\(Permission denied\\)$"):
        load_profile(PROFILE)


# -- policy specs and policy files ---------------------------------------------------------------

POLICY_SOURCE = '''\
from policies.base import KeepAlivePolicy
from policies.decisions import Keep


class P(KeepAlivePolicy):
    name = "fuzzed"

    def __init__(self, ttl: float = 60.0, tiers: int = 2, strict: bool = False, tag: str = "x"):
        if ttl < 0 or tiers > 9:
            raise ValueError("ttl must be >= 0 and tiers <= 9")
        self.ttl, self.tiers, self.strict, self.tag = ttl, tiers, strict, tag

    def on_idle(self, inst, now):
        return []
'''
MODULES = ["policies.keepalive", "policies.staging", "policies.base", "json", "nonexistent_mod_xyz", ".rel",
           "a..b", "policies..x", "policies.keepalive.nothing"]
PARAMS = ["ttl", "gpu", "dram", "fractions", "depth", "window", "min_requests", "interval", "tier", "tiers",
          "strict", "tag", "x", ""]


@st.composite
def policy_spec(draw, policy_file: str):
    kind = draw(st.sampled_from(list(KINDS)))
    target = draw(st.one_of(
        st.sampled_from(names(kind)),
        st.sampled_from([n for k in KINDS for n in names(k)]),
        st.builds(lambda m, c: f"{m}:{c}", st.sampled_from(MODULES),
                  st.sampled_from(["FixedKeepAlive", "KeepAlivePolicy", "loads", "X", "", "P"])),
        st.sampled_from([f"{policy_file}:P", f"{policy_file}:Q", "/no/such/file.py:P", "dir/:P"]),
        st.text(alphabet="abcfixed_:./[]= ,", max_size=12),
    ))
    args = draw(st.lists(st.tuples(st.sampled_from(PARAMS), field_values), max_size=3))
    spec = target
    if args or draw(st.booleans()):
        spec += "[" + ",".join(f"{k}={v}" for k, v in args) + "]"
    if draw(st.booleans()):
        spec = draw(st.sampled_from(["", " ", ",", "[", "]", "]["])).join([spec, draw(st.sampled_from(["", spec]))])
    return kind, spec


def _check_policy(kind: str, spec: str, group: str) -> None:
    try:
        assert isinstance(load_policy(kind, spec), Policy)
    except PolicySpecError as e:
        REFUSED[group] += 1
        one_line(str(e))
        assert spec.strip() in str(e) or repr(spec.strip()) in str(e) or spec.strip().split("[")[0] in str(e), str(e)


def test_damaged_policy_specs_load_or_fail_with_one_line_naming_the_spec(scratch):
    policy_file = scratch / "policy_ok.py"
    policy_file.write_text(POLICY_SOURCE)
    assert load_policy("keepalive", f"{policy_file}:P[ttl=5,tiers=3,strict=yes,tag=a]").ttl == 5

    @fuzz_settings(800)
    @given(case=policy_spec(str(policy_file)))
    def case(case):
        kind, text = case
        for spec in split_specs(text):
            CASES["policy_spec"] += 1
            assert spec and spec == spec.strip()
            _check_policy(kind, spec, "policy_spec")

    case()


@pytest.mark.filterwarnings("ignore::SyntaxWarning")  # a damaged string literal: Python warns, then loads it
def test_damaged_policy_files_load_or_fail_with_one_line_naming_the_spec(scratch):
    serial = itertools.count()

    @fuzz_settings(250)
    @given(edits=text_damage(), damage=byte_damage(), args=st.sampled_from(["", "[ttl=5]", "[tiers=12]", "[x=1]"]))
    def case(edits, damage, args):
        CASES["policy_file"] += 1
        source = apply_text(POLICY_SOURCE, edits).encode("utf-8", "surrogatepass")
        path = scratch / f"policy_{next(serial)}.py"  # a new module name each time: no cached import
        path.write_bytes(apply_bytes(source, damage))
        _check_policy("keepalive", f"{path}:P{args}", "policy_file")

    case()


@pytest.mark.parametrize("source, expected", [
    ("class P(:\n", r"syntax error at .*bad\.py:1"),
    ("import nonexistent_module_xyz\n", r"ModuleNotFoundError: No module named 'nonexistent_module_xyz' \(at .*bad\.py:1\)"),
    ("x = 1\nraise SystemExit(3)\n", r"SystemExit: 3 \(at .*bad\.py:2\)"),
    (POLICY_SOURCE.replace('raise ValueError("ttl must', 'raise RuntimeError("ttl must'),
     r"keepalive policy '.*bad\.py:P\[ttl=-1\]': the constructor raised RuntimeError: ttl must .*\(at .*bad\.py:10\)"),
])
def test_policy_file_failures_name_the_spec_file_and_line(tmp_path, source, expected):
    path = tmp_path / "bad.py"
    path.write_text(source)
    with pytest.raises(PolicySpecError, match=expected) as info:
        load_policy("keepalive", f"{path}:P[ttl=-1]")
    one_line(str(info.value))
    assert f"'{path}:P[ttl=-1]'" in str(info.value)
