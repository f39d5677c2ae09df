"""Per-request records and a writer that streams them to one Parquet file.

A day-long trace has millions of requests, so records are never collected in a list for the
whole run: `RecordWriter` keeps at most `chunk_rows` of them, then writes them as one row
group of a single Parquet file and drops them. Memory stays flat however many records pass
through. Runs of several policy combinations share one file; the `policy` column tells
them apart.

The file is written under a temporary name (`.NAME.tmp`, see `sim.atomic`) and renamed to
its final name by `close()`, so a process killed mid-run never leaves a Parquet file without
its footer under the final name. `concat_records` joins finished files into one.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, fields
from pathlib import Path
from types import TracebackType

import pyarrow as pa
import pyarrow.parquet as pq

from sim.atomic import commit, discard, temp_path


@dataclass(slots=True)
class RequestRecord:
    """What happened to one request, in simulated seconds.

    A rejected (or shed) request has `rejected=True`, a `reason`, `first_token_s`,
    `ttft_s` and `tpot_s` of NaN and `stage_at_first_token=-1`. `quality` is the
    token-weighted mean quality (0..1) of the tokens it produced; `load_wait_s` is the part
    of its TTFT spent waiting for weights to load. `instance_id`, `node` and `gpu` are -1
    when no instance served it.
    """

    policy: str
    request_id: int
    model: str
    function: str
    arrival_s: float
    first_token_s: float
    finish_s: float
    ttft_s: float
    tpot_s: float
    prompt_tokens: int
    output_tokens: int
    cold: bool
    load_wait_s: float
    stage_at_first_token: int
    quality: float
    rejected: bool
    reason: str
    instance_id: int
    node: int
    gpu: int
    tenant: str = ""  # who sent it, where the trace says (ServeGen clients, Copilot sessions)
    woke: bool = False  # it waited for a sleeping instance to wake (`cold` too), not for a load from scratch

    @classmethod
    def rejection(
        cls,
        *,
        policy: str,
        request_id: int,
        model: str,
        function: str,
        arrival_s: float,
        prompt_tokens: int,
        output_tokens: int,
        reason: str,
        cold: bool = False,
        tenant: str = "",
    ) -> RequestRecord:
        """A request that was never served: finished (dropped) at its arrival."""
        nan = math.nan
        return cls(
            policy, request_id, model, function, arrival_s, nan, arrival_s, nan, nan,
            prompt_tokens, output_tokens, cold, 0.0, -1, 0.0, True, reason, -1, -1, -1, tenant,
        )


# The dataclass annotations are strings (postponed evaluation), hence the keys.
_ARROW_TYPES = {"str": pa.string(), "int": pa.int64(), "float": pa.float64(), "bool": pa.bool_()}

# Fixed schema, derived from the dataclass (RecordWriter.write lists the fields in this order).
RECORD_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(RequestRecord))
RECORD_SCHEMA = pa.schema(
    [pa.field(f.name, _ARROW_TYPES[str(f.type)], nullable=False) for f in fields(RequestRecord)]
)
_TYPES = tuple(f.type for f in RECORD_SCHEMA)
# Dictionary-encode only the repetitive string columns: half the write time of trying it on
# every column, and a smaller file.
_DICTIONARY_COLUMNS = [f.name for f in RECORD_SCHEMA if f.type == pa.string()]


def _column(name: str, values: list, typ: pa.DataType) -> pa.Array:
    try:
        return pa.array(values, type=typ)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise TypeError(f"RequestRecord.{name} must be {typ}: {e}") from e


class RecordWriter:
    """Streams `RequestRecord`s into one Parquet file, `chunk_rows` records per row group.

    `write()` only appends the record's fields to per-column lists (it is on the
    simulator's per-request path, about 1 us); the Arrow conversion, encoding and
    compression happen once per chunk. Records go to a temporary file beside `path`;
    `close()` writes the buffered tail and the Parquet footer and renames the file to
    `path`. `discard()` drops it instead; so does leaving a `with` block by an exception.
    A file with no records is still a valid Parquet file with the schema.

    `metadata` (str -> str) goes into the file's key-value metadata. `critical`, if given,
    is a zero-argument callable returning a context manager that is held while a chunk or
    the footer is written: the run uses it to hold back SIGINT/SIGTERM until the file is
    consistent again. A `write()` cut short between its appends is harmless: a flush
    takes only the records `write()` finished.
    """

    __slots__ = ("path", "tmp_path", "chunk_rows", "rows_written", "_cols", "_n", "_writer", "_critical")

    def __init__(
        self,
        path: str | Path,
        chunk_rows: int = 65536,
        compression: str = "zstd",
        metadata: Mapping[str, str] | None = None,
        critical: Callable[[], AbstractContextManager] | None = None,
    ) -> None:
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows}")
        self.path = Path(path)
        self.tmp_path = temp_path(self.path)
        self.chunk_rows = chunk_rows
        self.rows_written = 0
        self._cols: list[list] = [[] for _ in RECORD_FIELDS]
        self._n = 0
        self._critical = critical or contextlib.nullcontext
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer: pq.ParquetWriter | None = _parquet_writer(self.tmp_path, compression, metadata)

    @property
    def closed(self) -> bool:
        return self._writer is None

    @property
    def buffered(self) -> int:
        """Records written but not yet flushed (always below `chunk_rows`)."""
        return self._n

    def write(self, r: RequestRecord) -> None:
        """Queue one record; a full buffer is written out as a row group."""
        # Performance: one explicit append per field is about twice as fast as keeping the
        # records and gathering columns with attrgetter at flush time. The order is
        # RECORD_FIELDS; the round-trip test compares every field.
        c = self._cols
        c[0].append(r.policy)
        c[1].append(r.request_id)
        c[2].append(r.model)
        c[3].append(r.function)
        c[4].append(r.arrival_s)
        c[5].append(r.first_token_s)
        c[6].append(r.finish_s)
        c[7].append(r.ttft_s)
        c[8].append(r.tpot_s)
        c[9].append(r.prompt_tokens)
        c[10].append(r.output_tokens)
        c[11].append(r.cold)
        c[12].append(r.load_wait_s)
        c[13].append(r.stage_at_first_token)
        c[14].append(r.quality)
        c[15].append(r.rejected)
        c[16].append(r.reason)
        c[17].append(r.instance_id)
        c[18].append(r.node)
        c[19].append(r.gpu)
        c[20].append(r.tenant)
        c[21].append(r.woke)
        self._n += 1
        if self._n >= self.chunk_rows:
            self.flush()

    def flush(self) -> None:
        """Write the buffered records (if any) as one row group."""
        if self._writer is None:
            raise ValueError(f"RecordWriter for {self.path} is closed")
        with self._critical():
            self._flush()

    def _flush(self) -> None:
        n = self._n
        if not n:
            return
        for col in self._cols:  # a write() interrupted between its appends left extras
            del col[n:]
        columns = zip(RECORD_FIELDS, self._cols, _TYPES, strict=True)
        arrays = [_column(name, col, typ) for name, col, typ in columns]
        self._writer.write_batch(pa.RecordBatch.from_arrays(arrays, schema=RECORD_SCHEMA))
        self.rows_written += n
        self._cols = [[] for _ in RECORD_FIELDS]
        self._n = 0

    def close(self) -> None:
        """Write the tail and the footer, then give the file its final name. Closing twice
        is harmless."""
        if self._writer is None:
            return
        with self._critical():
            self._flush()
            self._writer.close()
            self._writer = None
            commit(self.tmp_path, self.path)

    def discard(self) -> None:
        """Stop writing and remove the temporary file; `path` is left as it was."""
        writer, self._writer = self._writer, None
        if writer is not None:
            with contextlib.suppress(Exception):
                writer.close()
            discard(self.tmp_path)

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.discard()


def _parquet_writer(path: Path, compression: str, metadata: Mapping[str, str] | None) -> pq.ParquetWriter:
    schema = RECORD_SCHEMA.with_metadata(dict(metadata)) if metadata else RECORD_SCHEMA
    return pq.ParquetWriter(path, schema, compression=compression, use_dictionary=_DICTIONARY_COLUMNS)


def concat_records(
    sources: Iterable[str | Path],
    dest: str | Path,
    metadata: Mapping[str, str] | None = None,
    chunk_rows: int = 65536,
    compression: str = "zstd",
    critical: Callable[[], AbstractContextManager] | None = None,
) -> int:
    """Copy the records of finished Parquet files, in order, into one file at `dest` (written
    under a temporary name and renamed when complete), in row groups of `chunk_rows` as one
    `RecordWriter` would have written them. Memory holds at most two row groups. Returns
    the number of records."""
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows}")
    dest = Path(dest)
    tmp = temp_path(dest)
    writer = _parquet_writer(tmp, compression, metadata)
    rows = 0
    buffered: list[pa.Table] = []
    n = 0
    try:
        for source in sources:
            pf = pq.ParquetFile(source)
            for k in range(pf.num_row_groups):
                table = pf.read_row_group(k).cast(RECORD_SCHEMA)
                buffered.append(table)
                n += table.num_rows
                while n >= chunk_rows:
                    joined = pa.concat_tables(buffered)
                    writer.write_table(joined.slice(0, chunk_rows), row_group_size=chunk_rows)
                    rest = joined.slice(chunk_rows)
                    buffered, n = [rest], rest.num_rows
                    rows += chunk_rows
        if n:
            writer.write_table(pa.concat_tables(buffered), row_group_size=chunk_rows)
            rows += n
        with critical() if critical else contextlib.nullcontext():
            writer.close()
            commit(tmp, dest)
    except BaseException:
        with contextlib.suppress(Exception):
            writer.close()
        discard(tmp)
        raise
    return rows
