"""Bad input ends in one `TraceError` naming file, line and field, or counted skips when lenient."""

from __future__ import annotations

import gzip

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_traces_helpers import HEADER_2019, row_2019, write_2019

from traces import TraceError, open_trace

GOOD = row_2019("o1", "a1", "f1", "http", {0: 2, 5: 1})
GOOD2 = row_2019("o1", "a1", "f2", "timer", {10: 3})


def _error(path, **options) -> str:
    with pytest.raises(TraceError) as info:
        list(open_trace(str(path), select="all", **options))
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def test_non_numeric_count_names_file_line_minute(tmp_path):
    bad = GOOD2.replace(",3,", ",x3,", 1)
    path = write_2019(tmp_path, [GOOD, bad])
    msg = _error(path)
    assert f"{path}:3" in msg and "field '11'" in msg and "'x3'" in msg


def test_negative_count(tmp_path):
    path = write_2019(tmp_path, [GOOD.replace(",2,", ",-2,", 1)])
    msg = _error(path)
    assert ":2" in msg and "field '1'" in msg and "negative" in msg


def test_truncated_and_extra_fields(tmp_path):
    path = write_2019(tmp_path, [GOOD, GOOD2.rsplit(",", 100)[0]])
    msg = _error(path)
    assert ":3" in msg and "truncated line" in msg and "field '1341'" in msg
    path = write_2019(tmp_path, [GOOD + ",7"])
    assert "extra fields" in _error(path)


def test_wrong_day_width_and_bad_header(tmp_path):
    path = write_2019(tmp_path, [GOOD], header=HEADER_2019.rsplit(",", 1)[0])
    assert "wrong day width: 1439 minute columns" in _error(path)
    path = write_2019(tmp_path, [GOOD], header=HEADER_2019.replace(",7,", ",seven,"))
    assert "field 'seven'" in _error(path)


