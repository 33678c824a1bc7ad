"""A site's ``rucio:`` block: which Rucio server holds its files, as whom, where.

Light on purpose, like :mod:`federation.transport.settings`: site definitions import it,
and it imports nothing of rucio-clients (:mod:`federation.rucio.session` does, when a
command first talks to a server)::

    rucio:
      url: https://rucio.example.org       # the server (auth_url: when auth is elsewhere)
      account: fed_ncsa
      auth_type: userpass                  # or x509, x509_proxy, oidc (token_file:)
      username: fed_ncsa
      password_env: FED_RUCIO_PASSWORD     # the password is read from this variable
      scope: hsc                           # the scope every site of the federation uses
      rse: NCSA_DISK                       # this site's RSE
      wait: 86400                          # seconds a sync waits for Rucio, at most

With the identity mapping the datastore path of a file is its Rucio name, and the RSE
puts it at ``PREFIX/SCOPE/NAME``: the site's datastore root is the RSE's prefix followed
by the scope (a repository directory named for the scope, as Rubin's are).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

from federation.errors import ConfigError

if TYPE_CHECKING:
    from federation.transport.base import Transport

#: what rucio-clients can authenticate with, and the keys each needs
AUTH_TYPES = {"userpass": ("username",), "x509": ("certificate",),
              "x509_proxy": ("proxy",), "oidc": ()}
#: Rucio's own rule for scope and RSE names (the generic schema)
SCOPE = re.compile(r"^[A-Za-z0-9_.-]{1,25}$")
RSE = re.compile(r"^[A-Za-z0-9_.-]{1,255}$")


@dataclass(frozen=True)
class RucioSettings:
    """How a site's files are reached through Rucio."""

    url: str
    account: str
    scope: str
    rse: str
    auth_type: str = "userpass"
    auth_url: str | None = None  # None: the server's URL
    username: str | None = None
    password: str | None = None  # given inline (prefer password_env)
    password_env: str | None = None  # the environment variable holding the password
    certificate: Path | None = None  # x509: the user certificate
    key: Path | None = None  # x509: its key (default: in the certificate file)
    proxy: Path | None = None  # x509_proxy: the proxy file
    #: oidc: a file holding a bearer token (else WLCG token discovery: $BEARER_TOKEN, ...)
    token_file: Path | None = None
    ca_cert: bool | str = True  # verify the server's certificate (or a CA bundle path)
    timeout: float = 60.0  # seconds, per request
    poll: float = 5.0  # seconds between two looks at rules being replicated
    wait: float = 86400.0  # seconds a sync waits for Rucio to bring its files, at most

    KEYS: ClassVar[set[str]] = {"url", "auth_url", "account", "scope", "rse", "auth_type",
                                "username", "password", "password_env", "certificate",
                                "key", "proxy", "token_file", "ca_cert", "timeout", "poll", "wait"}

    @classmethod
    def from_block(cls, block: Any, where: str, *, base: Path | None = None) -> RucioSettings:
        """The checked block (``where`` names the definition file in every error)."""
        if not isinstance(block, dict):
            raise ConfigError(f"{where}: 'rucio:' must be a mapping")
        unknown = set(block) - cls.KEYS
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) in 'rucio:': "
                              f"{', '.join(sorted(map(str, unknown)))}")

        def fail(key: str, problem: str):
            raise ConfigError(f"{where}: 'rucio: {key}' {problem}")

        def text(key: str, required: bool = False) -> str | None:
            value = block.get(key)
            if value is None and not required:
                return None
            if not isinstance(value, str) or not value:
                fail(key, "is required" if value in (None, "") else "must be a string")
            return value

        def url(key: str, required: bool = False) -> str | None:
            value = text(key, required)
            if value is not None:
                parts = urlsplit(value)
                if parts.scheme not in ("http", "https") or not parts.netloc:
                    fail(key, "must be an http:// or https:// URL")
            return value

        def path(key: str) -> Path | None:
            value = text(key)
            return None if value is None else (base or Path.cwd()) / Path(value).expanduser()

        def number(key: str, default: float) -> float:
            value = block.get(key, default)
            if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
                fail(key, "must be a positive number")
            return float(value)

        auth_type = block.get("auth_type", "userpass")
        if auth_type not in AUTH_TYPES:
            fail("auth_type", f"must be one of {', '.join(AUTH_TYPES)}, not {auth_type!r}")
        scope, rse = text("scope", True), text("rse", True)
        if not SCOPE.match(scope):
            fail("scope", "must be letters, digits, '_', '-' or '.' (at most 25)")
        if not RSE.match(rse):
            fail("rse", "must be letters, digits, '_', '-' or '.'")
        for needed in AUTH_TYPES[auth_type]:
            if block.get(needed) is None:
                fail(needed, f"is required with auth_type {auth_type}")
        if auth_type == "userpass" and block.get("password") is None \
                and block.get("password_env") is None:
            fail("password_env", "is required with auth_type userpass (or give 'password')")
        ca_cert = block.get("ca_cert", True)
        if not isinstance(ca_cert, bool) and (not isinstance(ca_cert, str) or not ca_cert):
            fail("ca_cert", "must be true, false or a CA bundle path")
        return cls(url=url("url", True), account=text("account", True), scope=scope, rse=rse,
                   auth_type=auth_type, auth_url=url("auth_url"), username=text("username"),
                   password=text("password"), password_env=text("password_env"),
                   certificate=path("certificate"), key=path("key"), proxy=path("proxy"),
                   token_file=path("token_file"),
                   ca_cert=ca_cert, timeout=number("timeout", cls.timeout),
                   poll=number("poll", cls.poll), wait=number("wait", cls.wait))

    def describe(self) -> str:
        return f"{self.rse} at {self.url} (scope {self.scope}, account {self.account})"

    def open(self, site: str) -> Transport:
        """A transport to the files of ``site`` (named in messages) on its RSE."""
        from federation.rucio.session import RucioSession  # rucio-clients: only when needed
        from federation.rucio.transport import RucioTransport

        return RucioTransport(RucioSession(self, site))

    def to_dict(self) -> dict[str, Any]:
        """The block with defaults filled in, without any secret."""
        found = {"url": self.url, "auth_url": self.auth_url, "account": self.account,
                 "scope": self.scope, "rse": self.rse, "auth_type": self.auth_type,
                 "username": self.username, "password_env": self.password_env,
                 "certificate": str(self.certificate) if self.certificate else None,
                 "key": str(self.key) if self.key else None,
                 "proxy": str(self.proxy) if self.proxy else None,
                 "token_file": str(self.token_file) if self.token_file else None,
                 "ca_cert": self.ca_cert, "timeout": self.timeout, "poll": self.poll,
                 "wait": self.wait}
        return {key: value for key, value in found.items() if value is not None}
