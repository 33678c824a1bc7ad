"""The Butler as a user sees it, on SQLite and on PostgreSQL.

Every test takes the ``butler``/``repo`` fixtures (or ``db_url``), which are
parametrized over both databases in conftest.py.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import numpy as np
import pytest
import sqlalchemy as sa
import xxhash
from conftest import insert_hsc_records

from federation.butler import Butler, FileDataset
from federation.config import CONFIG_NAME, RepoConfig
from federation.errors import (
    CollectionError,
    ConfigError,
    ConflictError,
    DataIdError,
    DatastoreError,
    ExpressionError,
    FederationError,
    InputError,
    MissingDatasetError,
)
from federation.model import CollectionType
from federation.timespan import Timespan

RUN = "HSC/raw/all"
REPO_META = {CONFIG_NAME, "registry.sqlite3", "registry.sqlite3-wal", "registry.sqlite3-shm"}
R_VISITS = [903334, 903335, 903336]  # HSC-R; 903337 is HSC-I


# -- helpers -----------------------------------------------------------------


@pytest.fixture
def b(butler: Butler) -> Butler:
    """The conftest butler with the dataset types these tests use."""
    reg = butler.registry
    reg.register_dataset_type("raw", ["instrument", "exposure", "detector"], "Bytes")
    reg.register_dataset_type("calexp", ["instrument", "visit", "detector"], "FitsImage")
    reg.register_dataset_type("psf", ["instrument", "visit", "detector"], "NumpyArray")
    reg.register_dataset_type("summary", ["instrument", "visit"], "JSON")
    return butler


def data_files(root: Path) -> list[str]:
    """Every file (or symlink) in the datastore, relative to the repo root."""
    return sorted(
        p.relative_to(root).as_posix() for p in root.rglob("*")
        if (p.is_file() or p.is_symlink()) and p.name not in REPO_META)


def temp_files(root: Path) -> list[Path]:
    return list(root.rglob(".*.tmp-*"))


def count_rows(butler: Butler, table: str) -> int:
    t = getattr(butler.registry.db.tables, table)
    with butler.registry.db.reading() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()


def path_of(butler: Butler, ref) -> Path:
    uri = butler.get_uri(ref)
    parsed = urlparse(uri)
    assert parsed.scheme == "file"
    return Path(unquote(parsed.path))


def raw_file(tmp_path: Path, name: str, payload: bytes | None = None) -> Path:
    src = tmp_path / "incoming" / name
    src.parent.mkdir(parents=True, exist_ok=True)
    src.write_bytes(payload if payload is not None else f"raw {name}".encode() * 10)
    return src


def finishes(call: Callable[[], Any], timeout: float = 20) -> Any:
    """``call()``'s result or exception; fails instead of hanging if it does not return."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:  # handed to the test below
            outcome["error"] = exc

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout)
    assert not worker.is_alive(), f"still running after {timeout} s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def raw_dataset(src: Path, exposure: int, detector: int) -> FileDataset:
    return FileDataset(src, "raw", {"instrument": "HSC", "exposure": exposure,
                                    "detector": detector})


def chain(butler: Butler, name: str, children: list[str]) -> None:
    butler.registry.register_collection(name, CollectionType.CHAINED)
    butler.registry.collections.set_chain(name, children)


# -- put / get -----------------------------------------------------------------


def test_put_get_round_trip_json_numpy_bytes(b: Butler):
    summary = {"seeing": 0.61, "stars": [1, 2, 3], "note": "ok", "flag": None}
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    blob = bytes(range(256))
    r1 = b.put(summary, "summary", instrument="HSC", visit=903334)
    r2 = b.put(array, "psf", {"instrument": "HSC", "visit": 903334, "detector": 1})
    r3 = b.put(blob, "raw", instrument="HSC", exposure=903334, detector=1)

    assert b.get(r1) == summary
    got = b.get(r2)
    assert got.dtype == np.float32 and np.array_equal(got, array)
    assert b.get(r3) == blob
    # by dataset type + data ID through the default collections (the run) and explicit ones
    assert b.get("summary", instrument="HSC", visit=903334) == summary
    assert np.array_equal(b.get("psf", {"instrument": "HSC", "visit": 903334, "detector": 1},
                                collections=RUN), array)
    assert b.get("raw", {"instrument": "HSC", "exposure": 903334}, detector=1,
                 collections=[RUN]) == blob
    # the completed data ID carries implied dimensions
    assert r1.data_id["band"] == "r" and r1.data_id["physical_filter"] == "HSC-R"
    assert r1.run == RUN
    with pytest.raises(MissingDatasetError):
        b.get("summary", instrument="HSC", visit=903335)


def test_put_get_round_trip_fits(b: Butler):
    pytest.importorskip("astropy")
    image = np.arange(20, dtype=np.float32).reshape(4, 5)
    ref = b.put(image, "calexp", instrument="HSC", visit=903335, detector=2)
    hdul = b.get(ref)
    assert np.array_equal(hdul[0].data, image)
    again = b.get("calexp", instrument="HSC", visit=903335, detector=2)
    assert np.array_equal(again[0].data, image)
    assert path_of(b, ref).suffix == ".fits"


