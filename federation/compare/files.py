"""The files of compared datasets, each verified against its record before it is read.

A file in a local side's own datastore is read where it is. A file held at
another site (every file of a site reached over SFTP or HTTP, whose records
come from what it published; or a records-only copy at a local site) is read
from that site: in place when the site is on this machine, otherwise fetched
through its transport into a cache, ``CACHE/SITE/<its datastore path>``. Every
file's size and xxh3-128 must match the record first: a file that does not is
refused (one error naming the site, the dataset and both values), and a fetched
one is not kept. A cached file is verified again and reused; only the files
whose content is compared are fetched at all.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from federation.compare.model import FileInfo
from federation.datastore.checksum import mismatch, verify_file
from federation.errors import ChecksumError, ConfigError, FederationError
from federation.sites import SiteDefinition
from federation.transport.base import Transport, TransportError, check_relative

Advance = Callable[[int], None]


@dataclass(frozen=True)
class Wanted:
    """A file to read: whose it is (for messages), its record, and where it is when the
    side's own datastore holds it (None: it is held at the site its record names)."""

    side: str
    what: str
    info: FileInfo
    local: Path | None


class Files:
    """Brings wanted files to local, verified paths; counts what was fetched and reused."""

    def __init__(self, cache: Path, holders: Callable[[str], SiteDefinition],
                 jobs: int = 4) -> None:
        self.cache = cache
        self.holders = holders
        self.jobs = jobs
        self.fetched = self.fetched_bytes = self.reused = 0
        self._lock = threading.Lock()
        self._sites: dict[str, SiteDefinition] = {}
        self._transports: dict[str, Transport] = {}

    def close(self) -> None:
        for transport in self._transports.values():
            transport.close()
        self._transports.clear()

    def __enter__(self) -> Files:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def bring(self, wanted: Sequence[Wanted], advance: Advance | None = None
              ) -> dict[Wanted, Path]:
        """A verified local path for every wanted file (in parallel); the first failure
        stops the rest and is raised."""
        for want in wanted:  # unknown holders fail before any transfer starts
            if want.local is None and want.info.held_at is not None:
                self._site(want)
        found: dict[Wanted, Path] = {}
        pool = ThreadPoolExecutor(self.jobs)
        try:
            tasks = {pool.submit(self._one, want): want for want in dict.fromkeys(wanted)}
            for task in as_completed(tasks):
                found[tasks[task]] = task.result()
                if advance is not None:
                    advance(1)
        finally:  # on a failure (or Ctrl-C) the files not started are not fetched
            pool.shutdown(wait=True, cancel_futures=True)
        return found

    def _one(self, want: Wanted) -> Path:
        info = want.info
        if want.local is not None:
            return self._checked(want.local, want, f"{want.side}")
        site = self._site(want)
        if not site.is_remote:
            where = site.root / check_relative(info.path) if not os.path.isabs(info.path) \
                else Path(info.path)
            return self._checked(where, want, f"site {site.name}")
        return self._fetched(site, want)

    def _site(self, want: Wanted) -> SiteDefinition:
        name = want.info.held_at or ""
        with self._lock:
            if name not in self._sites:
                try:
                    self._sites[name] = self.holders(name)
                except FederationError as exc:
                    raise ConfigError(f"{want.side}: {want.what} is held at site {name}, "
                                      f"which cannot be reached from here: {exc}") from None
            return self._sites[name]

    def _checked(self, path: Path, want: Wanted, where: str) -> Path:
        problem = verify_file(path, want.info.size, want.info.checksum)
        if problem:
            raise ChecksumError(f"{where}: the file of {want.what} ({path}) does not match "
                                f"its record: {problem}; not compared (check it with "
                                "'fed verify')")
        return path

    def _transport(self, site: SiteDefinition) -> Transport:
        with self._lock:
            if site.name not in self._transports:
                self._transports[site.name] = site.open_files()
            return self._transports[site.name]

    def _fetched(self, site: SiteDefinition, want: Wanted) -> Path:
        info = want.info
        if os.path.isabs(info.path):
            raise TransportError(f"site {site.name}: {want.what} was ingested in place there "
                                 f"({info.path}); such files cannot be fetched")
        final = self.cache / site.name / check_relative(info.path)
        if final.is_file() and verify_file(final, info.size, info.checksum) is None:
            with self._lock:
                self.reused += 1
            return final
        final.parent.mkdir(parents=True, exist_ok=True)
        temp = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.part")
        received = 0

        def bounded(nbytes: int) -> None:
            nonlocal received
            received += nbytes
            if received > info.size:
                raise TransportError(f"site {site.name}: {info.path} sends more than the "
                                     f"{info.size} bytes of its record")

        try:
            got = self._transport(site).fetch(info.path, temp, size=info.size,
                                              on_bytes=bounded)
            problem = mismatch(got, (info.size, info.checksum))
            if problem:
                raise ChecksumError(
                    f"site {site.name}: the file of {want.what} ({info.path}), fetched over "
                    f"{site.transport.upper()}, does not match its record: {problem}; not "
                    f"compared (the copy at {site.name} is damaged: repair it there)")
            os.replace(temp, final)
        except TransportError as exc:
            raise TransportError(f"{want.what}: {exc}") from exc
        finally:
            temp.unlink(missing_ok=True)
            temp.with_name(temp.name + ".etag").unlink(missing_ok=True)
        with self._lock:
            self.fetched += 1
            self.fetched_bytes += info.size
        return final
