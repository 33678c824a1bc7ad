"""`fed rucio register`: a site's files as replicas on its RSE, against a real Rucio server.

The name rules run everywhere; the rest needs the server of rucio_server.py (they skip
without it unless FED_TEST_RUCIO=1).
"""

from __future__ import annotations

import hashlib
import json
import uuid
import zlib
from pathlib import Path

import yaml
from conftest import populate_ncsa
from rucio_federation import RucioFederation, rucio_fed  # noqa: F401  (fixture)
from rucio_server import rucio_server  # noqa: F401  (fixture)

from federation.rucio.names import rucio_name, why_unmappable

RAW = "HSC/raw/all"


def test_names_are_datastore_paths_rucio_accepts() -> None:
    assert rucio_name("HSC/raw/all/raw/903334/raw_HSC_903334_1.npy") == \
        "HSC/raw/all/raw/903334/raw_HSC_903334_1.npy"
    refused = {"/data/in/place.fits": "ingested in place", "a/../../b": "'..'",
               "a//b": "empty", "a b.fits": "' '", "x:y": "':'", "_x": "starts with",
               "runs/HSC/a": "reserved", "releases/DR1/a": "reserved", "a" * 251: "longer"}
    for path, why in refused.items():
        assert rucio_name(path) is None
        assert why in why_unmappable(path), path


def stored(fed: RucioFederation, site: str = "NCSA") -> dict[str, tuple[str, str, str]]:
    """Each file of ``site``'s registry: path -> (dataset id, run, dataset type)."""
    with fed.butler(site) as b:
        files = {i: s.path for i, s, held in b.registry.datasets.iter_files() if held is None}
        refs = b.registry.datasets.get_many(list(files))
    return {path: (str(i), refs[i].run, refs[i].dataset_type.name)
            for i, path in files.items()}


def register(fed: RucioFederation, *args: str, check: bool = True) -> dict:
    done = fed.fed("rucio", "register", "NCSA", "--json", *args, check=check)
    return json.loads(done.stdout)


def sums(path: Path) -> tuple[int, str, str]:
    data = path.read_bytes()
    return len(data), f"{zlib.adler32(data) & 0xFFFFFFFF:08x}", hashlib.md5(data).hexdigest()


def test_register_puts_every_file_on_the_sites_rse(rucio_fed: RucioFederation) -> None:  # noqa: F811
    populate_ncsa(rucio_fed)
    files = stored(rucio_fed)
    assert len(files) == 20  # 16 raws, 4 biases

    first = register(rucio_fed)
    assert (first["registered"], first["already"], first["failed"]) == (20, 0, {})
    assert first["calls"] < 15  # bulk: never one request per file

    client, scope, rse = rucio_fed.client, rucio_fed.scope, rucio_fed.rse("NCSA")
    replicas = {r["name"]: r for r in client.list_replicas(
        [{"scope": scope, "name": name} for name in files], all_states=True)}
    assert set(replicas) == set(files)
    for name, (dataset_id, run, dataset_type) in files.items():
        size, adler32, md5 = sums(rucio_fed.repo("NCSA") / name)
        replica = replicas[name]
        assert replica["states"] == {rse: "AVAILABLE"}
        assert (replica["bytes"], replica["adler32"], replica["md5"]) == (size, adler32, md5)
        meta = client.get_metadata(scope, name, plugin="ALL")
        assert uuid.UUID(str(meta["guid"])) == uuid.UUID(dataset_id)
        assert meta["fed_run"] == run
        assert meta["fed_dataset_type"] == dataset_type
        data_id = json.loads(meta["fed_data_id"])
        assert data_id["instrument"] == "HSC" and data_id["detector"] in range(4)
    runs = {run for _, run, _ in files.values()}
    assert runs == {RAW, "HSC/calib/gen/DM-1"}
    for run in runs:
        attached = {f["name"] for f in client.list_files(scope, f"runs/{run}")}
        assert attached == {n for n, (_, r, _) in files.items() if r == run}

    again = register(rucio_fed)
    assert (again["registered"], again["already"], again["failed"]) == (0, 20, {})
    assert again["calls"] <= 3  # the mapping's check and one listing


def test_a_selection_registers_only_its_files(rucio_fed: RucioFederation) -> None:  # noqa: F811
    populate_ncsa(rucio_fed)
    assert register(rucio_fed, "-t", "bias")["registered"] == 4
    some = register(rucio_fed, "-c", "HSC/raw/good", "--where", "exposure = :e",
                    "--bind", "e=903334")
    assert (some["registered"], some["already"]) == (1, 0)  # the tag holds detector 1 only
    rest = register(rucio_fed)
    assert (rest["registered"], rest["already"], rest["failed"]) == (15, 5, {})
    done = rucio_fed.fed("rucio", "register", "NCSA", "-c", "nope*", check=False)
    assert done.returncode == 1
    assert done.stderr.strip() == ("error: nothing at NCSA matches -c 'nope*'; nothing was "
                                   "registered")


