"""The "low" items of issue 9, as users meet them on the command line (SQLite and PostgreSQL):
dry runs that find conflicts, refused syncs, a failed file counted once, bundle summaries,
broken site files, selections that match nothing, data held at another site, site check."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import Federation, insert_hsc_records, populate_ncsa
from test_bundles import observe, read_lines
from test_cli import fails, fed
from test_remote import puller_view, server_for

from federation.errors import MissingDatasetError
from federation.registry.states import from_json, identity


@pytest.fixture
def ncsa(federation: Federation) -> Federation:
    populate_ncsa(federation)
    return federation


def at(federation: Federation) -> list[str]:
    return ["--sites", str(federation.sites_dir)]


def observed(federation: Federation, site: str) -> dict:
    """Everything a sync could write at ``site``, its sync log included."""
    with federation.butler(site) as b:
        logged = len(b.registry.log.entries())
    return observe(federation, site) | {"log": logged}


def claim_raw_slot_at_in2p3(federation: Federation) -> None:
    """IN2P3 writes its own raw into HSC/raw/all: NCSA's run then conflicts with it."""
    with federation.butler("IN2P3", run="HSC/raw/all") as b:
        insert_hsc_records(b.registry)
        b.registry.register_dataset_type("raw", ["exposure", "detector"], "NumpyArray")
        b.put(np.zeros(2), "raw", instrument="HSC", exposure=903334, detector=0)


# -- 1, 2: dry runs with conflicts exit 1; a refused sync never says "would apply" ---------


def test_dry_run_with_conflicts_exits_1_and_writes_nothing(ncsa: Federation, tmp_path: Path):
    assert "would apply" in fed("sync", "NCSA", "Princeton", "--dry-run", *at(ncsa)).stdout
    claim_raw_slot_at_in2p3(ncsa)
    before = observed(ncsa, "IN2P3")
    for mode, outcome in (("fail", "a run would be refused and change nothing"),
                          ("skip", "a run with --on-conflict skip would leave them out")):
        result = fed("sync", "NCSA", "IN2P3", "--dry-run", "--on-conflict", mode, *at(ncsa),
                     code=1)
        assert "conflict: collection HSC/raw/all" in result.stdout
        assert result.stderr.splitlines() == [
            f"error: 1 conflict(s) (listed above): {outcome}"]
        assert json.loads(fed("sync", "NCSA", "IN2P3", "--dry-run", "--on-conflict", mode,
                              "--json", *at(ncsa), code=1).stdout)["conflicts"]
    fed("export", "NCSA", "--since", "0", "-o", tmp_path / "b.jsonl", "--with-files",
        tmp_path / "files", *at(ncsa))
    imported = fed("import", tmp_path / "b.jsonl", "IN2P3", "--files-from", tmp_path / "files",
                   "--dry-run", *at(ncsa), code=1)
    assert imported.stderr.startswith("error: 1 conflict(s)")
    assert observed(ncsa, "IN2P3") == before


def test_a_refused_sync_never_says_would_apply(ncsa: Federation):
    claim_raw_slot_at_in2p3(ncsa)
    before = observe(ncsa, "IN2P3")
    planned = fed("sync", "NCSA", "IN2P3", "--dry-run", *at(ncsa), code=1)
    refused = fed("sync", "NCSA", "IN2P3", *at(ncsa), code=1)
    assert planned.stdout.splitlines()[0] == (
        "NCSA -> IN2P3: dry run: 1 conflict(s), a run would be refused; the plan")
    assert refused.stdout.splitlines()[0] == (
        "NCSA -> IN2P3: refused, nothing applied: 1 conflict(s); the plan was")
    for result in (planned, refused):
        assert "would apply" not in result.output and "cursor now at" not in result.stdout
    assert refused.stderr.splitlines() == [
        "error: 1 conflict(s), nothing applied: collection HSC/raw/all: definitions differ "
        "(source: RUN owned by NCSA; destination: RUN owned by IN2P3)"]
    assert observe(ncsa, "IN2P3") == before


# -- 3: a file that fails again in the next, incremental sync counts once --------------------


def applied_in_log(federation: Federation, site: str) -> list[int]:
    """The "applied" column of `fed log SITE`, one value per operation."""
    lines = fed("log", site, *at(federation)).stdout.splitlines()
    header = re.split(r"\s{2,}", lines[1].strip())
    return [int(re.split(r"\s{2,}", line.strip())[header.index("applied")])
            for line in lines[3:]]


