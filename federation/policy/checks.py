"""Policies checked against the site definitions, and flows resolved into edges.

Besides each flow's own sites (known, not the source, writable, a release site only
for a release flow), two checks look at the flows together:

- **Same collections from two sources.** Two flows into one site from different
  sources whose collection globs can match one name (:func:`globs_overlap`: ``*``
  and ``HSC/raw/*`` can, ``HSC/raw/*`` and ``HSC/calib`` cannot; a release flow
  writes ``DR1`` and ``DR1/*``). The site would follow two sources for the same
  collections; take them from one. Globs are compared as written: a chain's
  children are not known without the registries.
- **Owner cycles.** A glob *belongs to* a site when every collection it can match is
  that site's (:func:`pattern_owner`). A flow that carries a site's own collections
  into that site brings them back to their owner (who refuses changes to them from
  elsewhere), and flows that carry one site's collections round a loop of other
  sites feed each other instead of following the owner: both are owner cycles.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from federation.policy.globs import globs_overlap, pattern_owner
from federation.policy.graph import components
from federation.policy.loader import PolicySet, Problem
from federation.policy.model import Edge, Flow
from federation.sites import SiteDefinition


def takes(site: SiteDefinition, flow: Flow, source: SiteDefinition | None) -> str | None:
    """Why ``site`` cannot take ``flow`` (None: it can)."""
    if site.read_only:
        return f"site {site.name} is read-only"
    if site.is_release_site and not flow.is_release:
        return f"site {site.name} is a release site: only a release flow may go into it"
    if site.is_remote and not site.kind.writable:
        return (f"site {site.name} is published read-only over {site.transport}: nothing "
                "can be pushed to it")
    if site.is_remote and source is not None and source.is_remote:
        return (f"sites {source.name} and {site.name} are both reached over the network: "
                "run this flow on a machine that holds one of them")
    if site.is_remote and flow.deletions == "keep" and not site.keep_deleted:
        return (f"site {site.name} is pushed to and applies deletions itself: 'deletions: "
                "keep' needs 'keep_deleted: true' in its own definition")
    return None


def edges_of(flows: Sequence[Flow], sites: Sequence[SiteDefinition]) -> list[Edge]:
    """Each flow's (source, destination) pairs; ``to: all`` is every defined site but the
    source that can take the flow (see :func:`takes`). Unknown sites are left out."""
    by_name = {site.name: site for site in sites}
    edges = []
    for flow in flows:
        source = by_name.get(flow.source)
        if source is None:
            continue
        if flow.to_all:
            names = [s.name for s in sites if s.name != flow.source
                     and takes(s, flow, source) is None]
        else:
            names = [n for n in flow.destinations or () if n in by_name and n != flow.source]
        edges += [Edge(flow, name) for name in names]
    return edges


def check_policies(policies: PolicySet, sites: Sequence[SiteDefinition],
                   unreadable: Mapping[str, str] | None = None) -> list[Problem]:
    """Every problem of the policies: their own, then against ``sites`` (``unreadable``:
    site definition files that could not be read, by site name, with why)."""
    paths = {p.name: str(p.path) for p in policies.policies}
    by_name = {site.name: site for site in sites}
    problems = list(policies.problems)
    for flow in policies.flows:
        where = paths[flow.policy]
        problems += [Problem(where, f"flow {flow.name!r}: {text}")
                     for text in _flow_problems(flow, by_name, unreadable or {})]
    edges = edges_of(policies.flows, sites)
    problems += _duplicates(edges, paths)
    problems += _shared_destinations(edges, paths)
    problems += _owner_cycles(edges, sites, paths)
    return problems


def _flow_problems(flow: Flow, sites: Mapping[str, SiteDefinition],
                   unreadable: Mapping[str, str]) -> list[str]:
    found = []

    def unknown(name: str, role: str) -> str:
        if name in unreadable:
            return f"{role} site {name}: its definition cannot be read ({unreadable[name]})"
        return f"unknown {role} site {name!r} (known: {', '.join(sorted(sites)) or 'none'})"

    source = sites.get(flow.source)
    if source is None:
        found.append(unknown(flow.source, "source"))
    for name in flow.destinations or ():
        if name == flow.source:
            found.append(f"'to' includes the source, {name}")
        elif name not in sites:
            found.append(unknown(name, "destination"))
        elif (why := takes(sites[name], flow, source)) is not None:
            found.append(why)
    if flow.to_all and source is not None and not any(
            takes(s, flow, source) is None for s in sites.values() if s.name != flow.source):
        found.append("'to: all' names no site: every other site is read-only, a release "
                     "site or out of reach")
    if flow.min_copies > max(len(sites) - 1, 1):
        found.append(f"'min_copies' is {flow.min_copies}, but only {len(sites) - 1} other "
                     "site(s) are defined: no drop could ever satisfy it")
    return found


def _duplicates(edges: list[Edge], paths: Mapping[str, str]) -> list[Problem]:
    """Two flows carrying the same selection between the same two sites."""
    seen: dict[tuple[str, str, str], Edge] = {}
    found = []
    for edge in edges:
        key = (edge.source, edge.destination, edge.flow.selection().key)
        if key in seen and seen[key].flow.key != edge.flow.key:
            found.append(Problem(paths[edge.flow.policy], (
                f"flow {edge.flow.name!r}: carries the same selection from {edge.source} to "
                f"{edge.destination} as flow {seen[key].flow.key}: keep one")))
        seen.setdefault(key, edge)
    return found


def _shared_destinations(edges: list[Edge], paths: Mapping[str, str]) -> list[Problem]:
    """Flows writing the same collections into one site from different sources."""
    found = []
    for i, first in enumerate(edges):
        for second in edges[i + 1:]:
            if first.destination != second.destination or first.source == second.source:
                continue
            pair = next(((a, b) for a in first.flow.collection_patterns()
                         for b in second.flow.collection_patterns() if globs_overlap(a, b)),
                        None)
            if pair is not None:
                found.append(Problem(paths[second.flow.policy], (
                    f"flow {second.flow.name!r}: writes collections matching {pair[1]!r} "
                    f"into {second.destination} from {second.source}, and flow "
                    f"{first.flow.key} writes {pair[0]!r} there from {first.source}: the "
                    "same collections from two sources; take them from one")))
    return found


def _owner_cycles(edges: list[Edge], sites: Sequence[SiteDefinition],
                  paths: Mapping[str, str]) -> list[Problem]:
    found = []
    carried: dict[str, list[Edge]] = {}  # owner -> edges carrying its collections
    for edge in edges:
        owners = {p: pattern_owner(p, sites) for p in edge.flow.collection_patterns()}
        for pattern, owner in owners.items():
            if owner == edge.destination:
                found.append(Problem(paths[edge.flow.policy], (
                    f"flow {edge.flow.name!r}: owner cycle: it carries {owner}'s own "
                    f"collections ({pattern!r}) back into {owner} from {edge.source}; "
                    f"they flow out from {owner}, which takes changes to them from no one")))
        for owner in {o for o in owners.values() if o is not None and o != edge.destination}:
            carried.setdefault(owner, []).append(edge)
    for owner, owned in sorted(carried.items()):
        arcs = [(e.source, e.destination) for e in owned]
        for group in components([n for arc in arcs for n in arc], arcs):
            if len(group) < 2:
                continue
            loop = sorted({e.flow.key for e in owned
                           if e.source in group and e.destination in group})
            first = next(e for e in owned if e.flow.key == loop[0])
            found.append(Problem(paths[first.flow.policy], (
                f"owner cycle: flows {', '.join(loop)} carry {owner}'s collections round "
                f"{', '.join(group)}; replicas should take them along paths that start "
                f"at {owner}")))
    return found
