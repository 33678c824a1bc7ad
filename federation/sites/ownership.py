"""Which site owns a collection: the one whose longest owned prefix covers its name."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol


class Owner(Protocol):
    name: str
    owns: tuple[str, ...]


def under(collection: str, prefix: str) -> bool:
    """Whether ``collection`` is ``prefix`` or lies below it (``HSC/raw`` covers
    ``HSC/raw/all``, not ``HSC/rawdata``)."""
    prefix = prefix.rstrip("/")
    return collection == prefix or collection.startswith(prefix + "/")


def owner_by_prefix(collection: str, sites: Iterable[Owner]) -> str | None:
    """The site whose longest owned prefix covers ``collection``, if any."""
    best, length = None, -1
    for site in sites:
        for prefix in site.owns:
            if under(collection, prefix) and len(prefix) > length:
                best, length = site.name, len(prefix)
    return best
