"""From a site definition to the transports that reach its datastore and its outbox."""

from __future__ import annotations

import posixpath
from pathlib import Path

from federation.errors import ConfigError
from federation.sites import INBOX, OUTBOX, SiteDefinition
from federation.transport.base import Transport
from federation.transport.local import LocalTransport
from federation.transport.retry import RetryPolicy


def transport_for(site: SiteDefinition, folder: str = "root") -> Transport:
    """A transport rooted at the site's datastore (``folder="root"``), outbox or inbox."""
    if site.transport == "local":
        return LocalTransport({"root": site.root, "outbox": site.outbox,
                               "inbox": site.inbox}[folder] or site.root)
    if site.transport == "sftp":
        from federation.transport.sftp import SFTPTransport

        return SFTPTransport(sftp_settings(site), root=_sftp_folder(site, folder))
    if site.transport == "http":
        from federation.transport.http import HTTPSettings, HTTPTransport

        block = site.remote
        settings = HTTPSettings(block["url"], verify=block.get("verify", True),
                                timeout=float(block.get("timeout", 30)),
                                retry=RetryPolicy.from_options(block))
        if folder == "inbox":
            raise ConfigError(f"site {site.name} is published read-only over HTTP: nothing "
                              "can be pushed to it")
        url = block.get("outbox") or settings.url.rstrip("/") + f"/{OUTBOX}/"
        return HTTPTransport(settings, url=url if folder == "outbox" else None)
    raise ConfigError(f"site {site.name}: transport {site.transport!r} is not available")


def sftp_settings(site: SiteDefinition):
    """The SSH connection settings of an ``sftp`` site."""
    from federation.transport.sftp import SFTPSettings

    block = site.remote
    if site.transport != "sftp":
        raise ConfigError(f"site {site.name} is not reached over SFTP")
    key = block.get("key_file")
    return SFTPSettings(
        host=block["host"], root=block["root"], port=int(block.get("port", 22)),
        user=block.get("user"), key_file=Path(key) if key else None,
        known_hosts=Path(block.get("known_hosts", "~/.ssh/known_hosts")),
        timeout=float(block.get("timeout", 30)), retry=RetryPolicy.from_options(block))


def _sftp_folder(site: SiteDefinition, folder: str) -> str:
    root = site.remote["root"].rstrip("/") or "/"
    if folder == "root":
        return root
    default = posixpath.join(root, OUTBOX if folder == "outbox" else INBOX)
    return site.remote.get(folder) or default
