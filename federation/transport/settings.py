"""Typed settings of each kind of transport: where a site's files are and how to reach them.

Light on purpose: site definitions (read by every ``fed`` command, ``--help``
included) import this module, so it imports neither paramiko nor requests;
:meth:`TransportSettings.open` imports the transport module it needs. Those
modules never import this one, so there is no cycle.

``from_block`` validates the block of a site definition (``sftp:``, ``http:``,
or a local site's ``root``/``outbox``/``inbox``): any problem is a one-line
ConfigError naming the file and the key; unknown keys are errors.
"""

from __future__ import annotations

import abc
import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, NoReturn
from urllib.parse import urlsplit

from federation.errors import ConfigError
from federation.transport.base import Transport
from federation.transport.local import LocalTransport
from federation.transport.retry import RetryPolicy

#: A site's published bundles, under its datastore root unless its definition says otherwise.
OUTBOX = ".federation-outbox"
#: Where bundles pushed to a site wait for ``fed receive``.
INBOX = ".federation-inbox"
#: What :meth:`TransportSettings.open` can open: the datastore, the outbox or the inbox.
FOLDERS = ("root", "outbox", "inbox")


class TransportSettings(abc.ABC):
    """How one site is reached; each kind of transport has its own frozen dataclass."""

    kind: ClassVar[str]

    @classmethod
    @abc.abstractmethod
    def from_block(cls, block: dict[str, Any], where: str, *,
                   base: Path | None = None) -> TransportSettings:
        """Settings from a site definition's block, checked (``where`` names the file)."""

    @abc.abstractmethod
    def describe(self) -> str:
        """Where the site's datastore is, for listings and messages."""

    @abc.abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """The block as JSON-able values, defaults filled in (``from_block`` accepts it)."""

    @abc.abstractmethod
    def open(self, folder: str = "root") -> Transport:
        """A transport rooted at the site's datastore (``"root"``), outbox or inbox."""


def _check_folder(folder: str) -> None:
    if folder not in FOLDERS:
        raise ValueError(f"folder must be one of {', '.join(FOLDERS)}, not {folder!r}")


class _Block:
    """A block being checked: every problem names ``where`` and the key."""

    def __init__(self, block: dict[str, Any], where: str, label: str, allowed: set[str]) -> None:
        unknown = set(block) - allowed
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) in '{label}:': "
                              f"{', '.join(sorted(map(str, unknown)))}")
        self.block, self.where, self.label = block, where, label

    def fail(self, key: str, problem: str) -> NoReturn:
        raise ConfigError(f"{self.where}: '{self.label}: {key}' {problem}")

    def text(self, key: str, *, required: bool = False) -> str | None:
        value = self.block.get(key)
        if value is None and not required:
            return None
        if not isinstance(value, str) or not value:
            self.fail(key, "is required" if required and value in (None, "") else
                      "must be a string")
        return value

    def server_path(self, key: str, *, required: bool = False) -> str | None:
        value = self.text(key, required=required)
        if value is not None and not value.startswith("/"):
            self.fail(key, "must be an absolute path on the server")
        return value

    def url(self, key: str, *, required: bool = False) -> str | None:
        value = self.text(key, required=required)
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                self.fail(key, "must be an http:// or https:// URL")
        return value

    def integer(self, key: str, default: int, maximum: int | None = None) -> int:
        value = self.block.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            self.fail(key, "must be a positive integer")
        if maximum is not None and value > maximum:
            self.fail(key, f"must be at most {maximum}")
        return value

    def number(self, key: str, default: float) -> float:
        value = self.block.get(key, default)
        if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
            self.fail(key, "must be a positive number")
        return float(value)

    def retry(self) -> RetryPolicy:
        return RetryPolicy(attempts=self.integer("retries", RetryPolicy.attempts),
                           deadline=self.number("retry_deadline", RetryPolicy.deadline))


@dataclass(frozen=True)
class LocalSettings(TransportSettings):
    """A site on a filesystem this machine sees: its repository directory and folders."""

    kind: ClassVar[str] = "local"
    root: Path
    outbox: Path
    inbox: Path

    @classmethod
    def at(cls, root: Path) -> LocalSettings:
        """A site at ``root`` with the default outbox and inbox."""
        root = Path(root).resolve()
        return cls(root, root / OUTBOX, root / INBOX)

    @classmethod
    def from_block(cls, block: dict[str, Any], where: str, *,
                   base: Path | None = None) -> LocalSettings:
        """``root`` (required), ``outbox`` and ``inbox``; relative paths are relative to
        ``base`` (the definition's directory), ``~`` is expanded."""
        unknown = set(block) - {"root", "outbox", "inbox"}
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}")
        base = base if base is not None else Path.cwd()
        root = block.get("root")
        if not isinstance(root, str) or not root:
            raise ConfigError(f"{where}: 'root' is required and must be a string")
        settings = cls.at(base / Path(root).expanduser())
        folders = {}
        for key in ("outbox", "inbox"):
            value = block.get(key)
            if value is not None and (not isinstance(value, str) or not value):
                raise ConfigError(f"{where}: '{key}' must be a directory path")
            folders[key] = (base / Path(value).expanduser()).resolve() if value \
                else getattr(settings, key)
        return cls(settings.root, **folders)

    def describe(self) -> str:
        return str(self.root)

    def to_dict(self) -> dict[str, Any]:
        return {"root": str(self.root), "outbox": str(self.outbox), "inbox": str(self.inbox)}

    def open(self, folder: str = "root") -> Transport:
        _check_folder(folder)
        return LocalTransport(getattr(self, folder))


