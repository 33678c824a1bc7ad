"""xxh3-128 checksums of files, streamed in fixed-size chunks."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import xxhash

from federation.errors import InputError

CHUNK = 1 << 20

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"))


_buffers = threading.local()


def _hash_fd(fd: int) -> tuple[int, str]:
    """Size and digest of what ``fd`` reads, through one reused buffer per thread (a new
    buffer per chunk would cost more than hashing it)."""
    buffer = getattr(_buffers, "buffer", None)
    if buffer is None:
        buffer = _buffers.buffer = memoryview(bytearray(CHUNK))
    digest = xxhash.xxh3_128()
    size = 0
    while n := os.readv(fd, [buffer]):
        size += n
        digest.update(buffer[:n])
    return size, digest.hexdigest()


def descriptor_checksum(fd: int) -> tuple[int, str]:
    """``(size, xxh3-128 hex digest)`` of what an open file descriptor reads to its end."""
    return _hash_fd(fd)


def file_checksum(path: str | os.PathLike) -> tuple[int, str]:
    """Return ``(size, xxh3-128 hex digest)`` of a file, reading it once."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return _hash_fd(fd)
    finally:
        os.close(fd)


def file_kind(mode: int) -> str:
    """What a ``st_mode`` describes, in words (for messages about non-regular files)."""
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def regular_file_checksum(path: str | os.PathLike) -> tuple[int, str]:
    """Like :func:`file_checksum`, refusing anything but a regular file before reading.

    A FIFO would block the read forever and a device (``/dev/zero``) never
    ends, so the file is opened without blocking and checked on its open
    descriptor: nothing can swap it between the check and the read.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise InputError(f"{path} is {file_kind(mode)}, not a regular file")
        return _hash_fd(fd)
    finally:
        os.close(fd)


def bytes_checksum(data: bytes) -> str:
    return xxhash.xxh3_128_hexdigest(data)


def mismatch(actual: tuple[int, str], recorded: tuple[int, str]) -> str | None:
    """Describe how a file's (size, checksum) differs from its record's, or None.

    Both values are named, so nobody has to guess which side is which.
    """
    if actual[0] != recorded[0]:
        return f"size mismatch: the file has {actual[0]} bytes, its record says {recorded[0]}"
    if actual[1] != recorded[1]:
        return (f"checksum mismatch: the file's xxh3-128 is {actual[1]}, "
                f"its record says {recorded[1]}")
    return None


def verify_file(path: Path, size: int, checksum: str) -> str | None:
    """Why a file does not match its record (None when it does)."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        return f"unreadable ({exc.strerror})"
    if not stat.S_ISREG(info.st_mode):
        return f"not a regular file ({file_kind(info.st_mode)})"
    if info.st_size != size:
        return mismatch((info.st_size, ""), (size, checksum))
    try:
        actual = regular_file_checksum(path)
    except InputError as exc:  # replaced by something else since the stat
        return f"unreadable ({exc})"
    except OSError as exc:  # e.g. a file without read permission
        return f"unreadable ({exc.strerror})"
    return mismatch(actual, (size, checksum))
