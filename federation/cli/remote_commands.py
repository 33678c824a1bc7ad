"""`fed publish`, `fed receive` and `fed site trust`: working with sites over the network."""

from __future__ import annotations

import sys

import click

from federation.cli import render, sync_render
from federation.cli.federation_commands import SITES, site


@click.command()
@click.argument("name")
@click.option("--wait", type=click.FloatRange(0), default=60.0, show_default=True,
              help="Seconds to wait for another publish of this site to finish.")
@SITES
@render.JSON_OPTION
def publish(name, wait, sites_dir, as_json) -> None:
    """Write site NAME's new journal entries as a bundle into its outbox.

    Run it where NAME's registry is (e.g. from cron). Sites that reach NAME
    over SFTP or HTTP read the outbox (default ROOT/.federation-outbox) and
    keep their own cursors; the bundle holds records only, files are fetched
    from the datastore as each puller's selection needs them.
    """
    from federation.operations.sync import publish_site

    result = publish_site(name, lock_timeout=wait, sites_dir=sites_dir)
    if as_json:
        render.as_json(result.to_dict())
    elif result.bundle is None:
        click.echo(f"{name}: nothing new since journal entry {result.index.last_seq}")
    else:
        b = result.bundle
        click.echo(f"{name}: published journal entries {b.from_seq + 1}..{b.to_seq} as "
                   f"{result.outbox / b.name} ({b.size:,} bytes)")


@click.command()
@click.argument("name")
@click.option("--on-conflict", type=click.Choice(["fail", "skip"]), default="fail",
              show_default=True,
              help="fail: stop at a bundle that conflicts; skip: apply the rest.")
@click.option("--jobs", "-j", type=click.IntRange(1, 64), default=None,
              help="Files copied in parallel (default 1: one disk gains nothing from more).")
@click.option("--wait", type=click.FloatRange(0), default=60.0, show_default=True,
              help="Seconds to wait for a sync into NAME to finish.")
@SITES
@render.JSON_OPTION
def receive(name, on_conflict, jobs, wait, sites_dir, as_json) -> None:
    """Import the bundles other sites pushed into site NAME's inbox, oldest first.

    Each bundle is validated whole and its files verified before anything is
    written; applied bundles move to INBOX/done. A bundle that fails stays in
    the inbox, and the ones after it wait.
    """
    from federation.operations.sync import receive_site
    from federation.sync.options import SyncOptions

    options = SyncOptions(on_conflict=on_conflict, jobs=jobs, lock_timeout=wait)
    results = receive_site(name, options, sites_dir=sites_dir)
    if as_json:
        render.as_json([{"bundle": b} | r.to_dict() for b, r in results])
        return
    if not results:
        click.echo(f"{name}: the inbox is empty")
    for bundle, report in results:
        sync_render.report(report, False, dry_run=False, title=bundle)
    if any(r.failed for _, r in results):
        sys.exit(1)


@site.command("trust")
@click.argument("name")
@click.option("--fingerprint", metavar="SHA256:...",
              help="The fingerprint the site's operators gave you; the key is trusted only if "
                   "it matches.")
@click.option("--yes", is_flag=True, help="Trust the key shown without asking.")
@SITES
def site_trust(name, fingerprint, yes, sites_dir) -> None:
    """Record the SSH host key of site NAME in its known_hosts file.

    Shows the key the server offers; with --fingerprint it must match, else
    you are asked to confirm (or pass --yes). Syncs never trust a key silently:
    an unknown or changed key stops them.
    """
    from federation.errors import FederationError
    from federation.operations.sites import offered_key, trust_key

    offered = offered_key(name, sites_dir)
    click.echo(f"{offered.address} offers {offered.key_type} key {offered.fingerprint}")
    if fingerprint is not None and fingerprint != offered.fingerprint:
        raise FederationError(f"the key offered by {offered.address} ({offered.fingerprint}) "
                              f"does not match --fingerprint {fingerprint}; nothing trusted")
    if fingerprint is None and not yes and not click.confirm("Trust this key?", default=False):
        raise FederationError("not trusted")
    path = trust_key(offered, sites_dir)
    click.echo(f"trusted: recorded in {path}")
