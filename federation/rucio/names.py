"""Datastore paths as Rucio names (the identity mapping), and fed's collection names.

A file's Rucio name is its datastore path, unchanged: with an RSE whose ``lfn2pfn``
algorithm is ``identity`` the replica Rucio places lands where the registry expects the
file. A path that cannot be a name (ingested in place, escaping the root, characters
Rucio refuses) is reported with :func:`why_unmappable`, never raised: one such file must
not stop the others.

fed keeps its own Rucio collections under two prefixes no file may use:
``runs/<RUN>`` (a dataset per RUN collection) and ``releases/<NAME>`` (a container per
release, holding datasets ``releases/<NAME>/<RUN>``).
"""

from __future__ import annotations

import re

#: what a Rucio server accepts as a name (its generic schema), first character included
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")
#: Rucio's longest name
MAX_LENGTH = 250
#: prefixes of fed's own collections
RUNS, RELEASES = "runs/", "releases/"


def why_invalid(name: str) -> str | None:
    """Why ``name`` cannot be a Rucio name (of a file or a collection), or None."""
    if not name:
        return "an empty name"
    if len(name) > MAX_LENGTH:
        return f"longer than Rucio's {MAX_LENGTH} characters"
    if not NAME.match(name):
        bad = sorted({c for c in name if not re.match(r"[A-Za-z0-9._/-]", c)})
        if bad:
            return f"Rucio names cannot hold {' '.join(repr(c) for c in bad)}"
        return "a Rucio name starts with a letter or digit"
    if any(part in ("", ".", "..") for part in name.split("/")):
        return "empty, '.' or '..' path components"
    return None


def why_unmappable(path: str) -> str | None:
    """Why the datastore path ``path`` has no Rucio name, or None when it has one."""
    if path.startswith("/") or re.match(r"^[A-Za-z]:[\\/]", path):
        return "ingested in place (an absolute path): not in the datastore Rucio maps"
    why = why_invalid(path)
    if why is not None:
        return why
    if path.startswith((RUNS, RELEASES)):
        return f"paths under {RUNS} and {RELEASES} are reserved for fed's Rucio collections"
    return None


def rucio_name(path: str) -> str | None:
    """The Rucio name of a datastore path (the path itself), or None if it has none."""
    return None if why_unmappable(path) is not None else path


def run_dataset(run: str) -> str:
    """The Rucio dataset of a RUN collection's files."""
    return RUNS + run


def release_container(release: str) -> str:
    """The Rucio container of a release."""
    return RELEASES + release


def release_dataset(release: str, run: str) -> str:
    """The Rucio dataset of a release's files from one RUN."""
    return f"{RELEASES}{release}/{run}"