def test_a_file_failing_again_in_an_incremental_sync_counts_once(ncsa: Federation):
    with ncsa.butler("NCSA") as b:  # detector 1 is tagged in HSC/raw/good
        [bad] = b.query_datasets("raw", "HSC/raw/all", where="exposure = 903335 AND detector = 1")
        Path(b.get_uri(bad).removeprefix("file://")).write_bytes(b"corrupt")
    first = json.loads(fed("sync", "NCSA", "IN2P3", "--json", *at(ncsa), code=1).stdout)
    assert [f["id"] for f in first["failed_files"]] == [str(bad.id)]
    assert "its record says 192" in first["failed_files"][0]["reason"]  # whose value is whose
    with ncsa.butler("NCSA") as b:  # an incremental change that needs the failed dataset
        b.registry.register_collection("HSC/raw/picked", "TAGGED")
        b.registry.datasets.associate("HSC/raw/picked", [bad])
    again = fed("sync", "NCSA", "IN2P3", *at(ncsa), code=1)
    counts = {tuple(re.split(r"\s{2,}", line.strip())[:2]): int(line.split()[-1])
              for line in again.stdout.splitlines()[3:] if re.match(r"^\w+\s+\w+\s+\d+$", line)}
    assert {k: n for k, n in counts.items() if k[1] == "failed"} == {("dataset", "failed"): 1}
    assert counts[("tag", "blocked")] == 2  # HSC/raw/good and HSC/raw/picked, once each
    assert counts[("collection", "insert")] == 1
    assert again.stdout.count("failed: ") == 1
    assert again.stderr.startswith("error: 1 file(s) did not arrive")
    assert applied_in_log(ncsa, "IN2P3")[-1] == 1  # the new collection; failures are not
    with ncsa.butler("IN2P3") as b:
        assert b.registry.collections.exists("HSC/raw/picked")
        assert b.query_datasets(None, ["HSC/raw/picked"]) == []


# -- 4: bundle summaries count distinct objects ---------------------------------------------


def test_bundle_summaries_count_distinct_objects(ncsa: Federation, tmp_path: Path):
    bundle = tmp_path / "snapshot.jsonl"
    exported = fed("export", "NCSA", "--since", "0", "-o", bundle, *at(ncsa)).stdout
    states = [from_json(x) for x in read_lines(bundle)[1:] if x["kind"] not in (
        "batch_end", "file", "end")]
    distinct: dict[str, set] = {}
    for state in states:
        distinct.setdefault(state.kind, set()).add(identity(state))
    expected = {kind: len(found) for kind, found in distinct.items()}
    # every dimension record: a full snapshot carries the 4 visits no dataset refers to too
    assert expected == {"calib_slot": 4, "collection": 6, "dataset": 20, "dataset_type": 2,
                        "dimension_record": 18, "tag": 4}
    assert len(states) > sum(expected.values())  # batches repeat what they need
    shown = fed("bundle", "show", bundle).stdout
    for output in (exported, shown):
        rows = {line.split()[0]: int(line.split()[1]) for line in output.splitlines()
                if re.match(r"^[a-z_]+\s+\d+$", line)}
        assert rows == expected, output
    assert json.loads(fed("bundle", "show", bundle, "--json").stdout)["records"] == expected
    with ncsa.butler("NCSA") as b:
        head = b.registry.db.last_seq()
    empty = tmp_path / "empty.jsonl"
    out = fed("export", "NCSA", "--since", head, "-o", empty, *at(ncsa)).stdout
    assert f"NCSA: nothing after journal entry {head}" in out
    assert f"{head + 1}..{head}" not in out
    shown = fed("bundle", "show", empty).stdout
    assert f"content: NCSA: nothing after journal entry {head}" in shown
    assert "(none)" in shown and "integrity: ok" in shown


# -- 5, 8: site list shows broken definition files; site check splits stdout and stderr ------


def break_sites(federation: Federation) -> None:
    sites = federation.sites_dir
    (sites / "broken.yaml").write_text("name: [\n")
    (sites / "CERN.yaml").write_text("name: CERN\nroot: /x\nbogus: 1\n")
    (sites / "copy.yaml").write_text((sites / "laptop.yaml").read_text())


