"""RequestRecord and RecordWriter: schema, Parquet round trip, chunking, determinism."""

from __future__ import annotations

import math

import pyarrow.parquet as pq
import pytest

from sim.records import RECORD_FIELDS, RECORD_SCHEMA, RecordWriter, RequestRecord


def served(i: int, policy: str = "full+none") -> RequestRecord:
    return RequestRecord(
        policy=policy, request_id=i, model="llama-2-7b", function=f"f{i % 3}",
        arrival_s=float(i), first_token_s=i + 1.5, finish_s=i + 4.0, ttft_s=1.5, tpot_s=0.025,
        prompt_tokens=100 + i, output_tokens=101, cold=i % 2 == 0, load_wait_s=1.0,
        stage_at_first_token=1, quality=0.97, rejected=False, reason="",
        instance_id=i % 5, node=0, gpu=i % 2,
    )


def test_schema_follows_the_dataclass():
    assert RECORD_SCHEMA.names == list(RECORD_FIELDS)
    assert str(RECORD_SCHEMA.field("cold").type) == "bool"
    assert str(RECORD_SCHEMA.field("ttft_s").type) == "double"
    assert str(RECORD_SCHEMA.field("request_id").type) == "int64"


def test_rejection_has_nan_times_and_stage_minus_one():
    rec = RequestRecord.rejection(
        policy="p", request_id=7, model="m", function="f", arrival_s=3.0,
        prompt_tokens=10, output_tokens=20, reason="shed: queue full",
    )
    assert rec.rejected and rec.reason == "shed: queue full"
    assert math.isnan(rec.ttft_s) and math.isnan(rec.first_token_s) and math.isnan(rec.tpot_s)
    assert rec.stage_at_first_token == -1 and rec.finish_s == 3.0 and rec.instance_id == -1


def test_round_trip_in_chunks_with_two_policies(tmp_path):
    path = tmp_path / "records.parquet"
    recs = [served(i, "a") for i in range(10)] + [served(i, "b") for i in range(7)]
    recs.append(RequestRecord.rejection(
        policy="b", request_id=99, model="m", function="f", arrival_s=5.0,
        prompt_tokens=1, output_tokens=2, reason="no capacity", cold=True,
    ))
    with RecordWriter(path, chunk_rows=4) as w:
        for r in recs:
            w.write(r)
    assert w.closed and w.rows_written == 18
    meta = pq.ParquetFile(path).metadata
    assert meta.num_rows == 18 and meta.num_row_groups == 5  # 4+4+4+4+2
    table = pq.read_table(path)
    assert table.schema == RECORD_SCHEMA
    rows = table.to_pylist()
    for rec, row in zip(recs, rows, strict=True):
        for name in RECORD_FIELDS:
            a, b = getattr(rec, name), row[name]
            assert (math.isnan(a) and math.isnan(b)) if isinstance(a, float) and math.isnan(a) else a == b
    df = table.to_pandas()
    assert df.groupby("policy").size().to_dict() == {"a": 10, "b": 8}


def test_empty_file_is_valid_and_close_is_idempotent(tmp_path):
    path = tmp_path / "sub" / "empty.parquet"
    w = RecordWriter(path)
    w.close()
    w.close()
    table = pq.read_table(path)
    assert table.num_rows == 0 and table.schema == RECORD_SCHEMA
    with pytest.raises(ValueError, match="closed"):
        w.flush()


def test_buffer_is_bounded_by_chunk_rows(tmp_path):
    w = RecordWriter(tmp_path / "r.parquet", chunk_rows=100)
    for i in range(1050):
        w.write(served(i))
        assert w.buffered < 100
    w.close()
    assert pq.ParquetFile(tmp_path / "r.parquet").metadata.num_rows == 1050


def test_identical_inputs_give_identical_files(tmp_path):
    blobs = []
    for k in range(2):
        path = tmp_path / f"r{k}.parquet"
        with RecordWriter(path, chunk_rows=8) as w:
            for i in range(30):
                w.write(served(i))
        blobs.append(path.read_bytes())
    assert blobs[0] == blobs[1]


def test_bad_chunk_rows():
    with pytest.raises(ValueError, match="chunk_rows"):
        RecordWriter("unused.parquet", chunk_rows=0)


def test_a_wrongly_typed_field_names_the_column(tmp_path):
    bad = served(1)
    bad.prompt_tokens = "many"  # type: ignore[assignment]
    w = RecordWriter(tmp_path / "r.parquet")
    w.write(bad)
    with pytest.raises(TypeError, match="prompt_tokens"):
        w.flush()
