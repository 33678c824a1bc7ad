"""A site's outbox: the bundles it publishes for sites that cannot read its registry.

``fed publish SITE`` (run where the registry is) writes one bundle of the
journal entries since the last published one, records only, and lists it in
``index.json``. Pullers read the index over SFTP or HTTP, fetch the bundles
they lack and keep their own cursor. The index is replaced atomically, so a
reader sees either the old list or the new one, never a bundle half-written.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from federation.errors import ConfigError, InputError
from federation.registry.cursors import Cursor
from federation.sites import SiteDefinition
from federation.sync.bundle.export import export_bundle
from federation.sync.logbook import logged
from federation.sync.report import Report
from federation.sync.selection import Selection
from federation.sync.site_access import open_site, sync_lock
from federation.transport.base import MissingFileError, Transport

INDEX = "index.json"
FORMAT = "federation-outbox"
VERSION = 1
#: What a site publishes: every collection and dataset type, records only (files
#: stay where they are, and pullers fetch the ones their selection wants).
PUBLISHED = Selection(files=False)
_BUNDLE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*\.bundle$")


@dataclass(frozen=True)
class PublishedBundle:
    name: str
    from_seq: int
    to_seq: int
    size: int
    sha256: str


@dataclass
class OutboxIndex:
    """The list of a site's published bundles; ``id`` changes when the outbox is reset."""

    site: str
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    bundles: list[PublishedBundle] = field(default_factory=list)
    instance: str = ""  # the publishing repository's instance id
    universe: dict[str, Any] | None = None  # its dimension universe, for mirrors to use

    @property
    def last_seq(self) -> int:
        return self.bundles[-1].to_seq if self.bundles else 0

    def to_json(self) -> bytes:
        data = {"format": FORMAT, "version": VERSION, "site": self.site, "id": self.id,
                "instance": self.instance, "universe": self.universe,
                "bundles": [asdict(b) for b in self.bundles]}
        return (json.dumps(data, indent=1) + "\n").encode()

    @classmethod
    def parse(cls, raw: bytes, where: str) -> OutboxIndex:
        """Check an index read from anywhere: it names files we will fetch."""
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InputError(f"{where} is not valid JSON ({exc})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise InputError(f"{where} is not a federation outbox index")
        if not isinstance(data.get("version"), int) or data["version"] > VERSION:
            raise InputError(f"{where} is outbox version {data.get('version')!r}; this "
                             f"federation reads version {VERSION}: upgrade federation")
        if not isinstance(data.get("site"), str) or not isinstance(data.get("id"), str):
            raise InputError(f"{where}: the index names no site or id")
        bundles = []
        previous = 0
        for item in data.get("bundles") or []:
            try:
                bundle = PublishedBundle(**item)
            except TypeError:
                raise InputError(f"{where}: malformed bundle entry {item!r}") from None
            ints = (bundle.from_seq, bundle.to_seq, bundle.size)
            if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in ints) \
                    or not isinstance(bundle.name, str) or not _BUNDLE_NAME.match(bundle.name) \
                    or not isinstance(bundle.sha256, str) or bundle.from_seq != previous \
                    or bundle.to_seq <= bundle.from_seq:
                raise InputError(f"{where}: invalid bundle entry {item!r}")
            previous = bundle.to_seq
            bundles.append(bundle)
        instance = data.get("instance", "")
        if not isinstance(instance, str):
            raise InputError(f"{where}: invalid instance {instance!r}")
        universe = data.get("universe")
        if universe is not None and not isinstance(universe, dict):
            raise InputError(f"{where}: invalid dimension universe")
        return cls(data["site"], data["id"], bundles, instance, universe)


@dataclass
class PublishResult:
    outbox: Path
    bundle: PublishedBundle | None  # None: nothing new since the last publish
    index: OutboxIndex

    def to_dict(self) -> dict[str, Any]:
        return {"outbox": str(self.outbox),
                "bundle": asdict(self.bundle) if self.bundle else None,
                "published_up_to": self.index.last_seq, "bundles": len(self.index.bundles)}


def fetch_index(outbox: Transport, site: str) -> OutboxIndex | None:
    """The index ``site`` published in the outbox ``outbox`` reaches; None if it has
    published nothing yet."""
    try:
        raw = outbox.read_bytes(INDEX)
    except MissingFileError:
        return None
    index = OutboxIndex.parse(raw, f"{site}'s outbox index")
    if index.site != site:
        raise InputError(f"the outbox at {outbox.describe()} belongs to site {index.site}, "
                         f"not {site}")
    return index


def read_index(outbox: Path, site: str) -> OutboxIndex:
    path = outbox / INDEX
    if not path.is_file():
        return OutboxIndex(site)
    index = OutboxIndex.parse(path.read_bytes(), str(path))
    if index.site != site:
        raise ConfigError(f"the outbox {outbox} belongs to site {index.site}, not {site}")
    return index


def publish(site: SiteDefinition, *, lock_timeout: float = 60.0) -> PublishResult:
    """Write a bundle of ``site``'s journal since its last published bundle to its outbox."""
    if site.is_remote:
        raise ConfigError(f"site {site.name} is reached over {site.transport}: publish it on "
                          "the machine that runs its registry")
    outbox = site.outbox
    try:
        outbox.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create outbox {outbox}: {exc.strerror}") from None
    with open_site(site) as butler, sync_lock(outbox, site.name, lock_timeout):
        index = read_index(outbox, site.name)
        if index.instance != butler.registry.instance:
            index = _new_outbox(outbox, site.name, butler.registry.instance, index)
        since = index.last_seq
        if butler.registry.db.last_seq() <= since:
            return PublishResult(outbox, None, index)
        with logged(butler, "publish", site.name, f"outbox {index.id[:12]}",
                    selection=PUBLISHED, cursor_from=since) as record:
            temp = outbox / f".publishing-{uuid.uuid4().hex[:12]}.bundle"
            try:
                result = export_bundle(site, temp, since=since, selection=PUBLISHED,
                                       butler=butler)
                upto = result.header.to_seq
                name = f"{site.name}-{since + 1:012d}-{upto:012d}.bundle"
                size, digest = sha256_of(temp)
                os.replace(temp, outbox / name)
            finally:
                temp.unlink(missing_ok=True)
            bundle = PublishedBundle(name, since, upto, size, digest)
            index.bundles.append(bundle)
            index.universe = butler.registry.universe.config
            write_atomically(outbox / INDEX, index.to_json())
            butler.registry.cursors.save(Cursor("publish", index.id, PUBLISHED.key, upto,
                                                PUBLISHED.to_dict()))
            record.report = Report(counts=result.counts, cursor=upto)
        return PublishResult(outbox, bundle, index)


def _new_outbox(outbox: Path, site: str, instance: str, old: OutboxIndex) -> OutboxIndex:
    """A fresh index for another repository instance (the site was rebuilt): the former
    instance's bundles go, and pullers see a new outbox id."""
    for bundle in old.bundles:
        (outbox / bundle.name).unlink(missing_ok=True)
    index = OutboxIndex(site, instance=instance)
    write_atomically(outbox / INDEX, index.to_json())
    return index


def write_atomically(path: Path, data: bytes) -> None:
    temp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:12]}")
    with open(temp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)


def sha256_of(path: Path) -> tuple[int, str]:
    """Size and SHA-256 of a file: how a published bundle is identified in the index."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()
