"""Batch staging: `fed stage` a selection, run a job on the YAML-registry StagedButler in
another process, `fed collect` its outputs with their provenance, query it back.

Repository tests run on SQLite and PostgreSQL (``butler`` fixture). A damaged
staging directory and a bad selection must give one ``error:`` line and write
nothing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml
from test_cli import fails, fed

from federation.butler import Butler
from federation.errors import (
    ChecksumError,
    ConflictError,
    DataIdError,
    DatasetTypeError,
    MissingDatasetError,
)
from federation.model import CollectionType
from federation.staging import StagedButler

RAW_RUN = "HSC/raw/all"
EXPOSURES = [903334, 903335, 903336]
DETECTORS = [0, 1]
JOB_RUN = "u/alice/job1"

JOB = textwrap.dedent("""
    import sys
    from federation.staging import StagedButler

    butler = StagedButler(sys.argv[1], run=sys.argv[2])
    butler.register_dataset_type("rawStats", ["instrument", "detector", "exposure"], "JSON")
    butler.register_dataset_type("exposureSummary", ["instrument", "exposure"], "JSON")
    raws = butler.query_datasets("raw")
    by_exposure = {}
    for ref in sorted(raws, key=lambda r: (r.data_id["exposure"], r.data_id["detector"])):
        pixels = butler.get(ref)  # provenance: what was read since the previous put
        butler.put({"sum": sum(pixels["values"])}, "rawStats", ref.required_data_id)
        by_exposure.setdefault(ref.data_id["exposure"], []).append(ref)
    for exposure, refs in sorted(by_exposure.items()):
        butler.put({"detectors": len(refs)}, "exposureSummary",
                   instrument="HSC", exposure=exposure, inputs=refs)
    print(len(butler.outputs))
