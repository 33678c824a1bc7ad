"""xxh3-128 checksums of files, streamed in fixed-size chunks."""

from __future__ import annotations

import os
from pathlib import Path

import xxhash

CHUNK = 1 << 20


def file_checksum(path: str | os.PathLike) -> tuple[int, str]:
    """Return ``(size, xxh3-128 hex digest)`` of a file, reading it once."""
    digest = xxhash.xxh3_128()
    size = 0
    fd = os.open(path, os.O_RDONLY)
    try:
        while chunk := os.read(fd, CHUNK):
            size += len(chunk)
            digest.update(chunk)
    finally:
        os.close(fd)
    return size, digest.hexdigest()


def bytes_checksum(data: bytes) -> str:
    return xxhash.xxh3_128_hexdigest(data)


def verify_file(path: Path, size: int, checksum: str) -> str | None:
    """Why a file does not match its record (None when it does)."""
    try:
        actual_size = path.stat().st_size
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        return f"unreadable ({exc.strerror})"
    if actual_size != size:
        return f"size {actual_size} != recorded {size}"
    try:
        actual = file_checksum(path)[1]
    except OSError as exc:  # e.g. a directory or a file without read permission
        return f"unreadable ({exc.strerror})"
    if actual != checksum:
        return "checksum mismatch"
    return None
