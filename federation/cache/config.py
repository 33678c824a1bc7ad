"""A repository's ``cache:`` block in ``federation.yaml``: pull-through reads and the limit.

::

    cache:
      pull_through: true      # Butler.get of a dataset held at another site fetches it
      size_limit: 50GB        # bytes of fetched files kept here (none: no limit)
      sites: /srv/fed/sites   # site definitions to reach the holders (default $FED_SITES, ./sites)
      wait: 600               # seconds a reader waits for another one fetching (default 600)

A relative ``sites`` path is relative to the repository. The rest of the file is left
as it is when the block is written (``fed cache configure``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from federation import yamlio
from federation.config import CONFIG_NAME, RepoConfig
from federation.errors import ConfigError, InputError

_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9,
          "gb": 10**9, "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30,
          "tib": 2**40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")
DEFAULT_WAIT = 600.0


def parse_size(text: str | int, what: str = "size") -> int:
    """Bytes of ``50GB``, ``1.5 TB``, ``500MiB`` or a plain number of bytes."""
    if isinstance(text, int) and not isinstance(text, bool) and text >= 0:
        return text
    match = _SIZE.match(str(text))
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _UNITS:
        raise InputError(f"invalid {what} {text!r}: give bytes or a number with a unit "
                         "(kB, MB, GB, TB, KiB, MiB, GiB, TiB), e.g. 50GB")
    return int(float(match.group(1)) * _UNITS[unit])


@dataclass(frozen=True)
class CacheConfig:
    """How a repository reads datasets whose files are held at other sites."""

    pull_through: bool = False
    size_limit: int | None = None  # bytes; None: no limit
    sites: Path | None = None  # None: $FED_SITES or ./sites
    wait: float = DEFAULT_WAIT

    @classmethod
    def load(cls, repo: str | os.PathLike) -> CacheConfig:
        """The ``cache:`` block of a repository's configuration (defaults if none)."""
        root = RepoConfig.load(repo).root
        block = _read(root).get("cache") or {}
        where = f"{root / CONFIG_NAME}: cache"
        if not isinstance(block, dict):
            raise ConfigError(f"{where} must be a mapping")
        unknown = set(block) - {"pull_through", "size_limit", "sites", "wait"}
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} (known: "
                              "pull_through, size_limit, sites, wait)")
        pull = block.get("pull_through", False)
        if not isinstance(pull, bool):
            raise ConfigError(f"{where}: pull_through must be true or false, not {pull!r}")
        limit = block.get("size_limit")
        try:
            size_limit = None if limit in (None, "none") else parse_size(limit, "size_limit")
        except InputError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        sites = block.get("sites")
        if sites is not None and not isinstance(sites, str):
            raise ConfigError(f"{where}: sites must be a directory path, not {sites!r}")
        wait = block.get("wait", DEFAULT_WAIT)
        if isinstance(wait, bool) or not isinstance(wait, int | float) or wait < 0:
            raise ConfigError(f"{where}: wait must be a number of seconds, not {wait!r}")
        return cls(pull, size_limit, None if sites is None else root / sites, float(wait))

    def save(self, repo: str | os.PathLike) -> None:
        """Write this block into the repository's configuration, the rest unchanged."""
        root = RepoConfig.load(repo).root
        data = _read(root)
        block: dict[str, Any] = {"pull_through": self.pull_through,
                                 "size_limit": self.size_limit}
        if self.sites is not None:
            block["sites"] = str(self.sites)
        if self.wait != DEFAULT_WAIT:
            block["wait"] = self.wait
        data["cache"] = block
        path = root / CONFIG_NAME
        temp = path.with_name(f".{CONFIG_NAME}.tmp")
        temp.write_text("# federation repository configuration\n"
                        + yaml.safe_dump(data, sort_keys=False))
        os.replace(temp, path)

    def updated(self, *, pull_through: bool | None = None, size_limit: str | None = None,
                sites: Path | None = None, wait: float | None = None) -> CacheConfig:
        """This configuration with the given settings changed (``size_limit``: a size,
        or ``none``)."""
        changed = self
        if pull_through is not None:
            changed = replace(changed, pull_through=pull_through)
        if size_limit is not None:
            limit = None if size_limit.lower() == "none" else parse_size(size_limit,
                                                                          "--size-limit")
            changed = replace(changed, size_limit=limit)
        if sites is not None:
            changed = replace(changed, sites=Path(sites).absolute())
        if wait is not None:
            changed = replace(changed, wait=wait)
        return changed


def _read(root: Path) -> dict[str, Any]:
    path = root / CONFIG_NAME
    try:
        data = yamlio.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping")
    return data


def format_size(nbytes: float) -> str:
    """``12.3 GB``: a size as ``parse_size`` reads it back (decimal units)."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(nbytes) < 1000:
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1000
    return f"{nbytes:.1f} TB"
