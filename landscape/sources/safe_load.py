"""Size checks on an untrusted checkpoint file before any reader unpacks it.

``torch.load`` inflates every zip entry into memory, so a small ``.pt`` holding a deflated
gigabyte (a zip bomb) costs that gigabyte before any shape check can refuse it. The sizes a
reader will allocate are declared up front (the zip central directory; the safetensors JSON
header), so they are checked here first, against a limit the caller derives from the model the
file claims to hold.
"""

from __future__ import annotations

import json
import math
import struct
import zipfile
from pathlib import Path

from landscape.errors import CheckpointError

# Bytes per element of every dtype the safetensors format names.
_SAFETENSORS_DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8, "C64": 8,
}  # fmt: skip
MAX_SAFETENSORS_HEADER = 16 * 1024 * 1024


class CheckpointTooLargeError(CheckpointError):
    """The file declares more unpacked bytes than the limit (refused before reading them)."""


def unpacked_size(path: Path) -> int:
    """The bytes a reader would allocate for ``path``: the sum of a zip archive's declared
    uncompressed entry sizes, or a safetensors file's declared tensor bytes (checked against
    the file's length); other files (legacy torch format) cannot expand beyond their size."""
    if is_zip_archive(path):
        return _zip_size(path)
    if path.suffix.lower() == ".safetensors":
        return _safetensors_size(path)
    return path.stat().st_size


def is_zip_archive(path: Path) -> bool:
    """``zipfile.is_zipfile`` for untrusted bytes, which it may raise on (``BadZipFile`` for an
    end record claiming several disks) instead of answering: a complaint means a broken zip,
    which the zip reader then names."""
    try:
        return zipfile.is_zipfile(path)
    except Exception:  # the reader's complaint about the bytes: a zip, and a broken one
        return True


def check_unpacked_size(path: Path, limit: int) -> int:
    """Refuse ``path`` when it would unpack to more than ``limit`` bytes; returns the size."""
    size = unpacked_size(path)
    if size > limit:
        raise CheckpointTooLargeError(
            f"the file unpacks to {size} bytes, over this server's limit of {limit} bytes "
            "for this model"
        )
    return size


def _zip_size(path: Path) -> int:
    try:
        with zipfile.ZipFile(path) as archive:
            return sum(info.file_size for info in archive.infolist())
    except Exception as exc:  # untrusted bytes: whatever the zip reader raises is the file's
        raise CheckpointError(f"not a readable zip archive ({type(exc).__name__}: {exc})") from exc


def _safetensors_size(path: Path) -> int:
    file_size = path.stat().st_size
    with path.open("rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise CheckpointError("truncated safetensors file (no header length)")
        (header_len,) = struct.unpack("<Q", prefix)
        if header_len > min(MAX_SAFETENSORS_HEADER, file_size - 8):
            raise CheckpointError(f"safetensors header of {header_len} bytes is too large")
        try:
            header = json.loads(handle.read(header_len))
        except RecursionError as exc:  # '[' * 200_000: the parser recurses once per level
            raise CheckpointError("safetensors header is nested too deeply to be read") from exc
        except ValueError as exc:  # UnicodeDecodeError included
            raise CheckpointError(f"safetensors header is not JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise CheckpointError("safetensors header is not a JSON object")
    data_len, total = file_size - 8 - header_len, 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        total += _tensor_bytes(str(name)[:80], entry, data_len)
    return total


def _tensor_bytes(name: str, entry: object, data_len: int) -> int:
    """Declared bytes of one safetensors entry, consistent with its offsets and the file."""
    if not isinstance(entry, dict):
        raise CheckpointError(f"safetensors entry {name!r} is not an object")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in _SAFETENSORS_DTYPE_BYTES:
        raise CheckpointError(f"safetensors entry {name!r} has an unknown dtype")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise CheckpointError(f"safetensors entry {name!r} has a malformed shape")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) for o in offsets)
        or not 0 <= offsets[0] <= offsets[1] <= data_len
    ):
        raise CheckpointError(f"safetensors entry {name!r} points outside the file")
    declared = math.prod(shape) * _SAFETENSORS_DTYPE_BYTES[str(dtype)]
    if declared != offsets[1] - offsets[0]:
        raise CheckpointError(f"safetensors entry {name!r} declares {declared} bytes, holds fewer")
    return declared