def test_a_corrupted_or_missing_file_is_refused_and_rucio_never_hears_of_it(
        rucio_fed: RucioFederation) -> None:  # noqa: F811
    from federation.operations.release import create

    populate_ncsa(rucio_fed)
    create(rucio_fed.repo("NCSA"), "DR1", [RAW], ["raw"], where="detector < 2")
    raws = sorted(n for n, (_, run, _) in stored(rucio_fed).items() if run == RAW)
    bad, gone = raws[0], raws[1]  # ..._0.npy and ..._1.npy: both released
    path = rucio_fed.repo("NCSA") / bad
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # same size, other content
    path.write_bytes(bytes(data))
    (rucio_fed.repo("NCSA") / gone).unlink()

    done = rucio_fed.fed("rucio", "register", "NCSA", check=False)
    assert done.returncode == 1
    assert f"refused: {bad}: its content no longer matches the registry's xxh3" in done.stdout
    assert f"refused: {gone}: missing: no file at " in done.stdout
    assert "registered 18 files" in done.stdout and "2 refused" in done.stdout
    client, scope = rucio_fed.client, rucio_fed.scope
    assert not list(client.list_replicas([{"scope": scope, "name": n} for n in (bad, gone)],
                                         all_states=True))
    attached = {f["name"] for f in client.list_files(scope, f"runs/{RAW}")}
    assert attached == set(raws) - {bad, gone}

    release = register(rucio_fed, "--release", "DR1", check=False)
    assert (release["registered"], release["already"]) == (0, 6)
    assert set(release["failed"]) == {bad, gone} and release["rule"] is None
    assert release["notes"] == ["release DR1 not registered: 2 of its files were refused"]
    assert not list(client.list_dids(scope, {"name": "releases/*"}, did_type="all"))
    # Only the registered files are held on NCSA's RSE (by fed's file rules); no release.
    assert {r["name"] for r in rucio_fed.rules("NCSA")} == attached | {
        n for n, (_, run, _) in stored(rucio_fed).items() if run != RAW}
    assert {r["comments"] for r in rucio_fed.rules("NCSA")} == {"fed: files of NCSA"}


def test_a_release_gets_a_container_and_a_locked_rule(rucio_fed: RucioFederation) -> None:  # noqa: F811
    from federation.operations.release import create

    populate_ncsa(rucio_fed)
    create(rucio_fed.repo("NCSA"), "DR1", [RAW], ["raw"], where="detector < 2")
    released = {n for n, (_, run, _) in stored(rucio_fed).items()  # ..._EXPOSURE_DETECTOR
                if run == RAW and int(Path(n).stem.split("_")[-1]) < 2}
    assert len(released) == 8

    first = register(rucio_fed, "--release", "DR1")
    assert (first["registered"], first["failed"], first["rule_created"]) == (8, {}, True)
    client, scope, rse = rucio_fed.client, rucio_fed.scope, rucio_fed.rse("NCSA")
    content = {d["name"] for d in client.list_content(scope, "releases/DR1")}
    assert content == {f"releases/DR1/{RAW}"}
    assert set(client.list_dids(scope, {"name": "releases/*"}, did_type="all")) == \
        {"releases/DR1", f"releases/DR1/{RAW}"}
    assert len(list(client.list_dids(scope, {}, did_type="all"))) == 8 + 3  # + runs/RAW
    assert {f["name"] for f in client.list_files(scope, "releases/DR1")} == released
    assert {f["name"] for f in client.list_files(scope, f"runs/{RAW}")} == released
    rules = [r for r in rucio_fed.rules("NCSA") if r["name"] == "releases/DR1"]
    assert len(rules) == 1 and rules[0]["locked"] is True
    assert rules[0]["id"] == first["rule"] and rules[0]["rse_expression"] == rse
    assert rules[0]["state"] == "OK"  # every file is on the RSE already

    again = register(rucio_fed, "--release", "DR1")
    assert (again["registered"], again["already"], again["rule_created"]) == (0, 8, False)
    assert again["rule"] == first["rule"]
    assert again["calls"] <= 4
    assert len([r for r in rucio_fed.rules("NCSA") if r["name"] == "releases/DR1"]) == 1


def test_an_rse_without_the_identity_mapping_is_refused(rucio_fed: RucioFederation) -> None:  # noqa: F811
    populate_ncsa(rucio_fed)
    rse = rucio_fed.rse("NCSA")
    rucio_fed.client.delete_rse_attribute(rse, "lfn2pfn_algorithm")
    rucio_fed.client.add_rse_attribute(rse, "lfn2pfn_algorithm", "hash")
    done = rucio_fed.fed("rucio", "register", "NCSA", check=False)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: the RSE {rse} maps ")
    assert "lfn2pfn_algorithm=identity" in lines[0]
    assert not list(rucio_fed.client.list_dids(rucio_fed.scope, {}, did_type="all"))


def test_a_site_without_rucio_is_one_error_line(rucio_fed: RucioFederation) -> None:  # noqa: F811
    definition = rucio_fed.sites_dir / "NCSA.yaml"
    site = yaml.safe_load(definition.read_text())
    del site["rucio"]
    definition.write_text(yaml.safe_dump(site))
    done = rucio_fed.fed("rucio", "register", "NCSA", check=False)
    assert done.returncode == 1
    assert done.stderr.strip() == ("error: site NCSA has no 'rucio:' block in its definition: "
                                   "its files are not replicated through Rucio")


def test_wrong_credentials_are_one_error_line(rucio_fed: RucioFederation) -> None:  # noqa: F811
    populate_ncsa(rucio_fed)
    rucio_fed.write_site("NCSA", password="wrong")
    done = rucio_fed.fed("rucio", "register", "NCSA", check=False)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: Rucio at ")
    assert "could not authenticate" in lines[0] and "Traceback" not in done.stderr
