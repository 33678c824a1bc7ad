"""Another site's files asked for under this repository's paths.

A site on this machine may record a dataset's file under another path than this
repository does (a path taken by another file when it arrived, a file ingested in
place there); ``fed repair`` and pull-through reads ask it for the file at its path.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from federation.transport.base import FetchRequest, OnBytes, RemoteFile, Transport, TransportError


class RenamedTransport(Transport):
    """Another site's files, asked for under this repository's paths (a site on this
    machine may record a dataset's file under another path). Read only."""

    writable = False

    def __init__(self, inner: Transport, paths: dict[str, str]) -> None:
        self.inner, self.paths = inner, paths
        self.batches, self.parallel = inner.batches, inner.parallel

    def _their(self, path: str) -> str:
        return self.paths.get(path, path)

    def stat(self, path: str) -> RemoteFile | None:
        return self.inner.stat(self._their(path))

    def get(self, path: str, local: Path) -> None:
        self.inner.get(self._their(path), local)

    def fetch(self, path: str, local: Path, *, resume: bool = False,
              on_bytes: OnBytes | None = None, size: int | None = None) -> tuple[int, str]:
        return self.inner.fetch(self._their(path), local, resume=resume, on_bytes=on_bytes,
                                size=size)

    def fetch_many(self, requests: Sequence[FetchRequest], *, on_bytes: OnBytes | None = None
                   ) -> Iterator[tuple[FetchRequest, tuple[int, str] | TransportError]]:
        asked = {FetchRequest(self._their(r.path), r.local, r.size): r for r in requests}
        for request, outcome in self.inner.fetch_many(list(asked), on_bytes=on_bytes):
            yield asked[request], outcome

    def list(self, prefix: str = "") -> Iterator[RemoteFile]:
        raise TransportError("listing is not offered here")

    def rename(self, src: str, dst: str) -> None:
        raise TransportError("read only")

    def put(self, local: Path, path: str) -> None:
        raise TransportError("read only")

    def delete(self, path: str) -> None:
        raise TransportError("read only")

    def describe(self) -> str:
        return self.inner.describe()

    def close(self) -> None:
        self.inner.close()
