"""Policies (`policies/*.yaml`): the schema, the checks against the sites, `fed policy
list|show|check`, and the pieces of a `fed federate` pass that need no repository
(glob overlap, ownership of globs, order, parallel execution, backoff)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import yaml
from test_cli import fails, fed

from federation.policy import (
    Edge,
    FederateState,
    Flow,
    FlowRun,
    execute,
    format_interval,
    order_edges,
    parse_interval,
    plan_pass,
    retry_delay,
)
from federation.policy.globs import globs_overlap, pattern_owner
from federation.sites import list_sites

PROJECT = Path(__file__).resolve().parent.parent
OWNS = {"NCSA": ["HSC/raw", "HSC/calib", "HSC/runs", "HSC/defaults"],
        "IN2P3": ["HSC/runs-in2p3", "u/in2p3"], "Princeton": ["u/princeton"],
        "laptop": ["u/alice"]}


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    """A sites directory (the four sites, an archive that is read-only, a release site,
    NCSA's web mirror) and an empty policies directory. No repository is needed."""
    sites, policies = tmp_path / "sites", tmp_path / "policies"
    sites.mkdir()
    policies.mkdir()
    for name, owns in OWNS.items():
        site(sites, name, owns=owns)
    site(sites, "archive", read_only=True)
    site(sites, "DataRelease", role="release")
    (sites / "web.yaml").write_text(yaml.safe_dump({
        "name": "web", "transport": "http", "http": {"url": "http://127.0.0.1:9/repo/"}}))
    return sites, policies


def site(directory: Path, name: str, **fields) -> None:
    data = {"name": name, "registry": f"sqlite:///{directory.parent}/{name}/registry.sqlite3",
            "root": str(directory.parent / name), "transport": "local"} | fields
    (directory / f"{name}.yaml").write_text(yaml.safe_dump(data))


def write(policies: Path, name: str, *flows: dict, **top) -> Path:
    path = policies / f"{name}.yaml"
    path.write_text(yaml.safe_dump(top | {"flows": list(flows)}, sort_keys=False))
    return path


def flow(name: str, source: str, to, **fields) -> dict:
    return {"name": name, "from": source, "to": to} | fields


def check_lines(dirs, code: int = 1) -> list[str]:
    sites, policies = dirs
    result = fed("policy", "check", "--policies", policies, "--sites", sites, code=code)
    lines = result.stderr.splitlines()
    assert all(line.startswith("error: ") for line in lines), lines
    return lines


def test_the_shipped_examples_check_against_the_shipped_sites():
    result = fed("policy", "check", "--policies", PROJECT / "policies",
                 "--sites", PROJECT / "sites")
    assert result.stdout.startswith("ok: 4 policies, 6 flows, 9 site-to-site syncs")
    listed = fed("policy", "list", "--policies", PROJECT / "policies",
                 "--sites", PROJECT / "sites").stdout
    assert "all (IN2P3, Princeton, laptop)" in listed and "records only" in listed


def test_schema_problems_are_one_line_each(dirs):
    sites, policies = dirs
    path = write(policies, "bad",
                 flow("a", "NCSA", "IN2P3", colections=["HSC/raw/*"], interval="soon",
                      on_conflict="overwrite", deletions="forget", min_copies=0,
                      files="yes"),
                 flow("b", "NCSA", "IN2P3", where="exposure = = 3"),
                 flow("c", "NCSA", "IN2P3", where="exposure = :e", bind={"x": 1}),
                 flow("d", "NCSA", "IN2P3", release="DR1", collections=["HSC/raw/*"]),
                 {"name": "e"},
                 flow("b", "NCSA", "laptop"),
                 owner="me")
    (policies / "broken.yaml").write_text("flows: [\n")
    lines = check_lines(dirs)
    expected = [
        "unknown key(s) owner",
        "flow 'a': unknown key(s) colections",
        "flow 'a': 'interval': 'soon' is not a duration",
        "flow 'a': 'on_conflict' must be fail or skip, not 'overwrite'",
        "flow 'a': 'deletions' must be propagate or keep, not 'forget'",
        "flow 'a': 'min_copies' must be a whole number, at least 1, not 0",
        "flow 'a': 'files' must be true or false",
        "flow 'b': 'where': cannot parse where expression at column 12",
        "flow 'c': 'where' uses :e but 'bind' gives no value for it",
        "flow 'c': 'bind' gives x, which 'where' does not use",
        "flow 'd': a release flow carries its release whole: remove collections",
        "flow 'e': 'from' is required",
        "flow 'e': 'to' is required",
        "flow 'b': another flow of this policy has that name",
    ]
    for text in expected:
        assert sum(text in line for line in lines) == 1, (text, lines)
    assert all(str(path) in line for line in lines if "broken.yaml" not in line)
    assert any("broken.yaml: not valid YAML" in line for line in lines)
    assert len(lines) == len(expected) + 1, lines
    # federate refuses to run any flow while a policy has a problem, and writes nothing
    fails("federate", "--once", "--policies", policies, "--sites", sites,
          match=["unknown key(s) owner", "more", "fed policy check"])
    assert not (policies / ".federate" / "state.json").exists()


def test_problems_against_the_sites(dirs):
    write(dirs[1], "sites",
          flow("unknown", "CERN", ["IN2P3", "Nowhere"]),
          flow("self", "NCSA", ["NCSA", "IN2P3"]),
          flow("archive", "NCSA", "archive"),
          flow("release-site", "NCSA", "DataRelease", collections="HSC/raw/*"),
          flow("to-web", "NCSA", "web"),
          flow("copies", "NCSA", "laptop", collections="HSC/calib", min_copies=9),
          flow("broken", "NCSA", "broken", collections="HSC/calib/*"))
    (dirs[0] / "broken.yaml").write_text("name: broken\nregistry: 3\n")
    lines = check_lines(dirs)
    for text in ["flow 'unknown': unknown source site 'CERN'",
                 "flow 'unknown': unknown destination site 'Nowhere'",
                 "flow 'self': 'to' includes the source, NCSA",
                 "flow 'archive': site archive is read-only",
                 "flow 'release-site': site DataRelease is a release site",
                 "flow 'to-web': site web is published read-only over http",
                 "flow 'copies': 'min_copies' is 9, but only 6 other site(s)",
                 "flow 'broken': destination site broken: its definition cannot be read ("]:
        assert sum(text in line for line in lines) == 1, (text, lines)
    assert len(lines) == 8, lines


def test_a_release_flow_may_go_into_a_release_site_and_all_means_those_that_can_take_it(dirs):
    sites, policies = dirs
    write(policies, "releases", flow("dr1", "NCSA", "all", release="DR1"),
          flow("raws", "NCSA", "all", collections="HSC/raw/*", interval="10m"))
    fed("policy", "check", "--policies", policies, "--sites", sites)
    shown = fed("policy", "show", "releases", "--policies", policies, "--sites", sites).stdout
    data = yaml.safe_load(shown)
    by_name = {f["name"]: f for f in data["flows"]}
    assert by_name["dr1"]["destinations"] == ["DataRelease", "IN2P3", "Princeton", "laptop"]
    assert by_name["raws"]["destinations"] == ["IN2P3", "Princeton", "laptop"]
    assert by_name["raws"]["interval"] == "10m" and by_name["raws"]["to"] == "all"


def test_the_same_collections_from_two_sources_and_owner_cycles(dirs):
    write(dirs[1], "overlap",
          flow("raw-from-ncsa", "NCSA", "Princeton", collections=["HSC/raw/*"]),
          flow("all-from-in2p3", "IN2P3", "Princeton"),
          flow("calib-from-ncsa", "NCSA", "laptop", collections="HSC/calib"),
          flow("tags-from-princeton", "Princeton", "laptop", collections="u/princeton/*"),
          flow("back-home", "IN2P3", "NCSA", collections=["HSC/raw/all"], files=False),
          flow("loop-1", "IN2P3", "laptop", collections="u/princeton/tags/*"),
          flow("loop-2", "laptop", "IN2P3", collections="u/princeton/*"),
          flow("twice", "NCSA", "Princeton", collections=["HSC/raw/*"], interval="1d"))
    lines = check_lines(dirs)
    assert sum("flow 'all-from-in2p3': writes collections matching '*' into Princeton from "
               "IN2P3, and flow overlap/raw-from-ncsa writes 'HSC/raw/*'" in line
               for line in lines) == 1, lines
    assert sum("flow 'loop-1': writes collections matching 'u/princeton/tags/*' into laptop"
               in line for line in lines) == 1, lines
    assert not any("calib-from-ncsa" in line and "two sources" in line for line in lines)
    assert sum("flow 'back-home': owner cycle: it carries NCSA's own collections "
               "('HSC/raw/all') back into NCSA from IN2P3" in line for line in lines) == 1
    assert sum("owner cycle: flows overlap/loop-1, overlap/loop-2 carry Princeton's "
               "collections round IN2P3, laptop" in line for line in lines) == 1, lines
    assert sum("flow 'twice': carries the same selection from NCSA to Princeton as flow "
               "overlap/raw-from-ncsa" in line for line in lines) == 1, lines
    assert sum("flow 'twice': writes collections matching 'HSC/raw/*' into Princeton from "
               "NCSA, and flow overlap/all-from-in2p3 writes '*'" in line for line in lines) == 1
    assert len(lines) == 6, lines


def test_list_and_show(dirs):
    sites, policies = dirs
    write(policies, "replicas", flow("raw", "NCSA", ["IN2P3", "Princeton"],
                                     collections=["HSC/raw/*"], dataset_types="raw",
                                     where="exposure > :first", bind={"first": 903334},
                                     deletions="keep", on_conflict="skip", enabled=False,
                                     interval=90),
          description="raws")
    listed = fed("policy", "list", "--policies", policies, "--sites", sites).stdout
    row = next(line for line in listed.splitlines() if line.startswith("replicas"))
    assert row.split()[:5] == ["replicas", "raw", "NCSA", "IN2P3,", "Princeton"]
    assert "HSC/raw/* [raw] where exposure > :first; keeps deletions; skips conflicts" in row
    assert row.split()[-2:] == ["90s", "no"]
    shown = yaml.safe_load(fed("policy", "show", "replicas/raw", "--policies", policies,
                               "--sites", sites).stdout)
    assert shown["bind"] == {"first": 903334} and shown["enabled"] is False
    assert shown["interval_seconds"] == 90 and shown["destinations"] == ["IN2P3", "Princeton"]
    data = yaml.safe_load(fed("policy", "list", "--policies", policies, "--sites", sites,
                              "--json").stdout)
    assert data["policies"][0]["description"] == "raws" and data["problems"] == []
    fails("policy", "show", "nothing", "--policies", policies, match="unknown policy 'nothing'")
    fails("policy", "show", "replicas/other", "--policies", policies,
          match="policy replicas has no flow 'other' (flows: raw)")
    fails("policy", "show", "../sites", "--policies", policies, match="invalid policy name")
    # a broken file: the readable flows are listed, its problem is on stderr, exit 1
    write(policies, "zbroken", flow("x", "NCSA", "IN2P3", sideways=True))
    result = fed("policy", "list", "--policies", policies, "--sites", sites, code=1)
    assert "replicas" in result.stdout
    assert result.stderr.splitlines() == [
        f"error: {policies / 'zbroken.yaml'}: flow 'x': unknown key(s) sideways"]
    fails("policy", "show", "zbroken", "--policies", policies, match="unknown key(s) sideways")


def test_no_policies_is_an_error(dirs):
    sites, policies = dirs
    assert check_lines(dirs) == [f"error: {policies}: no policy files (*.yaml) here "
                                 "(see --policies)"]
    fails("policy", "check", "--policies", policies / "missing", "--sites", sites,
          match="no such directory")


def test_globs_overlap():
    assert globs_overlap("HSC/raw/*", "HSC/*/all")
    assert globs_overlap("*", "HSC/calib")
    assert globs_overlap("HSC/calib", "HSC/calib")
    assert globs_overlap("HSC/run?/x", "HSC/runs/*")
    assert globs_overlap("u/[a-m]*", "u/alice")
    assert globs_overlap("u/[!a]*", "u/[a-c]ob")
    assert not globs_overlap("HSC/raw/*", "HSC/calib")
    assert not globs_overlap("HSC/calib", "HSC/calib/*")
    assert not globs_overlap("u/[a-m]*", "u/zed")
    assert not globs_overlap("u/[!a]*", "u/alice")
    assert not globs_overlap("DR1/*", "DR10")


def test_pattern_owner():
    sites = [type("S", (), {"name": n, "owns": tuple(o)})() for n, o in OWNS.items()]
    assert pattern_owner("HSC/raw/all", sites) == "NCSA"
    assert pattern_owner("HSC/runs/*", sites) == "NCSA"
    assert pattern_owner("HSC/runs-in2p3/*", sites) == "IN2P3"
    assert pattern_owner("HSC/runs*", sites) is None  # could match HSC/runs-in2p3/... too
    assert pattern_owner("HSC/*", sites) is None
    assert pattern_owner("*", sites) is None
    assert pattern_owner("DR1", sites) is None
    sites.append(type("S", (), {"name": "team", "owns": ("HSC/runs/team",)})())
    assert pattern_owner("HSC/runs/*", sites) is None  # reaches team's collections too
    assert pattern_owner("HSC/runs/team/*", sites) == "team"


def test_intervals_and_backoff():
    assert [parse_interval(v) for v in ("30s", "10m", "1h", "1d", "2w", 90, "1.5m")] == [
        30, 600, 3600, 86400, 1209600, 90, 90]
    for bad in ("soon", "0s", "-1m", True, "10 minutes"):
        with pytest.raises(ValueError):
            parse_interval(bad)
    assert [format_interval(s) for s in (30, 600, 5400, 86400, 1.5)] == [
        "30s", "10m", "90m", "1d", "1.5s"]
    assert [retry_delay(600, n) for n in range(1, 8)] == [60, 120, 240, 480, 960, 1920, 3600]
    assert [retry_delay(1, n) for n in (1, 2, 3, 40)] == [1, 2, 4, 3600]
    assert retry_delay(86400, 1) == 60 and retry_delay(86400, 30) == 86400


def edge(source: str, destination: str, name: str | None = None, **fields) -> Edge:
    return Edge(Flow("p", name or f"{source}-{destination}", source, (destination,),
                     **fields), destination)


def test_order_runs_feeders_first_and_loops_stably():
    edges = [edge("IN2P3", "Princeton"), edge("Princeton", "laptop"), edge("IN2P3", "NCSA"),
             edge("NCSA", "IN2P3"), edge("NCSA", "IN2P3", "runs"), edge("NCSA", "Princeton")]
    ordered = [(e.source, e.destination, e.flow.name) for e in order_edges(edges)]
    assert ordered == [("NCSA", "IN2P3", "NCSA-IN2P3"), ("NCSA", "IN2P3", "runs"),
                       ("NCSA", "Princeton", "NCSA-Princeton"), ("IN2P3", "NCSA", "IN2P3-NCSA"),
                       ("IN2P3", "Princeton", "IN2P3-Princeton"),
                       ("Princeton", "laptop", "Princeton-laptop")]
    assert order_edges(list(reversed(edges))) == order_edges(edges)


def test_execute_respects_dependencies_runs_in_parallel_and_survives_failures():
    edges = order_edges([edge("NCSA", "IN2P3"), edge("NCSA", "Princeton"),
                         edge("NCSA", "laptop"), edge("IN2P3", "CC"), edge("Princeton", "CC")])
    spans: dict[str, tuple[float, float]] = {}
    lock = threading.Lock()
    now = {"running": 0, "most": 0}

    def run(e: Edge) -> FlowRun:
        with lock:
            now["running"] += 1
            now["most"] = max(now["most"], now["running"])
        start = time.monotonic()
        time.sleep(0.2)
        with lock:
            now["running"] -= 1
        spans[e.key] = (start, time.monotonic())
        if e.destination == "Princeton":
            raise RuntimeError("Princeton is down")
        return FlowRun(e, "ok", "fine", time.time(), time.time())

    runs = execute(edges, run, jobs=3, stop=threading.Event())
    by_key = {r.edge.key: r for r in runs}
    assert now["most"] == 3
    assert by_key["p/NCSA-Princeton->Princeton"].result == "failed"
    assert by_key["p/NCSA-Princeton->Princeton"].detail == "RuntimeError: Princeton is down"
    assert sum(r.result == "ok" for r in runs) == 4
    # a relay waits for what feeds its source; two flows into CC never overlap
    assert spans["p/IN2P3-CC->CC"][0] >= spans["p/NCSA-IN2P3->IN2P3"][1]
    assert spans["p/Princeton-CC->CC"][0] >= spans["p/NCSA-Princeton->Princeton"][1]
    first, second = sorted([spans["p/IN2P3-CC->CC"], spans["p/Princeton-CC->CC"]])
    assert second[0] >= first[1]


def test_execute_stops_starting_flows_once_asked():
    stop = threading.Event()
    edges = order_edges([edge("NCSA", "IN2P3"), edge("IN2P3", "Princeton")])

    def run(e: Edge) -> FlowRun:
        stop.set()  # as SIGTERM would, while the first flow runs
        return FlowRun(e, "ok", "", time.time(), time.time())

    runs = execute(edges, run, jobs=4, stop=stop)
    assert [r.result for r in runs] == ["ok", "stopped"]


def test_plan_pass_takes_due_flows_only(tmp_path):
    state = FederateState(tmp_path / "state.json")
    due, later, off = edge("A", "B"), edge("A", "C"), edge("A", "D", enabled=False)
    state.get(later).record(FlowRun(later, "failed", "down", 100.0, 101.0), 600)
    assert state.flows[later.key].next_due == 101.0 + 60
    chosen, skipped = plan_pass([due, later, off], state, 150.0)
    assert chosen == [due]
    assert [(r.edge, r.result) for r in skipped] == [(later, "not due"), (off, "disabled")]
    assert "after 1 failure(s) in a row" in skipped[0].detail
    chosen, _ = plan_pass([due, later, off], state, 150.0, everything=True)
    assert chosen == [due, later]
    state.save()
    again = FederateState.load(state.path)
    assert again.flows[later.key].failures == 1 and again.flows[later.key].last_error == "down"
    state.path.write_text("{not json")
    with pytest.raises(Exception, match="cannot read the federate state"):
        FederateState.load(state.path)


def test_shipped_sites_are_what_the_examples_name():
    assert {s.name for s in list_sites(PROJECT / "sites")} >= {"NCSA", "IN2P3", "Princeton",
                                                               "laptop"}
