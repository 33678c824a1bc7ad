"""``fed rucio register``: tell a site's Rucio about the files its registry holds.

The site must have a ``rucio:`` block and its repository must be on this machine (its
files are read). Before anything is registered the RSE's mapping is checked once: Rucio
must put a name exactly where the datastore has the file of that path (the identity
mapping), or every replica Rucio later makes elsewhere would land where no registry
looks.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import unquote, urlsplit

from federation.butler import Butler
from federation.errors import ConfigError, InputError
from federation.operations.selection import refuse_unmatched
from federation.registry.source import SourceStates
from federation.rucio.names import release_container, rucio_name, why_invalid
from federation.rucio.register import Registered, Registrable, register, register_release
from federation.rucio.session import RucioSession
from federation.sites import SiteDefinition, load_site
from federation.sync.progress import Progress
from federation.sync.selection import Selection
from federation.sync.site_access import open_site

#: files read in parallel by default
JOBS = 4


def register_site(site_name: str, selection: Selection | None = None, *,
                  release: str | None = None, sites_dir: str | os.PathLike | None = None,
                  jobs: int | None = None, progress: Progress | None = None) -> Registered:
    """Register the selected stored files of ``site_name`` (or those of ``release``) with
    the site's Rucio, as replicas on its RSE."""
    site = load_site(site_name, sites_dir)
    if site.rucio is None:
        raise ConfigError(f"site {site.name} has no 'rucio:' block in its definition: its "
                          "files are not replicated through Rucio")
    if site.is_remote:
        raise ConfigError(f"site {site.name} is reached over {site.transport}: run fed rucio "
                          "register on the machine that holds its files")
    selection = selection or Selection()
    if selection.release is not None:
        release, selection = release or selection.release, Selection()
    if release is not None and not selection.is_full:
        raise InputError("--release registers a release whole: give it without -c, -t or "
                         "--where")
    if release is not None and (why := why_invalid(release_container(release))):
        raise InputError(f"release {release!r} cannot be named in Rucio "
                         f"({release_container(release)}): {why}")
    session = RucioSession(site.rucio, site.name)
    with open_site(site) as butler:
        files, elsewhere = _files(butler, selection, release)
        root = Path(butler.datastore.root)
        _check_mapping(session, root, files)
        if release is None:
            result = register(session, root, files, jobs=jobs or JOBS, progress=progress)
            result.not_here = len(elsewhere)
        else:
            result = register_release(session, root, release, files, jobs=jobs or JOBS,
                                      progress=progress, missing=elsewhere)
    result.calls = session.calls  # the mapping's check and the login included
    return result


def _files(butler: Butler, selection: Selection, release: str | None
           ) -> tuple[list[Registrable], dict[str, str]]:
    """The selected datasets' files here, and the selected datasets without one here (by
    path, or ``dataset ID`` when they have no file at all) with why."""
    registry = butler.registry
    if release is not None:
        registry.releases.get(release)  # an unknown release: one line
        ids = [e.dataset_id for e in registry.releases.entries(release)]
    else:
        refuse_unmatched(registry.site, butler, selection, "nothing was registered")
        if selection.is_full:
            ids = [i for i, _, held in registry.datasets.iter_files() if held is None]
        else:
            refs = butler.query_datasets(_globs(selection.dataset_types),
                                         list(selection.collections), where=selection.where,
                                         bind=selection.bind_dict, find_first=False)
            ids = list(dict.fromkeys(r.id for r in refs))
    here, elsewhere = [], {}
    for state in SourceStates(registry).datasets(ids):
        if state.file is None:
            elsewhere[f"dataset {state.id}"] = "no file (a dataset of records only)"
        elif state.held_at is not None:
            elsewhere[state.file.path] = f"not here: held at {state.held_at}"
        else:
            here.append(Registrable.of(state))
    return here, elsewhere


def _globs(patterns: Sequence[str]) -> list[str] | None:
    return None if tuple(patterns) == ("*",) else list(patterns)


def check_rucio(site: SiteDefinition) -> str:
    """``fed site check`` of a site with a ``rucio:`` block: log in, and (for a site on this
    machine) check that its RSE puts each name where the datastore has that path."""
    assert site.rucio is not None
    session = RucioSession(site.rucio, site.name)
    account = session.whoami()
    if not site.is_remote:
        _check_mapping(session, site.root, [], probe="fed-check/identity-probe")
    return f"Rucio account {account} on {site.rucio.rse} at {site.rucio.url}"


def _check_mapping(session: RucioSession, root: Path, files: Sequence[Registrable], *,
                   probe: str | None = None) -> None:
    """Refuse an RSE that does not map a name to the datastore's file of that path."""
    name = next((n for f in files if (n := rucio_name(f.path)) is not None), probe)
    if name is None:
        return
    rse = session.settings.rse
    pfn = session.pfns(rse, [name], "write").get(name)
    if pfn is None:
        raise ConfigError(f"the RSE {rse} gives no path for {name}: fed needs the identity "
                          "mapping (set the RSE attribute lfn2pfn_algorithm=identity)")
    parts = urlsplit(pfn)
    if parts.scheme != "file":
        return  # reached otherwise: only a local path can be compared with the datastore's
    if Path(os.path.realpath(unquote(parts.path))) != Path(os.path.realpath(root / name)):
        raise ConfigError(
            f"the RSE {rse} maps {name} to {pfn}; fed needs the identity mapping: the "
            f"datastore root ({root}) must be the RSE prefix followed by the scope "
            f"({session.settings.scope}) (set the RSE attribute lfn2pfn_algorithm=identity)")