def test_get_through_collections_and_chains(b: Butler):
    old = b.put({"v": "old"}, "summary", instrument="HSC", visit=903334, run="HSC/runs/old")
    new = b.put({"v": "new"}, "summary", instrument="HSC", visit=903334, run="HSC/runs/new")
    only_old = b.put({"v": "only-old"}, "summary", instrument="HSC", visit=903335,
                     run="HSC/runs/old")
    chain(b, "HSC/defaults", ["HSC/runs/new", "HSC/runs/old"])

    assert b.get("summary", instrument="HSC", visit=903334, collections="HSC/defaults") == \
        {"v": "new"}
    assert b.get("summary", instrument="HSC", visit=903335, collections="HSC/defaults") == \
        {"v": "only-old"}
    assert b.find_dataset("summary", instrument="HSC", visit=903334,
                          collections="HSC/defaults") == new
    # explicit search order overrides, and chains nest
    assert b.get("summary", instrument="HSC", visit=903334,
                 collections=["HSC/runs/old", "HSC/runs/new"]) == {"v": "old"}
    b.registry.collections.set_chain("HSC/defaults", ["HSC/runs/old", "HSC/runs/new"])
    assert b.find_dataset("summary", instrument="HSC", visit=903334,
                          collections="HSC/defaults") == old
    chain(b, "HSC/outer", ["HSC/defaults"])
    assert b.find_dataset("summary", instrument="HSC", visit=903335,
                          collections="HSC/outer") == only_old
    # a Butler whose default collections is the chain
    with Butler(b.config.root, collections="HSC/outer") as reader:
        assert reader.get("summary", instrument="HSC", visit=903334) == {"v": "old"}
    # a TAGGED collection in the path
    b.registry.register_collection("HSC/tagged", CollectionType.TAGGED)
    b.registry.datasets.associate("HSC/tagged", [new])
    assert b.get("summary", instrument="HSC", visit=903334,
                 collections=["HSC/tagged", "HSC/outer"]) == {"v": "new"}
    with pytest.raises(CollectionError):
        b.get("summary", instrument="HSC", visit=903334, collections="no/such/collection")


def test_exists(b: Butler):
    ref = b.put({"a": 1}, "summary", instrument="HSC", visit=903336)
    assert b.exists(ref)
    assert b.exists("summary", instrument="HSC", visit=903336)
    assert b.exists("summary", {"instrument": "HSC", "visit": 903336}, collections=[RUN])
    assert not b.exists("summary", instrument="HSC", visit=903337)
    # registered, but its file vanished: not there for a user
    path_of(b, ref).unlink()
    assert not b.exists(ref)
    with pytest.raises(DatastoreError):
        b.get(ref)


def test_get_uri_points_at_file_under_run_directory(b: Butler):
    ref = b.put(np.zeros(3), "psf", instrument="HSC", visit=903334, detector=3)
    uri = b.get_uri(ref)
    assert uri.startswith("file://")
    path = path_of(b, ref)
    assert path.is_file()
    root = b.config.root.resolve()
    relative = path.relative_to(root).as_posix()
    assert relative.startswith(RUN + "/psf/")
    assert "903334" in relative and relative.endswith(".npy")
    assert b.get_uri("psf", instrument="HSC", visit=903334, detector=3) == uri


# -- checksums ------------------------------------------------------------------


def test_every_stored_file_has_size_and_xxh3_128(b: Butler, tmp_path: Path):
    refs = [
        b.put({"k": [1, 2]}, "summary", instrument="HSC", visit=903334),
        b.put(np.ones((2, 2)), "psf", instrument="HSC", visit=903334, detector=0),
        b.put(b"\x00\x01payload", "raw", instrument="HSC", exposure=903334, detector=0),
    ]
    refs += b.ingest([raw_dataset(raw_file(tmp_path, "a.dat"), 903335, 0)])
    for ref in refs:
        stored, held_at = b.registry.datasets.file(ref.id)
        assert held_at is None
        data = path_of(b, ref).read_bytes()
        assert stored.size == len(data)
        assert stored.checksum == xxhash.xxh3_128(data).hexdigest()
        assert len(stored.checksum) == 32


# -- atomic writes ----------------------------------------------------------------


def test_put_of_wrong_type_leaves_nothing(b: Butler):
    with pytest.raises(DatastoreError, match="NumpyArray"):
        b.put("not an array", "psf", instrument="HSC", visit=903334, detector=0,
              run="HSC/failed")
    with pytest.raises(DatastoreError):
        b.put({"not": "bytes"}, "raw", instrument="HSC", exposure=903334, detector=0)
    assert count_rows(b, "dataset") == 0 and count_rows(b, "file") == 0
    assert data_files(b.config.root) == []
    assert temp_files(b.config.root) == []
    # the failed put did not leave an empty run behind either
    assert not b.registry.collections.exists("HSC/failed")


def test_put_into_taken_slot_is_refused_and_leaves_original(b: Butler):
    first = b.put({"v": 1}, "summary", instrument="HSC", visit=903334)
    before = data_files(b.config.root)
    content = path_of(b, first).read_bytes()
    with pytest.raises(ConflictError):
        b.put({"v": 2}, "summary", instrument="HSC", visit=903334)
    assert data_files(b.config.root) == before
    assert temp_files(b.config.root) == []
    assert path_of(b, first).read_bytes() == content
    assert b.get("summary", instrument="HSC", visit=903334) == {"v": 1}
    assert count_rows(b, "dataset") == 1 and count_rows(b, "file") == 1
    assert b.verify().ok


