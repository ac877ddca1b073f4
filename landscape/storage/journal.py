"""The chunk journal: finished grid points appended next to the surface file.

Swapping a whole edited copy of the HDF5 file in for every chunk would make each chunk cost what
the file weighs (directions included: 4 × the parameter count in bytes, twice). Instead each
chunk is one record appended to ``<file>.journal`` -- its cost is the chunk's -- and the records
are folded into the file (one atomic copy) when the run finishes or stops.

Every record is written through to the operating system at once, so a killed process (even
``kill -9``) loses nothing appended; it is fsynced at most every ``SYNC_SECONDS`` and on close,
so a power loss costs at most that much work. An fsync per record cost 9 ms on a shared disk:
a tenth of an estimated surface's time, whose chunks take milliseconds.

Why a kill at any instant never corrupts a surface:

- the HDF5 file only ever changes by ``os.replace`` of a finished copy (``hdf5.atomic_update``);
- a record is ``length, crc32, payload``; a kill mid-append leaves a torn tail whose checksum
  fails, so readers stop at the last whole record, and the next writer truncates the tail
  before appending (that chunk is computed again);
- the header carries the file's ``generation`` (a random id written at creation), so a journal
  left from a deleted or replaced file is never applied to another one;
- folding is idempotent: a kill after the swap but before the journal is removed re-applies
  records whose values the file already holds.
"""

from __future__ import annotations

import os
import struct
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

MAGIC = b"LSJ1"
_HEADER = struct.Struct("<4s16s")  # magic, generation (16 bytes)
_RECORD = struct.Struct("<II")  # payload length, crc32 of the payload
SYNC_SECONDS = 1.0  # the most work a power loss (not a kill) can take back


def journal_path(path: Path) -> Path:
    return path.with_name(path.name + ".journal")


def _generation_bytes(generation: str) -> bytes:
    return bytes.fromhex(generation)[:16].ljust(16, b"\0")


def _records(blob: bytes, generation: str) -> Iterator[tuple[int, bytes]]:
    """``(end offset, payload)`` of each whole record, in order; nothing for a foreign header."""
    if len(blob) < _HEADER.size:
        return
    magic, gen = _HEADER.unpack_from(blob)
    if magic != MAGIC or gen != _generation_bytes(generation):
        return
    offset = _HEADER.size
    while offset + _RECORD.size <= len(blob):
        length, crc = _RECORD.unpack_from(blob, offset)
        start = offset + _RECORD.size
        payload = blob[start : start + length]
        if len(payload) != length or zlib.crc32(payload) != crc:
            return  # a torn tail: the write a kill interrupted
        offset = start + length
        yield offset, payload


def read_journal(
    path: Path, generation: str | None, n_metrics: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The journal's whole records as ``(flat indices (K,), values (n_metrics, K))``."""
    journal = journal_path(path)
    if generation is None:
        return []
    try:
        blob = journal.read_bytes()
    except FileNotFoundError:
        return []
    out = []
    for _, payload in _records(blob, generation):
        n = struct.unpack_from("<q", payload)[0]
        indices = np.frombuffer(payload, dtype="<i8", count=n, offset=8)
        values = np.frombuffer(payload, dtype="<f8", count=n * n_metrics, offset=8 + 8 * n)
        out.append((indices.astype(np.int64), values.reshape(n_metrics, n).astype(np.float64)))
    return out


class JournalWriter:
    """Appends records for one file generation; opened by the one process computing it."""

    def __init__(self, path: Path, generation: str) -> None:
        self.path = journal_path(path)
        self.generation = generation
        blob = self.path.read_bytes() if self.path.exists() else b""
        valid = max((end for end, _ in _records(blob, generation)), default=0)
        if valid == 0 and not blob.startswith(_HEADER.pack(MAGIC, _generation_bytes(generation))):
            blob, valid = b"", 0
        self.handle = self.path.open("r+b" if blob else "wb")
        if valid:
            self.handle.truncate(valid)  # drop a torn tail left by a kill
            self.handle.seek(valid)
        else:
            self.handle.truncate(0)
            self.handle.write(_HEADER.pack(MAGIC, _generation_bytes(generation)))
        self._synced = 0.0
        self._sync()

    def append(self, indices: np.ndarray, values: np.ndarray) -> None:
        """One chunk: ``values`` is ``(n_metrics, K)`` for the ``K`` flat ``indices``."""
        indices = np.ascontiguousarray(indices, dtype="<i8")
        values = np.ascontiguousarray(values, dtype="<f8")
        payload = struct.pack("<q", len(indices)) + indices.tobytes() + values.tobytes()
        self.handle.write(_RECORD.pack(len(payload), zlib.crc32(payload)) + payload)
        self.handle.flush()  # in the OS from here on: a killed process loses nothing
        if time.monotonic() - self._synced >= SYNC_SECONDS:
            self._sync()

    def _sync(self) -> None:
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self._synced = time.monotonic()

    def stat(self) -> os.stat_result:
        return os.stat(self.handle.fileno())

    def close(self) -> None:
        if not self.handle.closed:
            self._sync()
            self.handle.close()