@dataclass(frozen=True)
class SFTPSettings(TransportSettings):
    """A site reached over SSH: the ``sftp:`` block of its definition."""

    kind: ClassVar[str] = "sftp"
    host: str
    root: str  # the datastore root on the server, absolute
    port: int = 22
    user: str | None = None
    key_file: Path | None = None  # None: the agent and ~/.ssh keys
    known_hosts: Path = Path("~/.ssh/known_hosts")
    timeout: float = 30.0  # seconds, per network operation
    retry: RetryPolicy = RetryPolicy()
    outbox: str | None = None  # None: ROOT/.federation-outbox
    inbox: str | None = None  # None: ROOT/.federation-inbox

    KEYS: ClassVar[set[str]] = {"host", "port", "user", "key_file", "known_hosts", "root",
                                "outbox", "inbox", "timeout", "retries", "retry_deadline"}

    @classmethod
    def from_block(cls, block: dict[str, Any], where: str, *,
                   base: Path | None = None) -> SFTPSettings:
        checked = _Block(block, where, cls.kind, cls.KEYS)
        host = checked.text("host", required=True)
        root = checked.server_path("root", required=True)
        key_file = checked.text("key_file")
        known_hosts = checked.text("known_hosts")
        assert host is not None and root is not None
        return cls(host=host, root=root, port=checked.integer("port", 22, maximum=65535),
                   user=checked.text("user"), key_file=Path(key_file) if key_file else None,
                   known_hosts=Path(known_hosts) if known_hosts else cls.known_hosts,
                   timeout=checked.number("timeout", cls.timeout), retry=checked.retry(),
                   outbox=checked.server_path("outbox"), inbox=checked.server_path("inbox"))

    @property
    def address(self) -> str:
        """The host as known_hosts names it."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"

    @property
    def known_hosts_file(self) -> Path:
        return self.known_hosts.expanduser()

    def folder(self, folder: str = "root") -> str:
        """The absolute path of the datastore, outbox or inbox on the server."""
        _check_folder(folder)
        root = self.root.rstrip("/") or "/"
        if folder == "root":
            return root
        return getattr(self, folder) or posixpath.join(root, OUTBOX if folder == "outbox"
                                                       else INBOX)

    def describe(self) -> str:
        return f"sftp://{self.host}:{self.port}{self.root}"

    def to_dict(self) -> dict[str, Any]:
        found = {"host": self.host, "port": self.port, "user": self.user,
                 "key_file": str(self.key_file) if self.key_file else None,
                 "known_hosts": str(self.known_hosts), "root": self.root,
                 "outbox": self.folder("outbox"), "inbox": self.folder("inbox"),
                 "timeout": self.timeout, "retries": self.retry.attempts,
                 "retry_deadline": self.retry.deadline}
        return {key: value for key, value in found.items() if value is not None}

    def open(self, folder: str = "root") -> Transport:
        from federation.transport.sftp import SFTPTransport  # paramiko: only when needed

        return SFTPTransport(self, self.folder(folder))


@dataclass(frozen=True)
class HTTPSettings(TransportSettings):
    """A site whose datastore a web server publishes read-only: the ``http:`` block."""

    kind: ClassVar[str] = "http"
    url: str  # the datastore root
    outbox: str | None = None  # None: URL/.federation-outbox/
    verify: bool | str = True  # False, or a CA bundle path, for private certificates
    timeout: float = 30.0  # seconds, per request
    retry: RetryPolicy = RetryPolicy()

    KEYS: ClassVar[set[str]] = {"url", "outbox", "verify", "timeout", "retries",
                                "retry_deadline"}

    @classmethod
    def from_block(cls, block: dict[str, Any], where: str, *,
                   base: Path | None = None) -> HTTPSettings:
        checked = _Block(block, where, cls.kind, cls.KEYS)
        url = checked.url("url", required=True)
        verify = block.get("verify", True)
        if not isinstance(verify, bool) and (not isinstance(verify, str) or not verify):
            checked.fail("verify", "must be true, false or a CA bundle path")
        assert url is not None
        return cls(url=url, outbox=checked.url("outbox"), verify=verify,
                   timeout=checked.number("timeout", cls.timeout), retry=checked.retry())

    def folder_url(self, folder: str = "root") -> str:
        """The URL of the datastore or the outbox; there is no inbox (read-only)."""
        _check_folder(folder)
        if folder == "inbox":
            raise ConfigError(f"{self.url} is published read-only over HTTP: nothing can be "
                              "pushed to it")
        if folder == "outbox":
            return self.outbox or self.url.rstrip("/") + f"/{OUTBOX}/"
        return self.url

    def describe(self) -> str:
        return self.url

    def to_dict(self) -> dict[str, Any]:
        return {"url": self.url, "outbox": self.folder_url("outbox"), "verify": self.verify,
                "timeout": self.timeout, "retries": self.retry.attempts,
                "retry_deadline": self.retry.deadline}

    def open(self, folder: str = "root") -> Transport:
        from federation.transport.http import HTTPTransport  # requests: only when needed

        return HTTPTransport(self.folder_url(folder), verify=self.verify,
                             timeout=self.timeout, retry=self.retry)