def test_registry_failure_after_staging_leaves_nothing(b: Butler, monkeypatch):
    def broken_insert(*args, **kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr(b.registry.datasets, "insert", broken_insert)
    with pytest.raises(RuntimeError, match="went away"):
        b.put({"v": 1}, "summary", instrument="HSC", visit=903334)
    monkeypatch.undo()
    assert data_files(b.config.root) == [] and temp_files(b.config.root) == []
    assert count_rows(b, "dataset") == 0 and count_rows(b, "file") == 0
    assert not b.registry.collections.exists(RUN)  # the new run came to nothing
    # the repository still works afterwards
    b.put({"v": 2}, "summary", instrument="HSC", visit=903334)
    assert b.get("summary", instrument="HSC", visit=903334) == {"v": 2}


def test_failure_after_files_were_renamed_into_place_removes_them(b: Butler, tmp_path,
                                                                  monkeypatch):
    sources = [raw_file(tmp_path, f"r{d}.dat") for d in range(2)]
    from federation.datastore.posix import StagedFile

    original_commit = StagedFile.commit
    calls = []

    def commit_then_fail(self):
        calls.append(self)
        if len(calls) == 2:  # the first file is already in its final place
            assert data_files(b.config.root) != []
            raise RuntimeError("crash during commit")
        original_commit(self)

    monkeypatch.setattr(StagedFile, "commit", commit_then_fail)
    with pytest.raises(RuntimeError, match="crash"):
        b.ingest([raw_dataset(s, 903334, d) for d, s in enumerate(sources)], transfer="move")
    monkeypatch.undo()
    assert data_files(b.config.root) == [] and temp_files(b.config.root) == []
    assert count_rows(b, "dataset") == 0
    assert all(s.is_file() for s in sources)  # a failed move keeps its sources


# -- ingest ------------------------------------------------------------------------


@pytest.mark.parametrize("transfer", ["copy", "move", "hardlink", "symlink", "direct"])
def test_ingest_transfer_modes(b: Butler, tmp_path: Path, transfer: str):
    payload = b"\x89raw-bytes" * 100
    src = raw_file(tmp_path, "HSCA903334_01.dat", payload)
    src_inode = src.stat().st_ino
    (ref,) = b.ingest([raw_dataset(src, 903334, 1)], transfer=transfer)
    assert ref.run == RUN
    assert b.get(ref) == payload
    assert b.get("raw", instrument="HSC", exposure=903334, detector=1) == payload
    stored, _ = b.registry.datasets.file(ref.id)
    assert stored.size == len(payload)
    assert stored.checksum == xxhash.xxh3_128(payload).hexdigest()
    path = path_of(b, ref)
    root = b.config.root.resolve()
    if transfer == "direct":
        assert stored.path == str(src.absolute())
        assert path == src.absolute()
        assert b.get_uri(ref) == src.absolute().as_uri()
        assert src.is_file() and data_files(b.config.root) == []
        b.remove([ref])  # a file ingested in place belongs to the user
        assert src.read_bytes() == payload
        return
    assert path.relative_to(root).as_posix().startswith(RUN + "/raw/")
    assert not os.path.isabs(stored.path)
    if transfer == "copy":
        assert src.read_bytes() == payload
        assert not path.is_symlink() and path.stat().st_ino != src_inode
    elif transfer == "move":
        assert not src.exists()
        assert path.read_bytes() == payload
    elif transfer == "hardlink":
        assert src.is_file()
        assert path.stat().st_ino == src_inode and not path.is_symlink()
    elif transfer == "symlink":
        assert path.is_symlink()
        assert Path(os.readlink(path)) == src.resolve()
    assert temp_files(b.config.root) == []
    assert b.verify().ok
    b.remove([ref])
    if transfer in ("copy", "hardlink", "symlink"):
        assert src.read_bytes() == payload  # removing the dataset never touches the source


def test_ingest_of_missing_file_registers_nothing(b: Butler, tmp_path: Path):
    with pytest.raises(InputError, match="nope.dat"):
        b.ingest([raw_dataset(tmp_path / "nope.dat", 903334, 0)], run="HSC/raw/missing")
    assert count_rows(b, "dataset") == 0
    assert not b.registry.collections.exists("HSC/raw/missing")
    assert data_files(b.config.root) == []


@pytest.mark.parametrize("transfer", ["copy", "move"])
def test_bulk_ingest_with_one_bad_data_id_registers_none(b: Butler, tmp_path, transfer):
    sources = [raw_file(tmp_path, f"e{e}d{d}.dat") for e in (903334, 903335) for d in (0, 1)]
    datasets = [raw_dataset(s, e, d) for s, (e, d) in zip(
        sources, [(e, d) for e in (903334, 903335) for d in (0, 1)], strict=True)]
    datasets.insert(2, raw_dataset(raw_file(tmp_path, "bad.dat"), 903334, 99))  # no detector 99
    with pytest.raises(DataIdError, match="detector"):
        b.ingest(datasets, transfer=transfer)
    assert count_rows(b, "dataset") == 0 and count_rows(b, "file") == 0
    assert data_files(b.config.root) == [] and temp_files(b.config.root) == []
    assert all(s.is_file() for s in sources)
    assert not b.registry.collections.exists(RUN)
    # fixing the bad one lets the whole batch in
    datasets[2] = raw_dataset(datasets[2].path, 903336, 0)
    refs = b.ingest(datasets, transfer=transfer)
    assert len(refs) == 5 and len(b.query_datasets("raw", RUN)) == 5


def test_deterministic_ids_agree_between_repositories(b: Butler, tmp_path, other_db_url):
    sources = [raw_file(tmp_path, f"det{d}.dat") for d in range(3)]
    datasets = [raw_dataset(s, 903334, d) for d, s in enumerate(sources)]
    here = b.ingest(datasets, transfer="copy", id_mode="deterministic")
    other_root = Butler.create(tmp_path / "other", db=other_db_url, site="IN2P3")
    with Butler(other_root, run="HSC/raw/all") as other:
        insert_hsc_records(other.registry)
        other.registry.register_dataset_type("raw", ["instrument", "exposure", "detector"],
                                             "Bytes")
        there = other.ingest(datasets, transfer="copy", id_mode="deterministic")
        assert [r.id for r in there] == [r.id for r in here]
        assert other.get(there[0]) == sources[0].read_bytes()
    # random IDs differ, and a deterministic ID cannot be ingested twice
    random_refs = b.ingest(datasets, run="HSC/raw/random", transfer="copy")
    assert not {r.id for r in random_refs} & {r.id for r in here}
    with pytest.raises(ConflictError):
        b.ingest(datasets[:1], run="HSC/raw/again", transfer="copy", id_mode="deterministic")


def test_ingest_of_file_already_at_its_destination(b: Butler, tmp_path):
    """Re-ingesting a crash leftover in place, in any mode, keeps its content."""
    for detector, transfer in enumerate(["copy", "move", "hardlink", "symlink"]):
        payload = f"leftover {transfer}".encode() * 50
        (ref,) = b.ingest([raw_dataset(raw_file(tmp_path, "x.dat", payload), 903334, detector)])
        path = path_of(b, ref)
        b.remove([ref])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(payload)  # the orphan: a file at the destination, no record
        (again,) = b.ingest([raw_dataset(path, 903334, detector)], transfer=transfer)
        assert b.get(again) == payload, transfer
        assert path_of(b, again) == path and path.read_bytes() == payload
        assert temp_files(b.config.root) == []
    assert b.verify().ok and b.verify().checked == 4


def test_ingest_cannot_take_over_a_registered_file(b: Butler, tmp_path):
    payload = b"registered" * 20
    (owner,) = b.ingest([raw_dataset(raw_file(tmp_path, "o.dat", payload), 903334, 0)])
    owned = path_of(b, owner)
    for transfer in ("move", "symlink", "direct"):
        with pytest.raises(DatastoreError, match=str(owner.id)):
            b.ingest([raw_dataset(owned, 903335, 0)], transfer=transfer)
        assert owned.read_bytes() == payload and b.get(owner) == payload
        assert count_rows(b, "dataset") == 1 and b.verify().ok
    # copying it is fine
    (copy,) = b.ingest([raw_dataset(owned, 903335, 0)], transfer="copy")
    assert b.get(copy) == payload and b.verify().ok


@pytest.mark.parametrize("kind", ["fifo", "device", "directory"])
def test_ingest_refuses_anything_but_regular_files(b: Butler, tmp_path: Path, kind: str):
    """A FIFO would block the read forever and /dev/zero never ends: refused before reading."""
    good = raw_file(tmp_path, "good.dat")
    odd = {"fifo": tmp_path / "pipe", "device": Path("/dev/zero"),
           "directory": tmp_path / "dir"}[kind]
    if kind == "fifo":
        os.mkfifo(odd)
    elif kind == "directory":
        odd.mkdir()
    what = {"fifo": "a FIFO (named pipe)", "device": "a character device",
            "directory": "a directory"}[kind]
    for transfer in ("copy", "symlink", "direct"):
        datasets = [raw_dataset(good, 903334, 0),
                    FileDataset(odd, "raw", {"instrument": "HSC", "exposure": 903334,
                                             "detector": 1}, origin="list.csv:3")]
        with pytest.raises(InputError) as info:
            finishes(lambda datasets=datasets, t=transfer: b.ingest(datasets, transfer=t))
        assert str(info.value) == (f"list.csv:3: {odd} is {what}, not a regular file: "
                                   "only regular files can be ingested")
    assert count_rows(b, "dataset") == 0 and data_files(b.config.root) == []
    assert not b.registry.collections.exists(RUN)


def test_ingest_errors_name_the_file_origin(b: Butler, tmp_path: Path):
    """Errors about one file of a bulk ingest start with where it was listed."""
    files = [raw_file(tmp_path, f"f{d}.dat") for d in range(3)]

    def listed(detectors, exposure=903334) -> list[FileDataset]:
        return [FileDataset(f, "raw", {"instrument": "HSC", "exposure": exposure,
                                       "detector": d}, origin=f"t.csv:{i + 2}")
                for i, (f, d) in enumerate(zip(files, detectors, strict=True))]

    with pytest.raises(DataIdError, match=r"^t\.csv:4: no detector record for instrument="):
        b.ingest(listed([0, 1, 99]))
    with pytest.raises(DataIdError, match=r"^t\.csv:3: dimension 'detector' needs an integer"):
        b.ingest(listed([0, "one", 2]))
    with pytest.raises(ConflictError, match=r"^t\.csv:4: two datasets with the same type and "
                                            r"data ID .* \(also t\.csv:2\)"):
        b.ingest(listed([0, 1, 0]))
    files[2].unlink()
    with pytest.raises(InputError, match=r"^t\.csv:4: cannot read .*f2\.dat: No such file"):
        b.ingest(listed([0, 1, 2]))
    assert count_rows(b, "dataset") == 0 and data_files(b.config.root) == []


# -- queries --------------------------------------------------------------------


@pytest.fixture
def populated(b: Butler) -> Butler:
    """summary for every visit, raw for every exposure x detectors 0-1, in RUN."""
    b.registry.insert_dimension_records("exposure", [{
        "instrument": "HSC", "exposure": 903338, "physical_filter": "HSC-R",
        "day_obs": 20130617, "obs_id": "HSCA903338", "exposure_time": 0.0,
        "observation_type": "bias"}])
    for visit in (903334, 903335, 903336, 903337):
        b.put({"visit": visit}, "summary", instrument="HSC", visit=visit)
    for exposure in (903334, 903335, 903336, 903337, 903338):
        for detector in (0, 1):
            b.put(b"x", "raw", instrument="HSC", exposure=exposure, detector=detector)
    return b


def visits(refs) -> list[int]:
    return sorted(r.data_id["visit"] for r in refs)


def test_query_datasets_where(populated: Butler):
    b = populated
    where = "instrument = 'HSC' AND visit IN (903334..903336) AND band = 'r'"
    assert visits(b.query_datasets("summary", RUN, where=where)) == R_VISITS
    # band really filters: the HSC-I visit in the range is dropped
    assert visits(b.query_datasets("summary", RUN,
                                   where="visit IN (903334..903337) AND band = 'r'")) == R_VISITS
    assert visits(b.query_datasets("summary", RUN, where="band = 'i'")) == [903337]
    assert visits(b.query_datasets("summary", where="visit > 903335")) == [903336, 903337]
    # bind parameters, including a list for IN
    refs = b.query_datasets("raw", RUN, where="exposure = :e AND detector IN (:dets)",
                            bind={"e": 903335, "dets": [1]})
    assert [(r.data_id["exposure"], r.data_id["detector"]) for r in refs] == [(903335, 1)]
    refs = b.query_datasets(["raw"], [RUN], where="physical_filter = :f", bind={"f": "HSC-I"})
    assert sorted(r.data_id["detector"] for r in refs) == [0, 1]
    # a field of a dimension record: the bias exposure is not science
    science = b.query_datasets("raw", RUN, where="exposure.observation_type = 'science'")
    assert sorted({r.data_id["exposure"] for r in science}) == [903334, 903335, 903336, 903337]
    bias = b.query_datasets("raw", RUN, where="exposure.observation_type = :t",
                            bind={"t": "bias"})
    assert {r.data_id["exposure"] for r in bias} == {903338} and len(bias) == 2
    # glob over dataset types, no where: everything
    assert len(b.query_datasets("*", RUN)) == 4 + 10
    assert len(b.query_datasets(None, RUN, where="visit = 903334")) == 1


def test_query_datasets_find_first_over_chain(b: Butler):
    old = [b.put({"v": v}, "summary", instrument="HSC", visit=v, run="HSC/old")
           for v in (903334, 903335, 903336)]
    new = [b.put({"v": v, "new": True}, "summary", instrument="HSC", visit=v, run="HSC/new")
           for v in (903334, 903335)]
    chain(b, "HSC/chain", ["HSC/new", "HSC/old"])
    first = b.query_datasets("summary", "HSC/chain")
    assert {r.id for r in first} == {new[0].id, new[1].id, old[2].id}
    assert {r.run for r in first if r.data_id["visit"] == 903334} == {"HSC/new"}
    every = b.query_datasets("summary", "HSC/chain", find_first=False)
    assert {r.id for r in every} == {r.id for r in old + new}
    # order of the chain decides
    b.registry.collections.set_chain("HSC/chain", ["HSC/old", "HSC/new"])
    assert {r.id for r in b.query_datasets("summary", "HSC/chain")} == {r.id for r in old}
    # find-first combined with a where clause
    refs = b.query_datasets("summary", ["HSC/new", "HSC/old"], where="visit >= 903335")
    assert {r.id for r in refs} == {new[1].id, old[2].id}


def test_query_datasets_bad_where(populated: Butler):
    b = populated
    text = "visit = 903334 AND AND band = 'r'"
    with pytest.raises(ExpressionError) as info:
        b.query_datasets("summary", RUN, where=text)
    col = text.index("AND AND") + 5  # 1-based column of the second AND
    assert f"column {col}" in str(info.value)
    assert info.value.column == col
    with pytest.raises(ExpressionError, match="column"):
        b.query_datasets("summary", RUN, where="visit = ")
    with pytest.raises(ExpressionError, match="'filter'"):
        b.query_datasets("summary", RUN, where="filter = 'r'")
    with pytest.raises(ExpressionError, match="exposure.nonsense"):
        b.query_datasets("raw", RUN, where="exposure.nonsense = 1")
    with pytest.raises(ExpressionError, match="bind"):
        b.query_datasets("raw", RUN, where="exposure = :missing")


def test_query_dimension_records(butler: Butler):
    recs = butler.query_dimension_records(
        "exposure", where="physical_filter = 'HSC-R' AND exposure > 903334")
    assert [r["exposure"] for r in recs] == [903335, 903336]
    assert recs[0]["observation_type"] == "science"
    assert recs[0]["timespan"] is not None
    recs = butler.query_dimension_records("visit", where="visit IN (:v)",
                                          bind={"v": [903337, 903334]})
    assert [(r["visit"], r["physical_filter"]) for r in recs] == [
        (903334, "HSC-R"), (903337, "HSC-I")]
    assert len(butler.query_dimension_records("detector")) == 4
    assert butler.query_dimension_records("detector", where="detector > 10") == []
    with pytest.raises(ExpressionError):
        butler.query_dimension_records("visit", where="band = 'r'")
    with pytest.raises(ExpressionError):
        butler.query_dimension_records("visit", where="visit ==")


def test_data_id_without_record_here_finds_no_dataset(b: Butler):
    """A site that never synced exposure 903340's record holds no dataset for it:
    lookups say so instead of asking the user to insert dimension records."""
    b.put(b"raw", "raw", instrument="HSC", exposure=903334, detector=0)
    b.put({"v": 1}, "summary", instrument="HSC", visit=903334, run="calib/run")
    b.registry.register_collection("calib", CollectionType.CALIBRATION)
    b.registry.datasets.certify("calib", b.query_datasets("summary", "calib/run"), Timespan())
    missing = {"instrument": "HSC", "exposure": 903340, "detector": 0}
    assert b.find_dataset("raw", missing) is None
    assert not b.exists("raw", missing)
    with pytest.raises(MissingDatasetError) as info:
        b.get("raw", missing)
    message = str(info.value)
    assert message.startswith(f"no raw dataset with data ID {missing} in collections {RUN}: "
                              "this repository holds no exposure record for instrument='HSC', "
                              "exposure=903340")
    assert "never synced here" in message and "insert" not in message
    with pytest.raises(MissingDatasetError, match="holds no exposure record"):
        b.get_uri("raw", missing)
    # The same when the unknown exposure only gives the time of a calibration lookup.
    assert b.find_dataset("summary", instrument="HSC", visit=903334, exposure=903340,
                          collections="calib") is None
    with pytest.raises(MissingDatasetError, match="holds no exposure record"):
        b.get("summary", instrument="HSC", visit=903334, exposure=903340, collections="calib")
    # Mistakes in the data ID itself are still reported as such.
    with pytest.raises(DataIdError, match="missing detector"):
        b.get("raw", instrument="HSC", exposure=903334)
    with pytest.raises(DataIdError, match="needs an integer"):
        b.find_dataset("raw", instrument="HSC", exposure="x", detector=0)


# -- collection contents -------------------------------------------------------------


def test_disassociate(b: Butler):
    refs = [b.put({"v": v}, "summary", instrument="HSC", visit=v) for v in R_VISITS]
    b.registry.register_collection("HSC/tagged", CollectionType.TAGGED)
    b.registry.datasets.associate("HSC/tagged", refs[:2])
    assert b.disassociate("HSC/tagged", refs[1:]) == 1  # refs[2] was not tagged
    assert b.query_datasets("summary", "HSC/tagged") == [refs[0]]
    assert b.query_datasets("summary", RUN) == refs  # the datasets stay
    assert b.disassociate("HSC/tagged", refs[1:]) == 0
    with pytest.raises(CollectionError, match="is RUN, not TAGGED"):
        b.disassociate(RUN, refs)
    with pytest.raises(CollectionError, match="no collection named 'nope'"):
        b.disassociate("nope", refs)


def test_decertify(b: Butler):
    biases = [b.put(np.full(2, d), "psf", instrument="HSC", visit=903334, detector=d,
                    run="HSC/calib/gen") for d in (0, 1)]
    b.registry.register_collection("HSC/calib", CollectionType.CALIBRATION)
    b.registry.datasets.certify("HSC/calib", biases,
                                Timespan.from_values("2013-01-01", "2014-01-01"))

    def valid(detector: int, when: str):
        return b.find_dataset("psf", instrument="HSC", visit=903334, detector=detector,
                              collections="HSC/calib", timespan=Timespan.instant(when))

    june = Timespan.from_values("2013-06-01", "2013-07-01")
    assert b.decertify("HSC/calib", "psf", june,
                       data_ids=[{"instrument": "HSC", "visit": 903334, "detector": 0}]) == 1
    assert valid(0, "2013-06-15") is None and valid(0, "2013-05-15") == biases[0]
    assert valid(0, "2013-07-15") == biases[0]  # split in two around June
    assert valid(1, "2013-06-15") == biases[1]  # another data ID: untouched
    assert b.decertify("HSC/calib", "psf", june, data_ids=[]) == 0
    assert b.decertify("HSC/calib", "psf", june) == 1  # every data ID: detector 1 now
    assert valid(1, "2013-06-15") is None and valid(1, "2013-08-01") == biases[1]
    assert b.query_datasets("psf", "HSC/calib/gen") == biases  # the datasets stay
    with pytest.raises(CollectionError, match="is RUN, not CALIBRATION"):
        b.decertify("HSC/calib/gen", "psf", june)


def test_remove_collection(b: Butler):
    refs = [b.put({"v": v}, "summary", instrument="HSC", visit=v) for v in R_VISITS]
    reg = b.registry
    reg.register_collection("HSC/tagged", CollectionType.TAGGED)
    reg.datasets.associate("HSC/tagged", refs)
    reg.register_collection("HSC/calib", CollectionType.CALIBRATION)
    reg.datasets.certify("HSC/calib", refs, Timespan())
    chain(b, "HSC/defaults", [RUN, "HSC/tagged"])
    assert count_rows(b, "tag") == 3 and count_rows(b, "calib") == 3

    with pytest.raises(CollectionError, match="RUN.*use remove_runs"):
        b.remove_collection(RUN)
    with pytest.raises(CollectionError, match="in chained collection 'HSC/defaults'"):
        b.remove_collection("HSC/tagged")
    assert reg.collections.exists("HSC/tagged") and count_rows(b, "tag") == 3

    b.remove_collection("HSC/calib")  # its certifications go with it (foreign keys cascade)
    assert not reg.collections.exists("HSC/calib") and count_rows(b, "calib") == 0
    b.remove_collection("HSC/tagged", unlink_chains=True)
    assert count_rows(b, "tag") == 0 and count_rows(b, "tag_removed") == 0
    assert reg.collections.children("HSC/defaults") == [RUN]
    b.remove_collection("HSC/defaults")  # a chain: its links go, its children stay
    assert count_rows(b, "collection_chain") == 0
    assert [c.name for c in reg.collections.query()] == [RUN]
    assert b.query_datasets("summary", RUN) == refs and b.verify().ok
    # A new collection under an old name starts empty.
    reg.register_collection("HSC/tagged", CollectionType.TAGGED)
    assert b.query_datasets("summary", "HSC/tagged") == []
    with pytest.raises(CollectionError, match="no collection named 'HSC/calib'"):
        b.remove_collection("HSC/calib")


# -- removal -----------------------------------------------------------------------


def test_remove_deletes_records_files_tags_and_certifications(b: Butler):
    keep = b.put({"keep": True}, "summary", instrument="HSC", visit=903335)
    ref = b.put({"gone": True}, "summary", instrument="HSC", visit=903334)
    path = path_of(b, ref)
    b.registry.register_collection("HSC/tagged", CollectionType.TAGGED)
    b.registry.datasets.associate("HSC/tagged", [ref, keep])
    b.registry.register_collection("HSC/calib", CollectionType.CALIBRATION)
    b.registry.datasets.certify("HSC/calib", [ref], Timespan.from_values("2013-01-01",
                                                                         "2014-01-01"))
    assert b.remove([ref]) == 1
    assert not path.exists()
    assert b.registry.datasets.get(ref.id) is None
    assert b.registry.datasets.file(ref.id) is None
    assert not b.exists(ref)
    with pytest.raises(MissingDatasetError):
        b.get(ref)
    assert b.query_datasets("summary", "HSC/tagged") == [keep]
    assert b.registry.datasets.certifications("HSC/calib") == []
    assert b.get(keep) == {"keep": True} and b.verify().ok
    # the slot is free again
    b.put({"again": True}, "summary", instrument="HSC", visit=903334)
    assert b.get("summary", instrument="HSC", visit=903334) == {"again": True}


def test_remove_runs(b: Butler):
    doomed = [b.put({"v": v}, "summary", instrument="HSC", visit=v, run="HSC/doomed")
              for v in (903334, 903335)]
    kept = b.put({"v": 1}, "summary", instrument="HSC", visit=903334, run="HSC/kept")
    paths = [path_of(b, r) for r in doomed]
    chain(b, "HSC/chain", ["HSC/kept", "HSC/doomed"])

    with pytest.raises(CollectionError, match="HSC/chain"):
        b.remove_runs(["HSC/doomed"])
    assert all(p.exists() for p in paths)  # refused: nothing removed
    assert b.registry.collections.exists("HSC/doomed")
    assert len(b.query_datasets("summary", "HSC/doomed")) == 2

    assert b.remove_runs(["HSC/doomed"], unlink_chains=True) == 2
    assert not any(p.exists() for p in paths)
    assert not b.registry.collections.exists("HSC/doomed")
    assert b.registry.collections.children("HSC/chain") == ["HSC/kept"]
    assert all(b.registry.datasets.get(r.id) is None for r in doomed)
    assert b.query_datasets("summary", "HSC/chain") == [kept]
    assert b.get(kept) == {"v": 1}
    with pytest.raises(CollectionError):
        b.remove_runs(["HSC/doomed"])
    with pytest.raises(CollectionError):
        b.remove_runs(["HSC/chain"])  # not a RUN
    assert b.remove_runs(["HSC/kept"], unlink_chains=True) == 1
    assert data_files(b.config.root) == []


# -- verify ------------------------------------------------------------------------


def test_verify_reports_damage(b: Butler, tmp_path: Path):
    refs = [b.put({"v": v}, "summary", instrument="HSC", visit=v) for v in R_VISITS]
    refs.append(b.put(np.arange(100), "psf", instrument="HSC", visit=903334, detector=0))
    report = b.verify()
    assert report.ok and report.checked == 4 and report.problems == []

    flipped, deleted, truncated, fine = refs
    p = path_of(b, flipped)
    data = bytearray(p.read_bytes())
    data[5] ^= 0xFF
    p.write_bytes(bytes(data))
    path_of(b, deleted).unlink()
    p = path_of(b, truncated)
    p.write_bytes(p.read_bytes()[:-10])

    report = b.verify()
    assert not report.ok and report.checked == 4
    problems = {problem.dataset_id: (problem.path, problem.problem)
                for problem in report.problems}
    assert set(problems) == {flipped.id, deleted.id, truncated.id}
    # Each message says which value is the file's and which the record's.
    record = b.registry.datasets.file(flipped.id)[0]
    actual = xxhash.xxh3_128_hexdigest(path_of(b, flipped).read_bytes())
    assert problems[flipped.id][1] == (f"checksum mismatch: the file's xxh3-128 is {actual}, "
                                       f"its record says {record.checksum}")
    assert problems[deleted.id][1] == "missing"
    record = b.registry.datasets.file(truncated.id)[0]
    assert problems[truncated.id][1] == (f"size mismatch: the file has {record.size - 10} "
                                         f"bytes, its record says {record.size}")
    assert problems[flipped.id][0] == b.registry.datasets.file(flipped.id)[0].path
    assert b.verify([fine]).ok
    assert not b.verify([deleted]).ok


def test_verify_reports_unreadable_file_instead_of_crashing(b: Butler, tmp_path: Path):
    probe = tmp_path / "probe"
    probe.mkdir()
    size = probe.stat().st_size  # an empty directory's size on this file system
    ref = b.put(b"x" * size, "raw", instrument="HSC", exposure=903334, detector=0)
    path = path_of(b, ref)
    path.unlink()
    path.mkdir()  # same size as recorded, but cannot be read as a file
    report = b.verify()
    assert [(i, why) for i, _, why in report.problems] == [
        (ref.id, "not a regular file (a directory)")]


def test_verify_and_get_do_not_hang_on_a_fifo(b: Butler):
    """A datastore file replaced by a FIFO: reading it would block forever."""
    ref = b.put(b"", "raw", instrument="HSC", exposure=903334, detector=0)
    path = path_of(b, ref)
    path.unlink()
    os.mkfifo(path)
    report = finishes(b.verify)
    assert [why for _, _, why in report.problems] == ["not a regular file (a FIFO (named pipe))"]
    with pytest.raises(DatastoreError, match="is a FIFO"):
        finishes(lambda: b.get(ref))


# -- creating and opening ---------------------------------------------------------


def test_create_twice_is_refused(repo: Path, db_url, tmp_path: Path):
    with pytest.raises(ConfigError, match="already"):
        Butler.create(repo, db=db_url, site="NCSA")
    # another directory on the same registry database is refused too, and removed
    used_db = RepoConfig.load(repo).db_url
    with pytest.raises(ConfigError, match="already"):
        Butler.create(tmp_path / "second", db=used_db, site="NCSA")
    assert not (tmp_path / "second").exists()
    with Butler(repo) as butler:
        assert butler.site == "NCSA"


def test_create_over_lost_config_keeps_existing_registry(butler: Butler, db_url):
    """A repository whose federation.yaml went missing keeps its database on a failed create."""
    repo = butler.config.root
    config = (repo / CONFIG_NAME).read_text()
    butler.close()
    (repo / CONFIG_NAME).unlink()
    with pytest.raises(ConfigError, match="already"):
        Butler.create(repo, db=db_url, site="NCSA")
    assert repo.is_dir()
    (repo / CONFIG_NAME).write_text(config)
    with Butler(repo) as again:
        assert len(again.query_dimension_records("exposure")) == 4


def test_create_with_bad_database_leaves_nothing(tmp_path: Path, db_url):
    target = tmp_path / "deep" / "new-repo"
    with pytest.raises(ConfigError):
        Butler.create(target, db="nosuchdb://user@host/db")
    assert not target.exists()
    with pytest.raises(ConfigError):
        Butler.create(target, db=":::not a url")
    assert not target.exists()
    if db_url is None:
        unreachable = f"sqlite:///{tmp_path / 'missing-dir' / 'x' / 'registry.sqlite3'}"
    else:
        unreachable = "postgresql+psycopg://postgres@127.0.0.1:1/postgres"
    with pytest.raises(ConfigError, match="database"):
        Butler.create(target, db=unreachable)
    assert not target.exists() and not (tmp_path / "deep").exists()
    with pytest.raises(ConfigError):
        Butler.create(target, db=db_url, site="bad site!")
    assert not target.exists()


def test_open_non_repository(tmp_path: Path, db_url):
    with pytest.raises(ConfigError, match="not a federation repository"):
        Butler(tmp_path)
    with pytest.raises(ConfigError):
        Butler(tmp_path / "does-not-exist")
    for text in ("registry: [unclosed\n", "- a list\n", "registry: [a, b]\n",
                 "registry: {db: 5}\n", "datastore: {templates: [x]}\n"):
        (tmp_path / CONFIG_NAME).write_text(text)
        with pytest.raises(ConfigError, match=CONFIG_NAME):
            Butler(tmp_path)
    (tmp_path / "a-file").write_text("not a directory")
    with pytest.raises(ConfigError):
        Butler.create(tmp_path / "a-file", db=db_url)
    assert (tmp_path / "a-file").read_text() == "not a directory"


# -- crash leftovers ------------------------------------------------------------


def test_put_replaces_orphan_file_at_destination(b: Butler):
    ref = b.put({"v": "first"}, "summary", instrument="HSC", visit=903334)
    path = path_of(b, ref)
    b.remove([ref])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("half-written garbage from a crashed put")
    again = b.put({"v": "second"}, "summary", instrument="HSC", visit=903334)
    assert path_of(b, again) == path
    assert b.get(again) == {"v": "second"}
    assert json.loads(path.read_text()) == {"v": "second"}
    assert b.verify().ok and temp_files(b.config.root) == []


def test_put_refuses_path_owned_by_another_dataset(b: Butler, monkeypatch):
    b.registry.insert_dimension_records("skymap", [{"skymap": "hsc rings"},
                                                   {"skymap": "hsc_rings"}])
    b.registry.register_dataset_type("skyinfo", ["skymap"], "JSON")
    first = b.put({"v": 1}, "skyinfo", skymap="hsc rings")
    path = path_of(b, first)
    # A template that maps two datasets to one path (impossible with the built-in
    # templates, which percent-encode values) must not let the second overwrite the first.
    monkeypatch.setattr(b.datastore, "_relative_path",
                        lambda ref, ext: path.relative_to(b.config.root).as_posix())
    with pytest.raises(ConflictError, match=str(first.id)):
        b.put({"v": 2}, "skyinfo", skymap="hsc_rings")
    monkeypatch.undo()
    assert b.get(first) == {"v": 1} and json.loads(path.read_text()) == {"v": 1}
    assert count_rows(b, "dataset") == 1
    assert temp_files(b.config.root) == []
    assert not b.exists("skyinfo", skymap="hsc_rings")
    assert b.verify().ok


def test_user_mistakes_are_federation_errors(b: Butler):
    with pytest.raises(FederationError):
        b.get("summary", instrument="HSC", visit=1)
    with pytest.raises(FederationError):
        b.put({}, "nope", instrument="HSC")
    with pytest.raises(FederationError):
        b.put({}, "summary", visit=903334)  # instrument missing
    with pytest.raises(FederationError):
        b.put({}, "summary", instrument="HSC", visit=903334, run="bad run name")
    assert count_rows(b, "dataset") == 0 and data_files(b.config.root) == []


def test_put_without_run_is_refused(repo: Path):
    with Butler(repo) as reader:
        insert_hsc_records(reader.registry)
        reader.registry.register_dataset_type("summary", ["instrument", "visit"], "JSON")
        with pytest.raises(CollectionError, match="run"):
            reader.put({}, "summary", instrument="HSC", visit=903334)
        assert reader.registry.collections.query() == []