""")


@pytest.fixture
def raws(butler: Butler) -> Path:
    """The repository of ``butler`` with raws of 3 exposures x 2 detectors in HSC/raw/all,
    searched through the chain HSC/defaults."""
    butler.registry.register_dataset_type("raw", ["instrument", "detector", "exposure"], "JSON")
    for exposure in EXPOSURES:
        for detector in DETECTORS:
            butler.put({"values": [exposure, detector, 1]}, "raw", instrument="HSC",
                       exposure=exposure, detector=detector)
    butler.registry.register_collection("HSC/defaults", CollectionType.CHAINED)
    butler.registry.collections.set_chain("HSC/defaults", [RAW_RUN])
    return butler.config.root


def stage(repo: Path, target: Path, *extra) -> str:
    return fed("stage", repo, "-c", "HSC/defaults", "-t", "raw", "--where",
               "exposure IN (903334, 903335)", "-o", target, *extra).stdout


def run_job(staging: Path, run: str = JOB_RUN) -> None:
    done = subprocess.run([sys.executable, "-c", JOB, str(staging), run],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "6"  # 4 rawStats + 2 exposureSummary


def state(repo: Path) -> tuple:
    """What a failed command must not change: journal head, datasets, provenance, files."""
    with Butler(repo) as b:
        db = b.registry.db
        with db.engine.connect() as conn:
            links = conn.execute(sa.select(sa.func.count()).select_from(
                db.tables.provenance)).scalar_one()
        refs = b.query_datasets(None, ["*"], find_first=False)
        head = db.last_seq()
    files = sorted(str(p.relative_to(repo)) for p in repo.rglob("*")
                   if p.is_file() and not p.name.startswith("registry.sqlite3"))
    return head, sorted(str(r.id) for r in refs), links, files


def test_stage_job_collect_and_query_provenance(raws: Path, tmp_path: Path) -> None:
    staging = tmp_path / "job"
    out = stage(raws, staging)
    assert "staged 4 datasets" in out
    header = yaml.safe_load((staging / "staging.yaml").read_text())
    assert header["search_path"] == ["HSC/defaults"]
    collections = yaml.safe_load((staging / "registry" / "collections.yaml").read_text())
    assert {c["name"]: c["type"] for c in collections} == {RAW_RUN: "RUN",
                                                           "HSC/defaults": "TAGGED"}
    assert len(collections[1]["datasets"]) == 4
    records = yaml.safe_load((staging / "registry" / "dimensions.yaml").read_text())
    assert sorted(r["exposure"] for r in records["exposure"]) == [903334, 903335]
    assert {r["band"] for r in records["band"]} == {"r"}
    inputs = yaml.safe_load((staging / "registry" / "inputs.yaml").read_text())
    assert all((staging / i["path"]).is_file() and len(i["checksum"]) == 32 for i in inputs)

    run_job(staging)
    assert "collected 6 outputs into u/alice/job1" in fed("collect", staging, raws).stdout

    with Butler(raws) as b:
        stats = b.query_datasets("rawStats", [JOB_RUN])
        summaries = b.query_datasets("exposureSummary", [JOB_RUN])
        assert len(stats) == 4 and len(summaries) == 2
        raw_ids = {(r.data_id["exposure"], r.data_id["detector"]): r.id
                   for r in b.query_datasets("raw", [RAW_RUN])}
        for ref in stats:
            key = (ref.data_id["exposure"], ref.data_id["detector"])
            assert b.registry.provenance.inputs_of(ref.id) == [raw_ids[key]]
            assert b.get(ref) == {"sum": key[0] + key[1] + 1}
        summary = next(r for r in summaries if r.data_id["exposure"] == 903335)
        assert b.registry.provenance.inputs_of(summary.id) == sorted(
            [raw_ids[(903335, 0)], raw_ids[(903335, 1)]])
        assert b.registry.provenance.outputs_of(raw_ids[(903334, 1)]) == sorted(
            [r.id for r in (*stats, *summaries) if r.data_id["exposure"] == 903334
             and r.data_id.get("detector", 1) == 1])
        assert summary.data_id["physical_filter"] == "HSC-R"  # expanded at the site
    shown = fed("provenance", raws, summary.id).stdout
    assert "was made from 2 datasets" in shown and str(raw_ids[(903335, 1)]) in shown
    assert "raw@{instrument='HSC', detector=1, exposure=903335}" in shown
    fed("verify", raws)

    before = state(raws)
    assert "nothing new to collect (6 outputs already in" in fed("collect", staging, raws).stdout
    assert state(raws) == before


def test_damaged_staging_directories_are_refused_with_nothing_written(
        raws: Path, tmp_path: Path) -> None:
    good = tmp_path / "job"
    stage(raws, good)
    run_job(good)
    outputs = sorted((good / "registry" / "outputs").glob("*.yaml"))
    entry = yaml.safe_load(outputs[0].read_text())

    def checksum_mismatch(d: Path) -> None:  # same size, one digit changed
        path = d / entry["path"]
        text = path.read_text()
        digit = next(c for c in text if c.isdigit())
        path.write_text(text.replace(digit, str((int(digit) + 1) % 10), 1))

    def missing_file(d: Path) -> None:
        (d / entry["path"]).unlink()

    def malformed_yaml(d: Path) -> None:
        (d / "registry" / "outputs" / outputs[0].name).write_text("id: [unclosed\n")

    def unknown_input(d: Path) -> None:
        changed = dict(entry, inputs=[str(uuid.uuid4())])
        (d / "registry" / "outputs" / outputs[0].name).write_text(yaml.safe_dump(changed))

    def undeclared_type(d: Path) -> None:
        (d / "registry" / "output_types" / f"{entry['dataset_type']}.yaml").unlink()

    def unknown_record(d: Path) -> None:
        changed = dict(entry, data_id=dict(entry["data_id"], detector=99))
        (d / "registry" / "outputs" / outputs[0].name).write_text(yaml.safe_dump(changed))

    cases = [(checksum_mismatch, "checksum mismatch"), (missing_file, "is missing"),
             (malformed_yaml, "is not valid YAML"), (unknown_input, "refers to unknown input"),
             (undeclared_type, "was never declared"), (unknown_record, "no detector record")]
    before = state(raws)
    for damage, message in cases:
        damaged = tmp_path / damage.__name__
        shutil.copytree(good, damaged)
        damage(damaged)
        fails("collect", damaged, raws, match=message)
        assert state(raws) == before, damage.__name__
    fails("collect", tmp_path / "nowhere", raws, match="not a staging directory")
    assert "collected 6 outputs" in fed("collect", good, raws).stdout


def test_a_bad_selection_or_target_stages_nothing(raws: Path, tmp_path: Path) -> None:
    target = tmp_path / "job"
    fails("stage", raws, "-c", RAW_RUN, "--where", "exposure ===", "-o", target,
          match="cannot parse where expression")
    fails("stage", raws, "-c", RAW_RUN, "--where", "visit = 1", "-o", target,
          match="no dimension 'visit'")
    fails("stage", raws, "-c", RAW_RUN, "--where", "exposure = 1", "-o", target,
          match="no datasets at NCSA match")
    fails("stage", raws, "-c", "HSC/nothing*", "-o", target, match="-c 'HSC/nothing*'")
    fails("stage", raws, "-c", RAW_RUN, "-t", "calexp", "-o", target, match="-t 'calexp'")
    assert os.listdir(tmp_path) == ["repo"]  # no target, no temporary sibling
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    fails("stage", raws, "-c", RAW_RUN, "-o", target, match="is not empty")
    assert os.listdir(target) == ["keep.txt"]
    (target / "keep.txt").unlink()
    assert "staged 6 datasets" in fed("stage", raws, "-c", RAW_RUN, "-o", target).stdout


def test_staged_butler_checks_files_data_ids_and_runs(raws: Path, tmp_path: Path) -> None:
    staging = tmp_path / "job"
    assert "4 hard-linked" in stage(raws, staging, "--link")
    with Butler(raws) as b:
        ref = b.find_dataset("raw", instrument="HSC", exposure=903334, detector=0,
                             collections=RAW_RUN)
        repo_file = Path(b.get_uri(ref).removeprefix("file://"))
    butler = StagedButler(staging, run=JOB_RUN)
    staged = butler.find_dataset("raw", instrument="HSC", exposure=903334, detector=0)
    assert staged.id == ref.id and staged.run == RAW_RUN
    assert butler.get("raw", {"instrument": "HSC", "exposure": 903334, "detector": 0},
                      collections=RAW_RUN) == {"values": [903334, 0, 1]}
    assert butler.find_dataset("raw", instrument="HSC", exposure=903336, detector=0) is None
    inputs = yaml.safe_load((staging / "registry" / "inputs.yaml").read_text())
    linked = staging / next(i["path"] for i in inputs if i["id"] == str(ref.id))
    assert linked.stat().st_ino == repo_file.stat().st_ino
    with pytest.raises(DataIdError, match="no exposure record"):
        butler.put({}, "raw", instrument="HSC", exposure=903336, detector=0)
    with pytest.raises(Exception, match="holds staged inputs"):
        butler.put({}, "raw", instrument="HSC", exposure=903334, detector=0, run=RAW_RUN)
    butler.register_dataset_type("rawStats", ["instrument", "detector", "exposure"], "JSON")
    with pytest.raises(DatasetTypeError, match="already defined"):
        butler.register_dataset_type("rawStats", ["instrument", "exposure"], "JSON")
    with pytest.raises(MissingDatasetError, match="not a dataset of this staging directory"):
        butler.put({}, "rawStats", staged.required_data_id, inputs=[uuid.uuid4()])
    made = butler.put({"n": 1}, "rawStats", staged.required_data_id)  # read: staged
    with pytest.raises(ConflictError, match="already holds"):
        butler.put({"n": 2}, "rawStats", staged.required_data_id)
    assert butler.inputs_of(made) == [staged.id]
    again = StagedButler(staging, collections=[JOB_RUN])  # another job sees the output
    assert again.get("rawStats", staged.required_data_id) == {"n": 1}
    assert [r.id for r in again.outputs] == [made.id] and len(again.inputs) == 4
    other = butler.find_dataset("raw", instrument="HSC", exposure=903335, detector=1)
    path = staging / next(i["path"] for i in inputs if i["id"] == str(other.id))
    path.unlink()  # a hard link: replace it rather than change the repository's file
    path.write_text('{"values": [0]}')
    with pytest.raises(ChecksumError, match="mismatch"):
        butler.get(other)


def test_a_repository_from_before_the_provenance_table_gains_it(raws: Path,
                                                                tmp_path: Path) -> None:
    with Butler(raws) as b:
        with b.registry.db.engine.begin() as conn:
            conn.execute(sa.text("DROP TABLE provenance"))
    with Butler(raws) as b:
        raw = b.find_dataset("raw", instrument="HSC", exposure=903334, detector=1,
                             collections=RAW_RUN)
        assert b.registry.provenance.inputs_of(raw.id) == []
    staging = tmp_path / "job"
    stage(raws, staging)
    run_job(staging)
    assert "8 provenance links" in fed("collect", staging, raws).stdout
    assert "was used by 2 datasets" in fed("provenance", raws, raw.id, "--outputs").stdout


def test_provenance_of_unknown_datasets(raws: Path) -> None:
    fails("provenance", raws, "not-a-uuid", match="is not a dataset UUID")
    fails("provenance", raws, uuid.uuid4(), match="no dataset")
    with Butler(raws) as b:
        raw = b.query_datasets("raw", [RAW_RUN])[0]
    assert "was made from 0 datasets" in fed("provenance", raws, raw.id).stdout


def test_two_jobs_collected_at_once_both_land(raws: Path, tmp_path: Path) -> None:
    """Two batch jobs' outputs, collected by two processes at the same time."""
    jobs = [(tmp_path / f"job{i}", f"u/alice/job{i}") for i in (1, 2)]
    for staging, run in jobs:
        stage(raws, staging)
        run_job(staging, run)
    fed_cli = Path(sys.executable).parent / "fed"
    collecting = [subprocess.Popen([str(fed_cli), "collect", str(staging), str(raws)],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                  for staging, _ in jobs]
    for process in collecting:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        assert "collected 6 outputs" in out
    with Butler(raws) as b:
        for _, run in jobs:
            stats = b.query_datasets("rawStats", [run])
            assert len(stats) == 4
            assert all(len(b.registry.provenance.inputs_of(r.id)) == 1 for r in stats)
    fed("verify", raws)
