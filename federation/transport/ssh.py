"""SSH connections to a site (paramiko): host keys verified, credentials checked.

Host keys are checked against a known_hosts file; an unknown or changed key is
refused, and trusting a key is an explicit step (:func:`trust_host_key`).

The connection settings are described by :class:`SSHTarget`, which
``federation.transport.settings.SFTPSettings`` satisfies: this module does not
import the settings module, so that the settings can open an SFTP transport
lazily (keeping ``fed --help`` free of paramiko) without an import cycle.
"""

from __future__ import annotations

import logging
import socket
import uuid
from pathlib import Path
from typing import Any, Protocol

import paramiko

from federation.errors import ConfigError
from federation.transport.base import TransportError
from federation.transport.retry import RetryPolicy, TransientError

SSH_WINDOW = 64 << 20  # a large SSH window keeps loopback and long-haul links busy

# paramiko logs a dropped connection at ERROR level; we report it ourselves, once.
logging.getLogger("paramiko").addHandler(logging.NullHandler())
logging.getLogger("paramiko").propagate = False


class SSHTarget(Protocol):
    """Where and how to connect (read-only): what the ``sftp:`` block of a site gives."""

    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def user(self) -> str | None: ...
    @property
    def key_file(self) -> Path | None: ...
    @property
    def timeout(self) -> float: ...
    @property
    def retry(self) -> RetryPolicy: ...
    @property
    def address(self) -> str:
        """The host as known_hosts names it."""
    @property
    def known_hosts_file(self) -> Path:
        """The known_hosts file, ``~`` expanded."""


class HostKeyError(TransportError):
    """The server's host key is unknown or differs from the one on record."""


class AuthenticationError(TransportError):
    """The server refused our credentials."""


def fingerprint(key: paramiko.PKey) -> str:
    return key.fingerprint  # "SHA256:..." as ssh-keygen -l prints it


class _Refuse(paramiko.MissingHostKeyPolicy):
    """Refuse unknown keys, remembering the one offered so the error can show it."""

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str,
                         key: paramiko.PKey) -> None:
        raise HostKeyError(
            f"the host key of {hostname} is not known ({key.get_name()} {fingerprint(key)}): "
            f"check that fingerprint with the site's operators, then trust it with "
            f"'fed site trust SITE'")


def _load_host_keys(client: paramiko.SSHClient, path: Path) -> None:
    if path.is_file():
        try:
            client.load_host_keys(str(path))
        except (OSError, paramiko.SSHException) as exc:
            raise ConfigError(f"cannot read known_hosts file {path}: {exc}") from None


def _transport(sock: Any, **kwargs: Any) -> paramiko.Transport:
    """An SSH transport preferring AES-GCM: its integrity check runs in OpenSSL, where
    paramiko checks the MACs of the other ciphers in Python, byte by byte."""
    transport = paramiko.Transport(sock, **kwargs)
    options = transport.get_security_options()
    gcm = tuple(c for c in options.ciphers if c.endswith("-gcm@openssh.com"))
    options.ciphers = gcm + tuple(c for c in options.ciphers if c not in gcm)
    return transport


def connect(settings: SSHTarget) -> paramiko.SSHClient:
    """An authenticated SSH connection; HostKeyError/AuthenticationError/TransientError."""
    client = paramiko.SSHClient()
    _load_host_keys(client, settings.known_hosts_file)
    client.set_missing_host_key_policy(_Refuse())
    key_file = settings.key_file.expanduser() if settings.key_file else None
    if key_file is not None and not key_file.is_file():
        raise ConfigError(f"SSH key file {key_file} does not exist")
    where = f"{settings.user + '@' if settings.user else ''}{settings.host}:{settings.port}"
    try:
        client.connect(settings.host, settings.port, username=settings.user,
                       key_filename=str(key_file) if key_file else None,
                       look_for_keys=key_file is None, allow_agent=key_file is None,
                       timeout=settings.timeout, banner_timeout=settings.timeout,
                       auth_timeout=settings.timeout, channel_timeout=settings.timeout,
                       transport_factory=_transport)
    except HostKeyError:
        client.close()
        raise
    except paramiko.BadHostKeyException as exc:
        client.close()
        raise HostKeyError(
            f"the host key of {settings.address} has CHANGED: the server offered "
            f"{fingerprint(exc.key)} but {settings.known_hosts_file} records "
            f"{fingerprint(exc.expected_key)}. Someone may be intercepting the connection; if "
            f"the site really changed its key, remove the old entry and run "
            f"'fed site trust SITE'") from None
    except paramiko.AuthenticationException as exc:
        client.close()
        raise AuthenticationError(f"authentication failed for {where}"
                                  + (f" with key {key_file}" if key_file else "")
                                  + f": {exc}") from None
    except paramiko.PasswordRequiredException:
        client.close()
        raise AuthenticationError(f"the key {key_file} is encrypted; use an agent or an "
                                  "unencrypted key for unattended syncs") from None
    except (OSError, EOFError, paramiko.SSHException) as exc:
        client.close()
        raise TransientError(f"cannot connect to {where}: {reason(exc)}") from None
    transport = client.get_transport()
    assert transport is not None
    transport.window_size = SSH_WINDOW
    transport.default_window_size = SSH_WINDOW
    transport.set_keepalive(30)
    return client


def scan_host_key(settings: SSHTarget) -> paramiko.PKey:
    """The key a server offers, without authenticating (for `fed site trust`)."""
    try:
        sock = socket.create_connection((settings.host, settings.port), settings.timeout)
    except OSError as exc:
        raise TransportError(f"cannot connect to {settings.host}:{settings.port}: "
                             f"{reason(exc)}") from None
    transport = paramiko.Transport(sock)
    try:
        transport.start_client(timeout=settings.timeout)
        return transport.get_remote_server_key()
    except (OSError, EOFError, paramiko.SSHException) as exc:
        raise TransportError(f"{settings.host}:{settings.port} did not complete an SSH "
                             f"handshake: {reason(exc)}") from None
    finally:
        transport.close()


def trust_host_key(settings: SSHTarget, key: paramiko.PKey) -> Path:
    """Record ``key`` for the site's host in its known_hosts file (replacing an old one)."""
    path = settings.known_hosts_file
    keys = paramiko.HostKeys()
    if path.is_file():
        keys.load(str(path))
    if settings.address in keys:
        del keys[settings.address]
    keys.add(settings.address, key.get_name(), key)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    keys.save(str(temp))
    temp.replace(path)
    return path


def reason(exc: BaseException) -> str:
    """A short reason for a network error, for one-line messages."""
    errors = getattr(exc, "errors", None)  # paramiko's NoValidConnectionsError: per address
    if isinstance(errors, dict) and errors:
        exc = next(iter(errors.values()))
    if isinstance(exc, socket.timeout):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