def test_empty_file_and_unknown_format(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert "empty file" in _error(empty)
    odd = tmp_path / "odd.csv"
    odd.write_text("a,b,c\n1,2,3\n")
    assert "unknown trace format" in _error(odd)


def test_fake_and_truncated_gzip(tmp_path):
    fake = tmp_path / "invocations_per_function_md.anon.d01.csv.gz"
    fake.write_text(HEADER_2019 + "\n" + GOOD + "\n")
    assert "not gzip data" in _error(fake)
    whole = gzip.compress((HEADER_2019 + "\n" + (GOOD + "\n") * 200).encode())
    cut = tmp_path / "invocations_per_function_md.anon.d02.csv.gz"
    cut.write_bytes(whole[: len(whole) // 2])
    assert "cannot read file" in _error(cut)


def test_real_gzip_reads(tmp_path):
    path = tmp_path / "invocations_per_function_md.anon.d01.csv.gz"
    path.write_bytes(gzip.compress((HEADER_2019 + "\n" + GOOD + "\n" + GOOD2 + "\n").encode()))
    assert len(list(open_trace(str(path), select="all"))) == 6


def test_lenient_counts_skipped_rows(tmp_path):
    rows = [GOOD, GOOD2.replace(",3,", ",x,", 1), GOOD.replace("f1", "f3").replace(",2,", ",-1,", 1), "o,a,f4,http,1"]
    path = write_2019(tmp_path, rows)
    trace = open_trace(str(path), select="all", lenient=True)
    assert len(list(trace)) == 3
    d = trace.details
    assert d["rows_skipped"] == 3
    assert d["rows_skipped.non_numeric"] == d["rows_skipped.negative"] == d["rows_skipped.truncated_line"] == 1


@pytest.mark.parametrize("content, needle, line", [
    ("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03.97,12,x\n", "field 'GeneratedTokens'", 2),
    ("TIMESTAMP,ContextTokens,GeneratedTokens\nyesterday,12,3\n", "field 'TIMESTAMP'", 2),
    ("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03.97,12\n", "truncated line", 2),
    ("TIMESTAMP,ContextTokens\n2023-11-16 18:17:03.97,12\n", "unknown trace format", 1),
    ("Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n5,ChatGPT,-4,3,7,x\n",
     "field 'Request tokens'", 2),
    ("arrival_s,model,prompt_tokens,output_tokens\n1.0,,3,4\n", "field 'model'", 2),
    ("arrival_s,model,prompt_tokens,output_tokens\n-1.0,m,3,4\n", "field 'arrival_s'", 2),
    ("arrival_s,model,prompt_tokens,output_tokens\n5,m,3,4\n10,m,3,4\n1,m,3,4\n", "out of order", 4),
    ("arrival_s,model,prompt_tokens,output_tokens,extra\n1,m,3,4,5\n", "unknown ['extra']", 1),
    ("app,func,end_timestamp,duration\na,f,nan,1\n", "field 'end_timestamp'", 2),
])
def test_request_level_errors(tmp_path, content, needle, line):
    path = tmp_path / "t.csv"
    path.write_text(content)
    with pytest.raises(TraceError) as info:
        list(open_trace(str(path), reorder_window_s=1) if "order" in needle else open_trace(str(path)))
    message = str(info.value)
    assert needle in message and f"{path}:{line}" in message and "\n" not in message


def test_unknown_option_lists_valid_ones(tmp_path):
    path = write_2019(tmp_path, [GOOD])
    with pytest.raises(TraceError, match="unknown option.*valid: .*within_minute"):
        open_trace(str(path), no_such_option=1)
    with pytest.raises(TraceError, match="select"):
        open_trace(str(path), select="best")


CELL = st.sampled_from(["0", "1", "7", "-1", "x", "", "2.5", "1e3", " 3", "1_0"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.lists(st.tuples(st.integers(0, 2), st.integers(0, 1443), CELL), max_size=4),
       cut=st.one_of(st.none(), st.integers(1, 3000)))
def test_fuzzed_rows_error_cleanly_or_count_exactly(tmp_path_factory, edits, cut):
    """Any corruption: strict reading raises a located TraceError or returns exact totals;
    lenient reading never raises and accounts for every row."""
    folder = tmp_path_factory.mktemp("fuzz")
    rows = [row_2019("o", "a", f"f{i}", "http", {i: i + 1, 100: 1}).split(",") for i in range(3)]
    for r, col, value in edits:
        if col >= 4:  # keep the keys intact; corrupt counts
            rows[r][col] = value
    text = [",".join(r) for r in rows]
    if cut is not None:
        text[2] = text[2][:cut]
    path = write_2019(folder, text)
    expected_rows = []
    for r in text:
        cells = r.split(",")[4:]
        try:
            values = [int(c) for c in cells if "_" not in c]
            values = values if len(values) == len(cells) else None
        except ValueError:
            values = None
        ok = len(cells) == 1440 and values is not None and min(values) >= 0
        expected_rows.append(sum(values) if ok else None)
    try:
        got = len(list(open_trace(str(path), select="all", min_invocations=0)))
        assert all(v is not None for v in expected_rows) and got == sum(expected_rows)
    except TraceError as exc:
        assert str(path) in str(exc) and "field" in str(exc)
        assert any(v is None for v in expected_rows) or sum(v for v in expected_rows) == 0
    good = [v for v in expected_rows if v is not None]
    if good and sum(good) > 0:
        trace = open_trace(str(path), select="all", lenient=True, min_invocations=0)
        assert len(list(trace)) == sum(good)
        assert trace.details["rows_skipped"] == len(expected_rows) - len(good)


HEADERS = [HEADER_2019, "TIMESTAMP,ContextTokens,GeneratedTokens", "app,func,end_timestamp,duration",
           "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type",
           "arrival_s,model,prompt_tokens,output_tokens", ""]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(header=st.sampled_from(HEADERS), body=st.binary(max_size=300), gz=st.booleans())
def test_arbitrary_bytes_never_escape_as_other_errors(tmp_path_factory, header, body, gz):
    """Whatever the bytes, reading ends normally or with a TraceError naming the file."""
    folder = tmp_path_factory.mktemp("bytes")
    data = (header + "\n").encode() + body if header else body
    path = folder / ("t.csv.gz" if gz else "t.csv")
    path.write_bytes(gzip.compress(data) if gz else data)
    for lenient in (False, True):
        try:
            list(open_trace(str(path), lenient=lenient))
        except TraceError as exc:
            assert str(path) in str(exc) and "\n" not in str(exc)