def test_site_list_shows_broken_definition_files(federation: Federation):
    break_sites(federation)
    listed = fed("site", "list", *at(federation), code=1)
    names = [line.split()[0] for line in listed.stdout.splitlines()[2:]]
    assert names == ["IN2P3", "NCSA", "Princeton", "laptop"]
    sites = federation.sites_dir
    assert listed.stderr.splitlines() == [
        f"error: {sites / 'CERN.yaml'}: unknown key(s) bogus",
        f"error: {sites / 'broken.yaml'} is not valid YAML: while parsing a flow node",
        f"error: {sites / 'copy.yaml'} defines site 'laptop', not 'copy': a site is found by "
        "its file name, NAME.yaml"]
    entries = json.loads(fed("site", "list", "--json", *at(federation), code=1).stdout)
    assert [e.get("name") for e in entries] == [None, "IN2P3", "NCSA", "Princeton", None,
                                                None, "laptop"]
    assert entries[0] == {"file": str(sites / "CERN.yaml"),
                          "error": f"{sites / 'CERN.yaml'}: unknown key(s) bogus"}
    assert "laptop, laptop" not in fails("site", "show", "nowhere", *at(federation),
                                         match="known sites: IN2P3, NCSA, Princeton, laptop")
    help_text = fed("site", "list", "--help").stdout
    assert "stderr" in help_text and "exit status is 1" in help_text


def test_site_check_successes_on_stdout_failures_on_stderr(federation: Federation, tmp_path):
    path = federation.sites_dir / "IN2P3.yaml"
    path.write_text(yaml.safe_dump(yaml.safe_load(path.read_text()) | {
        "registry": f"sqlite:///{tmp_path / 'nowhere.sqlite3'}"}))
    checked = fed("site", "check", *at(federation), code=1)
    assert [line.split(":")[0] for line in checked.stdout.splitlines()] == [
        "NCSA", "Princeton", "laptop"]
    assert all(": ok (journal at " in line for line in checked.stdout.splitlines())
    assert checked.stderr.splitlines()[0].startswith("error: IN2P3: its definition names")
    assert len(checked.stderr.splitlines()) == 1
    assert fed("site", "check", "NCSA", *at(federation)).stderr == ""
    named = fed("site", "check", "NCSA", "CERN", *at(federation), code=1)
    assert named.stdout.startswith("NCSA: ok")
    assert named.stderr.startswith("error: CERN: unknown site 'CERN'")
    break_sites(federation)
    checked = fed("site", "check", *at(federation), code=1)
    assert "error" not in checked.stdout
    failed = checked.stderr.splitlines()
    assert [line.split(":")[1].strip() for line in failed] == ["CERN", "IN2P3", "broken",
                                                                "copy"]
    assert all(line.startswith("error: ") for line in failed)


# -- 6: a selection that matches nothing says so --------------------------------------------


def test_a_selection_matching_nothing_is_refused_and_writes_nothing(ncsa: Federation,
                                                                     tmp_path: Path):
    before = observed(ncsa, "laptop")
    fails("sync", "NCSA", "laptop", "-c", "NOPE*", *at(ncsa),
          match="error: nothing at NCSA matches -c 'NOPE*'; nothing was synced")
    fails("sync", "NCSA", "laptop", "-c", "HSC/raw/*", "-t", "raw", "-t", "calexpp",
          "--dry-run", *at(ncsa), match="nothing at NCSA matches -t 'calexpp';")
    fails("sync", "NCSA", "laptop", "-c", "hsc/raw/all", "-t", "Raw", *at(ncsa),
          match="nothing at NCSA matches -c 'hsc/raw/all', -t 'Raw';")
    fails("export", "NCSA", "--since", "0", "-c", "NOPE", "-o", tmp_path / "x.jsonl",
          *at(ncsa), match="nothing at NCSA matches -c 'NOPE'; nothing was exported")
    assert not (tmp_path / "x.jsonl").exists()
    assert observed(ncsa, "laptop") == before
    with ncsa.butler("laptop") as b:
        assert b.registry.cursors.all() == [] and b.registry.log.entries() == []


