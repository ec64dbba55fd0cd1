"""How several processes share one store: a write lock, and an append-only log of vectors.

The write lock (`filelock`, a file `write.lock` in the store) is held by a writer from the start of
a batch's SQLite transaction until that batch's vectors are on disk: milliseconds, because the
embeddings are computed before it is taken. Readers never take it.

The vector index on disk is a base file (`index.faiss`, rewritten atomically at checkpoints) plus
`vectors.log`: after each committed batch the writer appends one record (ids + vectors + CRC32)
and fsyncs it. So, whenever no writer holds the lock, base + log hold exactly SQLite's ids, and a
reader (or the next writer) catches up by reading only the records it has not seen. A record is
applied whole or not at all (a torn tail fails its length or CRC check and is ignored until the
next writer truncates it), so a reader sees a batch entirely or not yet, never half of it.
"""

from __future__ import annotations

import logging
import os
import struct
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from filelock import FileLock, Timeout

from .errors import StoreLockedError

log = logging.getLogger("symbolic_ram")

LOCK_FILE = "write.lock"
LOG_FILE = "vectors.log"
_HEADER = struct.Struct("<4sII")  # magic, number of vectors, CRC32 of the payload
_MAGIC = b"SRV1"


class WriteLock:
    """The store's inter-process write lock; re-entrant within one process.

    Args:
        root: the store directory (the lock file lives in it).
        timeout: seconds to wait for another writer before StoreLockedError.
        notice_after: seconds of waiting after which a progress message is logged (then every 10 s).
    """

    def __init__(self, root: Path, timeout: float = 120.0, notice_after: float = 0.5):
        self.root, self.timeout, self.notice_after = Path(root), float(timeout), notice_after
        self._lock = FileLock(str(self.root / LOCK_FILE), thread_local=False)

    def __enter__(self) -> "WriteLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self._lock.release()

    def acquire(self) -> None:
        """Take the lock, logging progress while another writer holds it; StoreLockedError on timeout."""
        start = time.monotonic()
        wait = min(self.notice_after, self.timeout)
        while True:
            try:
                self._lock.acquire(timeout=wait)
                return
            except Timeout:
                waited = time.monotonic() - start
                if waited >= self.timeout:
                    raise StoreLockedError(
                        f"{self.root}: another process has held the store's write lock for {waited:.0f}s; "
                        "wait for it to finish, or give a longer --lock-timeout"
                    ) from None
                log.warning("waiting for the write lock of %s (another process is writing; %.0fs of %.0fs)",
                            self.root, waited, self.timeout)
                wait = min(10.0, self.timeout - waited)

    def held_elsewhere(self) -> bool:
        """True when another process holds the lock right now (a non-blocking try)."""
        if self._lock.is_locked:
            return False
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            return True
        except OSError:  # a read-only directory: nobody can be writing through this lock file
            return False
        self._lock.release()
        return False


@dataclass
class LogPosition:
    """How far a process has read the vector log: the file's identity and a byte offset."""

    ident: tuple[int, int] | None = None  # (st_dev, st_ino) of the log file read
    offset: int = 0
    vectors: int = 0  # vectors read from this log file (for the checkpoint rule)


class VectorLog:
    """Append-only records of (ids, vectors) written after each committed batch.

    Args:
        path: the log file. dim: vector size.
    """

    def __init__(self, path: Path, dim: int):
        self.path, self.dim = Path(path), dim

    def ident(self) -> tuple[int, int] | None:
        """(st_dev, st_ino) of the log file, or None if there is none."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_dev, st.st_ino)

    def append(self, ids: np.ndarray, vectors: np.ndarray) -> int:
        """Append one record and fsync it (call under the write lock); return its length in bytes."""
        ids = np.ascontiguousarray(ids, np.int64)
        vectors = np.ascontiguousarray(vectors, np.float32).reshape(-1, self.dim)
        payload = ids.tobytes() + vectors.tobytes()
        record = _HEADER.pack(_MAGIC, len(ids), zlib.crc32(payload)) + payload
        new = not self.path.exists()
        with open(self.path, "ab") as fh:
            fh.write(record)
            fh.flush()
            os.fsync(fh.fileno())
        if new:
            _fsync_dir(self.path.parent)
        return len(record)

    def read(self, pos: LogPosition) -> tuple[np.ndarray, np.ndarray, LogPosition]:
        """Every whole record after `pos`: (ids, vectors, new position). Starts over if the file changed."""
        ident = self.ident()
        empty = (np.zeros(0, np.int64), np.zeros((0, self.dim), np.float32))
        if ident is None:
            return (*empty, LogPosition())
        start = pos.offset if ident == pos.ident else 0
        vectors_before = pos.vectors if ident == pos.ident else 0
        with open(self.path, "rb") as fh:
            if os.fstat(fh.fileno()).st_size < start:  # truncated by a writer: read it again
                start, vectors_before = 0, 0
            fh.seek(start)
            data = fh.read()
        ids, vecs, offset = [], [], 0
        rec = 8 + 4 * self.dim
        while offset + _HEADER.size <= len(data):
            magic, n, crc = _HEADER.unpack_from(data, offset)
            end = offset + _HEADER.size + n * rec
            if magic != _MAGIC or end > len(data):
                break  # a record still being written (or torn by a crash): not applied
            payload = data[offset + _HEADER.size : end]
            if zlib.crc32(payload) != crc:
                break
            ids.append(np.frombuffer(payload[: 8 * n], np.int64))
            vecs.append(np.frombuffer(payload[8 * n :], np.float32).reshape(n, self.dim))
            offset = end
        new_pos = LogPosition(ident, start + offset, vectors_before + sum(len(i) for i in ids))
        if not ids:
            return (*empty, new_pos)
        return np.concatenate(ids), np.concatenate(vecs), new_pos

    def truncate(self, pos: LogPosition) -> bool:
        """Cut a torn tail after the last whole record (call under the write lock). True if cut."""
        if pos.ident is None or self.ident() != pos.ident:
            return False
        if self.path.stat().st_size <= pos.offset:
            return False
        with open(self.path, "r+b") as fh:
            fh.truncate(pos.offset)
            os.fsync(fh.fileno())
        return True

    def remove(self) -> None:
        """Delete the log (after its vectors went into a new base file)."""
        self.path.unlink(missing_ok=True)
        _fsync_dir(self.path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def file_stamp(path: Path) -> tuple | None:
    """An identity of a file's current version: (inode, size, mtime_ns), or None if absent."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
