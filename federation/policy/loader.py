"""Reading policy files: ``policies/NAME.yaml``, every problem found, one line each.

A policy file::

    description: raw data and calibrations, from their home to the replicas
    flows:
      - name: raw-calib
        from: NCSA
        to: [IN2P3, Princeton]          # or: all (every site that can take it but NCSA)
        collections: [HSC/raw/*, HSC/calib, HSC/calib/*, HSC/defaults]
        dataset_types: [raw, bias]      # default: all
        where: "exposure > :first"      # optional, with its bind values
        bind: {first: 903334}
        files: true                     # false: records only (files stay held at the source)
        on_conflict: fail               # or skip
        deletions: propagate            # or keep: the destinations keep what NCSA deletes
        min_copies: 1
        interval: 10m                   # how often it is due (30s, 10m, 1h, 1d; default 1h)
        enabled: true

A release flow names ``release: DR1`` instead of collections, types and ``where``.
Unknown keys, wrong types and bad values are problems; every one is reported
(the flows without problems are kept, so that they can be checked further).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from federation import yamlio
from federation.errors import FederationError
from federation.policy.model import (
    ALL_SITES,
    DELETIONS,
    ON_CONFLICT,
    Flow,
    Policy,
    parse_interval,
)
from federation.registry.where import parse_where
from federation.sites.loader import NAME

POLICIES_ENV = "FED_POLICIES"
_POLICY_KEYS = {"name", "description", "flows"}
_FLOW_KEYS = {"name", "description", "from", "to", "collections", "dataset_types", "where",
              "bind", "release", "files", "on_conflict", "deletions", "min_copies",
              "interval", "enabled"}


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the policies: where (a file), and what."""

    where: str
    text: str

    def __str__(self) -> str:
        return f"{self.where}: {self.text}"


@dataclass(frozen=True)
class PolicySet:
    """The policies of a directory: those that could be read, and every problem found."""

    directory: Path
    policies: tuple[Policy, ...]
    problems: tuple[Problem, ...]

    @property
    def flows(self) -> list[Flow]:
        return [flow for policy in self.policies for flow in policy.flows]


def policies_dir(explicit: str | os.PathLike | None = None) -> Path:
    """The directory of policies: explicit, $FED_POLICIES, or ./policies."""
    return Path(explicit or os.environ.get(POLICIES_ENV) or "policies")


def read_policies(directory: str | os.PathLike | None = None) -> PolicySet:
    """Every ``*.yaml`` of the policies directory, validated; problems collected."""
    folder = policies_dir(directory)
    if not folder.is_dir():
        return PolicySet(folder, (), (Problem(str(folder), "no such directory (see "
                                                           "--policies or $FED_POLICIES)"),))
    policies, problems = [], []
    for path in sorted(folder.glob("*.yaml")):
        try:
            data = yamlio.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            problems.append(Problem(str(path), f"not valid YAML: {str(exc).splitlines()[0]}"))
            continue
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(Problem(str(path), f"cannot be read: {exc}"))
            continue
        policy, found = parse_policy(data, path)
        problems += found
        if policy is not None:
            policies.append(policy)
    return PolicySet(folder, tuple(policies), tuple(problems))


def parse_policy(data: Any, path: Path) -> tuple[Policy | None, list[Problem]]:
    """A policy file's contents, validated: the policy (with its valid flows) and the
    problems found. The policy is named after its file."""
    where, name = str(path), path.stem
    if not isinstance(data, dict):
        return None, [Problem(where, "a policy must be a mapping with a 'flows:' list")]
    problems = [Problem(where, text) for text in _policy_problems(data, name)]
    flows_data = data.get("flows")
    if not isinstance(flows_data, list) or not flows_data:
        problems.append(Problem(where, "'flows' must be a non-empty list of flows"))
        flows_data = []
    flows, names = [], set()
    for index, item in enumerate(flows_data, 1):
        label = _label(item, index)
        flow, found = _parse_flow(item, name)
        problems += [Problem(where, f"{label}: {text}") for text in found]
        given = item.get("name") if isinstance(item, dict) else None
        if isinstance(given, str) and given in names:
            problems.append(Problem(where, f"{label}: another flow of this policy has "
                                           "that name"))
            continue
        names.add(given)
        if flow is not None:
            flows.append(flow)
    description = data.get("description", "")
    return Policy(name, path, tuple(flows),
                  description if isinstance(description, str) else ""), problems


def _policy_problems(data: dict, name: str) -> list[str]:
    found = []
    unknown = set(data) - _POLICY_KEYS
    if unknown:
        found.append(f"unknown key(s) {', '.join(sorted(map(str, unknown)))} (a policy has "
                     "name, description, flows)")
    if not NAME.match(name):
        found.append(f"invalid policy name {name!r} (the file name): use letters, digits, "
                     "'-' and '_'")
    if "name" in data and data["name"] != name:
        found.append(f"'name' is {data['name']!r}, but a policy is named after its file "
                     f"({name!r})")
    if not isinstance(data.get("description", ""), str):
        found.append("'description' must be a string")
    return found