def test_a_where_matching_no_dataset_says_so(ncsa: Federation, tmp_path: Path):
    selection = ["-c", "HSC/raw/all", "--where", "exposure = 1"]
    out = fed("sync", "NCSA", "laptop", *selection, *at(ncsa)).stdout
    assert "note: no datasets at NCSA matched the selection (collections HSC/raw/all; " \
           "dataset types *; where 'exposure = 1'; with files)" in out
    reported = json.loads(fed("sync", "NCSA", "Princeton", *selection, "--json",
                              *at(ncsa)).stdout)
    assert reported["notes"] == ["no datasets at NCSA matched the selection (collections "
                                 "HSC/raw/all; dataset types *; where 'exposure = 1'; "
                                 "with files)"]
    exported = fed("export", "NCSA", "--since", "0", *selection, "-o", tmp_path / "b.jsonl",
                   *at(ncsa)).stdout
    assert "note: no datasets at NCSA matched the selection" in exported
    matched = fed("sync", "NCSA", "laptop", "-c", "HSC/raw/all", "--where",
                  "exposure = 903334", *at(ncsa)).stdout
    assert "note:" not in matched and "files transferred: 4" in matched
    with ncsa.butler("laptop") as b:
        assert len(b.query_datasets("raw", "HSC/raw/all")) == 4


def test_a_selection_that_matched_once_still_brings_removals(ncsa: Federation):
    with ncsa.butler("NCSA", run="HSC/runs/tmp") as b:
        b.put(np.zeros(2), "bias", instrument="HSC", detector=0)
    fed("sync", "NCSA", "laptop", "-c", "HSC/runs/tmp*", *at(ncsa))
    with ncsa.butler("NCSA") as b:
        b.remove_runs(["HSC/runs/tmp"])
    out = fed("sync", "NCSA", "laptop", "-c", "HSC/runs/tmp*", *at(ncsa)).stdout
    assert "dataset_removal" in out
    with ncsa.butler("laptop") as b:
        assert not b.registry.collections.exists("HSC/runs/tmp")


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_selection_matching_nothing_over_http(ncsa: Federation, tmp_path: Path, request):
    view = puller_view(ncsa, tmp_path, "NCSA", "http", server_for(request, "http"))
    fed("publish", "NCSA", *at(ncsa))
    before = observed(ncsa, "laptop")
    fails("sync", "NCSA", "laptop", "-c", "NOPE*", "--sites", view,
          match="nothing at NCSA matches -c 'NOPE*'; nothing was synced")
    after = observed(ncsa, "laptop")  # only the mirror of NCSA (a cache) was brought up to date
    after["files"] = [f for f in after["files"] if not f.startswith(".federation-mirrors/")]
    assert after == before
    out = fed("sync", "NCSA", "laptop", "-c", "HSC/calib", "--sites", view).stdout
    assert "files transferred: 4" in out


# -- 7: data registered here whose file is held at another site ------------------------------


def test_a_dataset_held_at_another_site_says_so(ncsa: Federation):
    fed("sync", "NCSA", "laptop", "-c", "HSC/defaults", "--where", "exposure = 903334",
        "--no-files", *at(ncsa))
    fed("sync", "NCSA", "laptop", "-c", "HSC/calib", "--no-files", *at(ncsa))
    held = "is held at site 'NCSA'; its file is not in this repository"
    with ncsa.butler("laptop", collections=["HSC/defaults"]) as b:
        raw = {"instrument": "HSC", "exposure": 903334, "detector": 0}
        for read in (b.get, b.get_uri):
            for how in (("raw", raw), (b.find_dataset("raw", raw),)):
                with pytest.raises(MissingDatasetError) as info:
                    read(*how)
                assert held in str(info.value) and "record" not in str(info.value)
        with pytest.raises(MissingDatasetError, match=held):  # found at the exposure's time
            b.get("bias", instrument="HSC", exposure=903334, detector=0)
        with pytest.raises(MissingDatasetError) as info:  # that exposure never came here
            b.get("bias", instrument="HSC", exposure=903335, detector=0)
        assert str(info.value).startswith(
            "cannot look up bias at the time of exposure instrument='HSC', exposure=903335: "
            "this repository holds no exposure record")
        assert "give a timespan instead" in str(info.value)
    repo = ncsa.root / "repos" / "laptop"
    table = fed("query-datasets", repo, "raw", "-c", "HSC/defaults", "--show-uri").stdout
    assert table.count("(held at site NCSA: its file is not here)") == 4
    shown = json.loads(fed("query-datasets", repo, "raw", "-c", "HSC/defaults", "--show-uri",
                           "--json").stdout)
    assert {d["uri"] for d in shown} == {"(held at site NCSA: its file is not here)"}
