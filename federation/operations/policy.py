"""The ``fed policy`` commands: list, show and check the policies of a directory.

Policies are found in ``--policies``, ``$FED_POLICIES`` or ``./policies``; sites as
for every command (``--sites``, ``$FED_SITES``, ``./sites``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from federation.errors import ConfigError
from federation.operations.sites import list_entries
from federation.policy import (
    Edge,
    Policy,
    PolicySet,
    Problem,
    check_policies,
    edges_of,
    order_edges,
    parse_policy,
    policies_dir,
    read_policies,
)
from federation.sites import SiteDefinition, check_site_name
from federation.yamlio import safe_load

PathLike = str | os.PathLike | None


@dataclass(frozen=True)
class Declared:
    """What a policies directory and a sites directory declare, read together."""

    policies: PolicySet
    sites: list[SiteDefinition]
    unreadable: dict[str, str]  # site definition files that cannot be read: name -> why

    @property
    def edges(self) -> list[Edge]:
        """Every (flow, destination) pair, ``to: all`` resolved, in pass order."""
        return order_edges(edges_of(self.policies.flows, self.sites))


def read_declared(policies: PathLike = None, sites: PathLike = None) -> Declared:
    """The policies and site definitions, as they are (problems not yet checked)."""
    entries = list_entries(sites)
    return Declared(read_policies(policies), [e.site for e in entries if e.site],
                      {e.path.stem: e.error or "" for e in entries if e.site is None})


def problems_of(declared: Declared) -> list[Problem]:
    """Every problem of the policies, against the sites; no policy at all is one."""
    found = check_policies(declared.policies, declared.sites, declared.unreadable)
    if not declared.policies.policies and not found:
        found.append(Problem(str(declared.policies.directory),
                             "no policy files (*.yaml) here (see --policies)"))
    return found


@dataclass(frozen=True)
class PolicyListing:
    """``fed policy list``: the flows that could be read, with their destinations, and the
    problems of the files (not checked against the sites: that is ``fed policy check``)."""

    policies: list[Policy]
    edges: list[Edge]
    problems: list[Problem]


def list_policies(policies: PathLike = None, sites: PathLike = None) -> PolicyListing:
    found = read_declared(policies, sites)
    return PolicyListing(list(found.policies.policies),
                         edges_of(found.policies.flows, found.sites),
                         list(found.policies.problems))


def show(name: str, policies: PathLike = None, sites: PathLike = None) -> dict[str, Any]:
    """One policy (``NAME``) or one flow (``NAME/FLOW``) as JSON-able data, each flow with
    the sites it goes to (``to: all`` resolved against the sites directory)."""
    policy_name, _, flow_name = name.partition("/")
    policy = load_policy(policy_name, policies)
    flows = [f for f in policy.flows if not flow_name or f.name == flow_name]
    if not flows:
        raise ConfigError(f"policy {policy.name} has no flow {flow_name!r} (flows: "
                          f"{', '.join(f.name for f in policy.flows)})")
    found = read_declared(policies, sites)
    edges = edges_of(flows, found.sites)
    shown = [f.to_dict() | {"destinations": [e.destination for e in edges if e.flow == f]}
             for f in flows]
    if flow_name:
        return shown[0] | {"file": str(policy.path)}
    return policy.to_dict() | {"flows": shown}


def load_policy(name: str, directory: PathLike = None) -> Policy:
    """The policy in ``NAME.yaml``; any problem of the file is an error (its first line)."""
    folder = policies_dir(directory)
    try:
        check_site_name(name)
    except ConfigError:
        raise ConfigError(f"invalid policy name {name!r}: use letters, digits, '-' and "
                          "'_'") from None
    path = folder / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(p.stem for p in sorted(folder.glob("*.yaml"))) or "none"
        raise ConfigError(f"unknown policy {name!r} (no {path}); policies: {known}")
    try:
        data = safe_load(path.read_text())
    except Exception as exc:  # noqa: BLE001 - YAML, encoding or I/O: one line says which
        raise ConfigError(f"{path}: cannot be read: {str(exc).splitlines()[0]}") from None
    policy, problems = parse_policy(data, path)
    if problems or policy is None:
        more = f" (and {len(problems) - 1} more: 'fed policy check')" \
            if len(problems) > 1 else ""
        raise ConfigError(f"{problems[0]}{more}")
    return policy


@dataclass(frozen=True)
class PolicyCheck:
    """``fed policy check``: what was checked, and every problem found."""

    directory: Path
    policies: int
    flows: int
    edges: int
    sites: int
    problems: list[Problem]


def check(policies: PathLike = None, sites: PathLike = None) -> PolicyCheck:
    """Every policy file against the schema and against the site definitions."""
    found = read_declared(policies, sites)
    return PolicyCheck(found.policies.directory, len(found.policies.policies),
                       len(found.policies.flows), len(found.edges), len(found.sites),
                       problems_of(found))
