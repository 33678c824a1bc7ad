"""A site on a filesystem this machine can see."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import xxhash

from federation.datastore.checksum import CHUNK
from federation.transport.base import (
    MissingFileError,
    OnBytes,
    RemoteFile,
    Transport,
    TransportError,
    check_relative,
)


class LocalTransport(Transport):
    """Files under ``root``; absolute paths (in-place ingests) are read as they are."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root).resolve()

    def describe(self) -> str:
        return str(self.root)

    def _path(self, path: str) -> Path:
        if os.path.isabs(path):
            return Path(path)
        return self.root.joinpath(*check_relative(path).split("/"))

    def stat(self, path: str) -> RemoteFile | None:
        try:
            return RemoteFile(path, self._path(path).stat().st_size)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise TransportError(f"cannot stat {path}: {exc.strerror}") from None

    def get(self, path: str, local: Path) -> None:
        try:
            shutil.copyfile(self._path(path), local)
        except FileNotFoundError:
            raise MissingFileError(f"{path} is missing at the source") from None
        except OSError as exc:
            raise TransportError(f"cannot copy {path}: {exc.strerror}") from None

    def fetch(self, path: str, local: Path, *, resume: bool = False,
              on_bytes: OnBytes | None = None, size: int | None = None) -> tuple[int, str]:
        """Copy and hash in one pass over the bytes (a local copy always starts over)."""
        digest = xxhash.xxh3_128()
        copied = 0
        try:
            with open(self._path(path), "rb", buffering=0) as src, \
                    open(local, "wb", buffering=0) as dst:
                while chunk := src.read(CHUNK):
                    digest.update(chunk)
                    dst.write(chunk)
                    copied += len(chunk)
                    if on_bytes is not None:
                        on_bytes(len(chunk))
        except FileNotFoundError:
            raise MissingFileError(f"{path} is missing at the source") from None
        except OSError as exc:
            raise TransportError(f"cannot copy {path}: {exc.strerror}") from None
        return copied, digest.hexdigest()

    def put(self, local: Path, path: str) -> None:
        target = self._path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:12]}")
        try:
            shutil.copyfile(local, temp)
            os.replace(temp, target)
        except OSError as exc:
            temp.unlink(missing_ok=True)
            raise TransportError(f"cannot write {path}: {exc.strerror}") from None

    def delete(self, path: str) -> None:
        self._path(path).unlink(missing_ok=True)