def _label(item: Any, index: int) -> str:
    name = item.get("name") if isinstance(item, dict) else None
    return f"flow {name!r}" if isinstance(name, str) and name else f"flow #{index}"


def _parse_flow(data: Any, policy: str) -> tuple[Flow | None, list[str]]:
    """One flow, or None and why not (every problem, one line each)."""
    if not isinstance(data, dict):
        return None, ["a flow must be a mapping"]
    found: list[str] = []
    unknown = set(data) - _FLOW_KEYS
    if unknown:
        found.append(f"unknown key(s) {', '.join(sorted(map(str, unknown)))}")
    name = data.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        found.append("'name' is required: letters, digits, '-' and '_'")
    source = data.get("from")
    if not isinstance(source, str) or not source:
        found.append("'from' is required: the name of the source site")
    destinations = _destinations(data.get("to"), found)
    release = data.get("release")
    collections = _globs(data, "collections", found)
    dataset_types = _globs(data, "dataset_types", found)
    where = _where(data.get("where"), data.get("bind"), found)
    if release is not None:
        if not isinstance(release, str) or not release.strip():
            found.append("'release' must be a release name")
        named = [key for key in ("collections", "dataset_types", "where", "bind")
                 if key in data]
        if named:
            found.append(f"a release flow carries its release whole: remove "
                         f"{', '.join(named)}")
    choices = {"on_conflict": ON_CONFLICT, "deletions": DELETIONS}
    for key, allowed in choices.items():
        if key in data and data[key] not in allowed:
            found.append(f"'{key}' must be {' or '.join(allowed)}, not {data[key]!r}")
    for key in ("files", "enabled"):
        if not isinstance(data.get(key, True), bool):
            found.append(f"'{key}' must be true or false")
    min_copies = data.get("min_copies", 1)
    if isinstance(min_copies, bool) or not isinstance(min_copies, int) or min_copies < 1:
        found.append(f"'min_copies' must be a whole number, at least 1, not {min_copies!r}")
    interval = 3600.0
    try:
        interval = parse_interval(data.get("interval", "1h"))
    except ValueError as exc:
        found.append(f"'interval': {exc}")
    if not isinstance(data.get("description", ""), str):
        found.append("'description' must be a string")
    if found:
        return None, found
    return Flow(policy, name, source, destinations, collections, dataset_types, where[0],
                where[1], release.strip() if release else None, data.get("files", True),
                data.get("on_conflict", "fail"), data.get("deletions", "propagate"),
                min_copies, interval, data.get("enabled", True),
                data.get("description", "")), []


def _destinations(value: Any, found: list[str]) -> tuple[str, ...] | None:
    if value == ALL_SITES:
        return None
    if isinstance(value, str) and value:
        value = [value]
    if not isinstance(value, list) or not value \
            or not all(isinstance(v, str) and v for v in value):
        found.append("'to' is required: a site, a list of sites, or 'all'")
        return ()
    if len(set(value)) != len(value):
        found.append("'to' names a site twice")
    return tuple(value)


def _globs(data: dict, key: str, found: list[str]) -> tuple[str, ...]:
    value = data.get(key, ["*"])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value \
            or not all(isinstance(v, str) and v.strip() for v in value):
        found.append(f"'{key}' must be a glob or a non-empty list of globs")
        return ("*",)
    return tuple(v.strip() for v in value)


def _where(text: Any, bind: Any, found: list[str]) -> tuple[str | None, tuple]:
    """The expression (it must parse) and its bind values (exactly those it uses)."""
    if bind is not None and (not isinstance(bind, dict) or not all(
            isinstance(k, str) and isinstance(v, str | int | float) and not isinstance(v, bool)
            for k, v in bind.items())):
        found.append("'bind' must map names to strings or numbers")
        bind = None
    if text is None or (isinstance(text, str) and not text.strip()):
        if bind:
            found.append("'bind' given without a 'where' that uses it")
        return None, ()
    if not isinstance(text, str):
        found.append("'where' must be a string")
        return None, ()
    try:
        tree = parse_where(text)
    except FederationError as exc:
        found.append(f"'where': {exc}")
        return None, ()
    tokens = tree.scan_values(lambda v: True) if hasattr(tree, "scan_values") else [tree]
    used = {str(token)[1:] for token in tokens if getattr(token, "type", None) == "BIND"}
    given = set(bind or {})
    if used - given:
        found.append(f"'where' uses :{', :'.join(sorted(used - given))} but 'bind' gives "
                     "no value for it")
    if given - used:
        found.append(f"'bind' gives {', '.join(sorted(given - used))}, which 'where' does "
                     "not use")
    return text.strip(), tuple(sorted((bind or {}).items()))
