"""The one table of transport kinds: what each is, and how its settings are read.

Site definitions name a kind (``transport: sftp``) and, for a remote kind, give a
block of the same name (``sftp: {...}``). Everything that depends on the kind
asks this table instead of comparing strings. Importing it is cheap: no
network library is loaded until a transport is opened.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from federation.errors import ConfigError
from federation.transport.settings import (
    INBOX,
    OUTBOX,
    HTTPSettings,
    LocalSettings,
    SFTPSettings,
    TransportSettings,
)

__all__ = ["INBOX", "KINDS", "OUTBOX", "TransportKind", "kind_of", "parse_settings"]


@dataclass(frozen=True)
class TransportKind:
    """One way of reaching a site."""

    name: str  # "local", "sftp", "http": the value of ``transport:``
    remote: bool  # reached over the network: its registry is read through its outbox
    writable: bool  # pushes allowed
    settings: type[TransportSettings]  # the typed settings class of this kind


KINDS: dict[str, TransportKind] = {kind.name: kind for kind in (
    TransportKind("local", remote=False, writable=True, settings=LocalSettings),
    TransportKind("sftp", remote=True, writable=True, settings=SFTPSettings),
    TransportKind("http", remote=True, writable=False, settings=HTTPSettings),
)}


def kind_of(name: object, where: str) -> TransportKind:
    """The kind called ``name``; ConfigError listing the known ones if there is none."""
    kind = KINDS.get(name) if isinstance(name, str) else None
    if kind is None:
        raise ConfigError(f"{where}: unknown transport {name!r}; use one of "
                          f"{', '.join(KINDS)}")
    return kind


def parse_settings(kind: str, block: Any, where: str, *,
                   base: Path | None = None) -> TransportSettings:
    """Validate a site definition's block for ``kind`` (its ``sftp:``/``http:`` mapping, or
    a local site's ``root``/``outbox``/``inbox``) into typed settings.

    Any problem is a ConfigError of one line naming ``where`` (the definition file) and the
    key. ``base`` is the directory relative local paths start from (default: the current one).
    """
    found = kind_of(kind, where)
    if not isinstance(block, dict):
        raise ConfigError(f"{where}: 'transport: {found.name}' needs a '{found.name}:' mapping")
    return found.settings.from_block(block, where, base=base)
