"""Per-request records and a writer that streams them to one Parquet file.

A day-long trace has millions of requests, so records are never collected in a list for the
whole run: `RecordWriter` keeps at most `chunk_rows` of them, then writes them as one row
group of a single Parquet file and drops them. Memory stays flat however many records pass
through. Runs of several policy combinations share one file; the `policy` column tells
them apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from operator import attrgetter
from pathlib import Path
from types import TracebackType

import pyarrow as pa
import pyarrow.parquet as pq


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
    ) -> RequestRecord:
        """A request that was never served: finished (dropped) at its arrival."""
        nan = math.nan
        return cls(
            policy, request_id, model, function, arrival_s, nan, arrival_s, nan, nan,
            prompt_tokens, output_tokens, cold, 0.0, -1, 0.0, True, reason, -1, -1, -1,
        )


# The dataclass annotations are strings (postponed evaluation), hence the keys.
_ARROW_TYPES = {"str": pa.string(), "int": pa.int64(), "float": pa.float64(), "bool": pa.bool_()}

# Fixed schema, derived from the dataclass so that a field added there cannot be forgotten here.
RECORD_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(RequestRecord))
RECORD_SCHEMA = pa.schema(
    [
pa.field(f.name, _ARROW_TYPES[str(f.type)], nullable=False) for f in fields(RequestRecord)
    ]
)
_GETTERS = tuple((attrgetter(name), RECORD_SCHEMA.field(name).type) for name in RECORD_FIELDS)


class RecordWriter:
    """Streams `RequestRecord`s into one Parquet file, `chunk_rows` records per row group.

    `write()` only appends to a bounded buffer (it is on the simulator's per-request path);
    the columnar conversion happens once per chunk. Use as a context manager or call
    `close()`, which writes the buffered tail and the Parquet footer; a file with no
    records is still a valid Parquet file with the schema.
    """

    __slots__ = ("path", "chunk_rows", "rows_written", "_buf", "_writer")

    def __init__(self, path: str | Path, chunk_rows: int = 65536, compression: str = "zstd") -> None:
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows}")
        self.path = Path(path)
        self.chunk_rows = chunk_rows
        self.rows_written = 0
        self._buf: list[RequestRecord] = []
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer: pq.ParquetWriter | None = pq.ParquetWriter(
            self.path, RECORD_SCHEMA, compression=compression
        )

    @property
    def closed(self) -> bool:
        return self._writer is None

    def write(self, rec: RequestRecord) -> None:
        """Queue one record; a full buffer is written out as a row group."""
        buf = self._buf
        buf.append(rec)
        if len(buf) >= self.chunk_rows:
            self.flush()

    def flush(self) -> None:
        """Write the buffered records (if any) as one row group."""
        if self._writer is None:
            raise ValueError(f"RecordWriter for {self.path} is closed")
        buf = self._buf
        if not buf:
            return
        arrays = [pa.array(list(map(get, buf)), type=typ) for get, typ in _GETTERS]
        self._writer.write_batch(pa.RecordBatch.from_arrays(arrays, schema=RECORD_SCHEMA))
        self.rows_written += len(buf)
        self._buf = []

    def close(self) -> None:
        """Write the tail and the footer. Closing twice is harmless."""
        if self._writer is None:
            return
        self.flush()
        self._writer.close()
        self._writer = None

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
