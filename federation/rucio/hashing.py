"""Rucio's checksums (adler32, md5) and the registry's (xxh3-128) in one read of a file.

Registering a file with Rucio needs the checksums Rucio verifies transfers with; the
registry's xxh3 is computed in the same read, so that a file that no longer matches its
record is refused before Rucio is told anything about it.
"""

from __future__ import annotations

import hashlib
import os
import zlib
from dataclasses import dataclass

import xxhash

from federation.datastore.checksum import CHUNK


@dataclass(frozen=True)
class Sums:
    """A file's size and its three checksums (hex digests)."""

    size: int
    xxh3: str
    adler32: str
    md5: str


def file_sums(path: str | os.PathLike) -> Sums:
    """Size, xxh3-128, adler32 and md5 of a file, read once."""
    xxh, md5, adler, size = xxhash.xxh3_128(), hashlib.md5(), 1, 0
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(CHUNK):
            size += len(chunk)
            xxh.update(chunk)
            md5.update(chunk)
            adler = zlib.adler32(chunk, adler)
    return Sums(size, xxh.hexdigest(), f"{adler & 0xFFFFFFFF:08x}", md5.hexdigest())
