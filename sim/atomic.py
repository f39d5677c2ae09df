"""Files that appear under their final name only once they are complete.

Every output of a run is written to a temporary name in the same folder (`.NAME.tmp`) and
renamed over `NAME` when it is complete and flushed to disk. A run killed at any point (even
by SIGKILL) therefore leaves each output either absent, as it was before, or whole; at worst a
stale `.NAME.tmp`, which the next run into the folder removes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

TMP_PREFIX = "."
TMP_SUFFIX = ".tmp"


def temp_path(path: str | Path) -> Path:
    """The temporary name `path` is written under: `.NAME.tmp` in the same folder."""
    path = Path(path)
    return path.with_name(f"{TMP_PREFIX}{path.name}{TMP_SUFFIX}")


def is_temp_name(name: str) -> bool:
    return name.startswith(TMP_PREFIX) and name.endswith(TMP_SUFFIX)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit(tmp: str | Path, path: str | Path) -> None:
    """Flush `tmp` to disk and rename it over `path` (atomic on one file system)."""
    _fsync(Path(tmp))
    os.replace(tmp, path)


def discard(tmp: str | Path) -> None:
    """Remove a temporary file if it is there."""
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass


@contextmanager
def atomic_open(path: str | Path, mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    """`open()` for writing whose file takes the name `path` only if the block completes;
    on any exception (KeyboardInterrupt and signals included) the partial file is removed."""
    if not mode.startswith("w"):
        raise ValueError(f"atomic_open writes new files only, not mode {mode!r}")
    path = Path(path)
    tmp = temp_path(path)
    fh = open(tmp, mode, **kwargs)
    try:
        yield fh
        fh.flush()
        fh.close()
        commit(tmp, path)
    except BaseException:
        fh.close()
        discard(tmp)
        raise


def write_text(path: str | Path, text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8", newline="") as fh:
        fh.write(text)


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def lock_folder(out: Path, busy: Exception) -> int | None:
    """Hold an advisory lock on the folder `out` for the life of the process (the kernel
    drops it however the process ends), so that two runs cannot write into one folder at
    once; `busy` is raised when another process holds it. None where the platform or the
    file system has no locks (then the run goes on unlocked)."""
    try:
        import fcntl
    except ImportError:  # not on this platform
        return None
    fd = os.open(out, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise busy from None
    except OSError:  # a file system without locks
        os.close(fd)
        return None
    return fd
