"""`fed compare` (LDF104): NCSA and IN2P3 process the same raws into their own runs, and the
outputs are compared dataset by dataset: identical, equivalent within rtol/atol, different
(values, shapes, types, NaN patterns, structure), or on one side only. End to end on
SQLite and PostgreSQL, against sites reached over SFTP and HTTP, with the HTML report.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from conftest import populate_ncsa, repo_state
from test_cli import fails, fed, usage_error

from federation.butler import Butler

NCSA_RUN = "HSC/runs/RC2/w_2026_47/DM-1"
NOISY_RUN = "HSC/runs-in2p3/RC2/w_2026_47/DM-1"  # tiny floating-point noise: equivalent
BUGGY_RUN = "HSC/runs-in2p3/RC2/w_2026_47/DM-2"  # a bug in two detectors: different
BUGGY = (1, 3)
VISITS = range(903334, 903338)
TYPES = {"calexp": "FitsImage", "src": "FitsTable", "metrics": "JSON"}


def process(butler: Butler, run: str, *, noise: bool = False, bug: tuple[int, ...] = ()) -> None:
    """A stand-in for the pipeline: from each raw and its bias, a calexp image, a source
    table and metrics (JSON), and a summary per visit (YAML). The same inputs give the
    same values at every site; ``noise`` moves a random third of the floats by one unit in
    the last place, ``bug`` breaks the given detectors."""
    reg = butler.registry
    reg.register_dataset_type("calexp", ["visit", "detector"], "FitsImage")
    reg.register_dataset_type("src", ["visit", "detector"], "FitsTable")
    reg.register_dataset_type("metrics", ["visit", "detector"], "JSON")
    reg.register_dataset_type("summary", ["visit"], "YAML")
    jitter = np.random.default_rng(7)

    def noisy(values: np.ndarray) -> np.ndarray:
        if not noise:
            return values
        moved = np.nextafter(values, np.inf)
        return np.where(jitter.random(values.shape) < 0.3, moved, values).astype(values.dtype)

    for ref in butler.query_datasets("raw", "HSC/raw/all"):
        visit, detector = ref.data_id["exposure"], ref.data_id["detector"]
        data_id = {"instrument": "HSC", "visit": visit, "detector": detector}
        raw = butler.get(ref)
        bias = butler.get("bias", instrument="HSC", detector=detector, exposure=visit,
                          collections="HSC/defaults")
        rng = np.random.default_rng(visit * 10 + detector)
        image = (rng.normal(1000, 30, (32, 32)) + raw.mean() - bias.mean()).astype(np.float32)
        flux = rng.uniform(100, 1000, 20).astype(np.float32)
        psf = float(rng.uniform(0.5, 0.9))
        image, flux = noisy(image), noisy(flux)
        if noise:
            psf *= 1 + 1e-12
        if detector in bug:
            image[8:16, 8:16] += 5.0
            flux *= np.float32(1.01)
            psf += 0.1
        hdu = fits.PrimaryHDU(image)
        hdu.header.update(BUNIT="adu", HISTORY=f"made in {run}")
        butler.put(hdu, "calexp", data_id, run=run)
        table = Table({"id": np.arange(20, dtype=np.int64), "flux": flux,
                       "band": ["r"] * 20})
        table["flux"].unit = "nJy"
        butler.put(table, "src", data_id, run=run)
        butler.put({"psf_fwhm": psf, "n_sources": 20, "band": "r"}, "metrics", data_id,
                   run=run)
        if detector == 0:
            butler.put({"visit": visit, "detectors": 4}, "summary",
                       {"instrument": "HSC", "visit": visit}, run=run)


@pytest.fixture
def ldf104(federation):
    """NCSA's run, and IN2P3's two runs made from the same raws (synced from NCSA)."""
    populate_ncsa(federation)
    federation.sync("NCSA", "IN2P3")
    with federation.butler("NCSA") as b:
        process(b, NCSA_RUN)
    with federation.butler("IN2P3") as b:
        process(b, NOISY_RUN, noise=True)
        process(b, BUGGY_RUN, bug=BUGGY)
    return federation


def compare(fed_, *args, code: int = 0, sites: Path | None = None):
    return fed("compare", *args, "--sites", sites or fed_.sites_dir, code=code)


def pairs_of(result) -> dict[tuple, dict]:
    found = json.loads(result.stdout)
    return {(p["dataset_type"], tuple(sorted(p["data_id"].items()))): p for p in found["pairs"]}


def test_ldf104_outputs_synced_to_one_place_are_compared(ldf104, tmp_path):
    """IN2P3's runs travel to NCSA (records only: their files stay held at IN2P3, and are
    read there, verified); the noisy one is equivalent, the buggy one is not and the output
    names exactly the broken detectors."""
    ldf104.sync("IN2P3", "NCSA", collections=["HSC/runs-in2p3/*"], files=False)
    same = compare(ldf104, f"NCSA:{NCSA_RUN}", f"NCSA:{NOISY_RUN}").stdout
    assert same.strip().endswith("scientifically equivalent within rtol=1e-06, atol=0")
    rows = {line.split()[0]: line.split() for line in same.splitlines()[4:8]}
    assert rows["calexp"][1:8] == ["FitsImage", "16", "0", "16", "0", "0", "0"]
    assert rows["summary"][1:] == ["YAML", "4", "4", "0", "0", "0", "0", "0"]  # same bytes
    assert same.splitlines()[0] == f"A: NCSA:{NCSA_RUN}: 52 datasets"

    result = compare(ldf104, f"NCSA:{NCSA_RUN}", f"NCSA:{BUGGY_RUN}", "--json", code=1)
    found = json.loads(result.stdout)
    assert not found["equivalent"] and found["counts"]["different"] == 3 * 4 * len(BUGGY)
    assert found["verdict"] == ("NOT equivalent within rtol=1e-06, atol=0: 24 different, "
                                "0 only on one side")
    different = {(p["dataset_type"], p["data_id"]["detector"], p["data_id"]["visit"])
                 for p in found["pairs"] if p["class"] == "different"}
    assert different == {(t, d, v) for t in TYPES for d in BUGGY for v in VISITS}
    calexp = next(p for p in found["pairs"] if p["class"] == "different"
                  and p["dataset_type"] == "calexp")
    assert calexp["stats"]["beyond"] == 64 and calexp["stats"]["max_abs"] == pytest.approx(5)
    assert calexp["parts"][0]["unit"] == "adu"
    assert (calexp["a"]["held_at"], calexp["b"]["held_at"]) == (None, "IN2P3")
    assert found["files"]["fetched"] == 0  # IN2P3 is on this machine: read in place
    text = compare(ldf104, f"NCSA:{NCSA_RUN}", f"NCSA:{BUGGY_RUN}", code=1).stdout
    for visit in VISITS:
        for detector in BUGGY:
            assert (f"different: calexp {{detector={detector}, instrument=HSC, "
                    f"visit={visit}}}: 64 of 1024 values beyond the tolerance") in text
    assert "different: calexp {detector=0" not in text
    assert "different: metrics {detector=1, instrument=HSC, visit=903334}: $.psf_fwhm" in text
    assert "column flux" in text and "NOT equivalent" in text.splitlines()[-1]


def test_ldf104_compared_across_sites_with_a_report(ldf104, tmp_path):
    """No sync needed: each side is read at its own site. The report shows the verdict,
    the summary, a histogram per dataset type, the worst pairs and a difference image."""
    result = compare(ldf104, f"NCSA:{NCSA_RUN}", f"IN2P3:{NOISY_RUN}", "--json")
    found = json.loads(result.stdout)
    assert found["equivalent"] and found["counts"]["equivalent"] == 48
    for pair in found["pairs"]:
        if pair["dataset_type"] == "calexp":  # real noise, well within the tolerance
            assert 0 < pair["stats"]["max_rel"] < 1e-6 and pair["stats"]["beyond"] == 0
            assert pair["a"]["id"] != pair["b"]["id"] and pair["b"]["run"] == NOISY_RUN

    report = tmp_path / "report"
    text = compare(ldf104, f"NCSA:{NCSA_RUN}", f"IN2P3:{BUGGY_RUN}", "--report", report,
                   code=1).stdout
    assert f"report: {report / 'index.html'}" in text
    page = (report / "index.html").read_text()
    assert "NOT equivalent within rtol=1e-06, atol=0: 24 different" in page
    assert f"NCSA:{NCSA_RUN}" in page and f"IN2P3:{BUGGY_RUN}" in page
    worst = page[page.index('id="worst"'):page.index("</table>", page.index('id="worst"'))]
    for visit in VISITS:  # all 20 rows are the broken detectors' pairs
        assert f"src {{detector=1, instrument=HSC, visit={visit}}}" in worst
    assert worst.count("<tr><td>") == 20 and "detector=0" not in worst
    images = sorted(p.name for p in report.glob("*.png"))
    assert images == ["difference.png", "histogram-00-calexp.png", "histogram-01-metrics.png",
                      "histogram-02-src.png"]
    for name in images:
        assert f'src="{name}"' in page
        data = (report / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert "Difference image of the worst image pair" in page
    shown = page[page.index("Difference image of the worst image pair"):]
    assert re.search(r"<p>calexp \{detector=[13], instrument=HSC, visit=\d+\}: A &minus; B",
                     shown)
    assert "No values compared" in page  # the identical summaries
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".report.")]


@pytest.mark.parametrize(("backend", "reach"), [("sqlite", "sftp"), ("sqlite", "http")],
                         indirect=True)
def test_a_remote_site_is_read_from_what_it_published(ldf104, reach, tmp_path, monkeypatch):
    """IN2P3 over SFTP or HTTP: its records from its outbox, only the files to compare
    fetched into the cache and verified; a second run reuses them; a corrupt file at
    IN2P3 is refused and never cached."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    fed("publish", "IN2P3", "--sites", ldf104.sites_dir)
    view = tmp_path / "view"
    shutil.copytree(ldf104.sites_dir, view)
    shutil.copy(ldf104.remote_dir / "IN2P3.yaml", view / "IN2P3.yaml")
    sides = (f"NCSA:{NCSA_RUN}", f"IN2P3:{NOISY_RUN}")
    found = json.loads(compare(ldf104, *sides, "--json", sites=view).stdout)
    assert found["equivalent"] and found["b"]["remote"]
    assert found["files"]["fetched"] == 48 and found["files"]["reused_from_cache"] == 0
    files = cache / "federation" / "files" / "IN2P3"
    cached = sorted(p for p in files.rglob("*") if p.is_file())
    assert len(cached) == 48 and not [p for p in cached if p.suffix == ".yaml"]
    again = json.loads(compare(ldf104, *sides, "--json", sites=view).stdout)
    assert again["files"] == {"fetched": 0, "fetched_bytes": 0, "reused_from_cache": 48}

    with Butler(ldf104.root / "repos" / "IN2P3") as b:
        ref = b.find_dataset("calexp", instrument="HSC", visit=903335, detector=2,
                             collections=NOISY_RUN)
        stored = b.registry.datasets.file(ref.id)[0]
        remote_file = b.datastore.path_of(stored)
    cached_copy = files / stored.path
    cached_copy.write_bytes(b"x" * cached_copy.stat().st_size)  # a damaged cache: fetched again
    again = json.loads(compare(ldf104, *sides, "--json", sites=view).stdout)
    assert again["files"]["fetched"] == 1 and again["files"]["reused_from_cache"] == 47

    remote_file.write_bytes(remote_file.read_bytes()[::-1])  # same size, other bytes
    cached_copy.unlink()
    line = fails("compare", *sides, "--sites", view, "--report", tmp_path / "r",
                 match=["site IN2P3", "calexp {detector=2, instrument=HSC, visit=903335}",
                        f"fetched over {reach.upper()}", "checksum mismatch"])
    assert "not compared" in line
    assert not cached_copy.exists() and not list(files.rglob("*.part"))
    assert not (tmp_path / "r").exists()


# -- every class, every storage class, narrowing -------------------------------------------


def two_runs(repo: Path) -> None:
    """Runs HSC/runs/a and HSC/runs/b of one repository, pair by pair made to fall in
    every class."""
    from conftest import insert_hsc_records

    ramp = np.arange(256, dtype=np.float32).reshape(16, 16) + 100
    pairs = {  # (type, storage class, data ID) -> (A's object, B's object); None: absent
        ("img", 903334, 0): (ramp, ramp),
        ("img", 903334, 1): (np.nextafter(ramp, np.inf), ramp),
        ("img", 903334, 2): (np.where(ramp > 340, ramp + 1, ramp), ramp),
        ("img", 903334, 3): (ramp, ramp[:, :8]),
        ("img", 903335, 0): (np.where(ramp == 100, np.nan, ramp).astype(np.float32), ramp),
        ("img", 903335, 1): (ramp.astype(np.float64), ramp),
        ("img", 903336, 0): (ramp, None),
        ("img", 903337, 0): (None, ramp),
        ("arr", 0): (np.array([1.0, 2.0]) * (1 + 1e-9), np.array([1.0, 2.0])),
        ("arr", 1): (np.array([1, 2]), np.array([1, 3])),
        ("cat", 0): (Table({"x": [1.0, 2.0 + 1e-9], "s": ["a", "b"]}),
                     Table({"x": [1.0, 2.0], "s": ["a", "b"]})),
        ("cat", 1): (Table({"x": [1.0, 2.0], "s": ["a", "c"]}),
                     Table({"x": [1.0, 2.0], "s": ["a", "b"]})),
        ("cat", 2): (Table({"x": [1.0, 2.0], "s": ["a", "b"]}), Table({"x": [1.0, 2.0]})),
        ("meta", 0): ({"a": 1.0 + 1e-9, "b": [1, 2]}, {"a": 1.0, "b": [1, 2]}),
        ("meta", 1): ({"a": 1.0}, {"a": 1.0, "z": True}),
        ("meta", 2): ({"a": 1.0, "s": "x"}, {"a": 1.0, "s": "y"}),
        ("meta", 3): ({"b": [1, 2]}, {"b": [1, 2, 3]}),
        ("conf", 0): ({"k": 1.0}, {"k": 1.0}),
        ("conf", 1): ({"k": 1.1}, {"k": 1.0}),
        ("blob", 0): (b"same", b"same"),
        ("blob", 1): (b"this", b"that"),
    }
    classes = {"img": "FitsImage", "arr": "NumpyArray", "cat": "FitsTable", "meta": "JSON",
               "conf": "YAML", "blob": "Bytes"}
    with Butler(repo, run="HSC/raw/all") as b:
        insert_hsc_records(b.registry)
        for name, storage in classes.items():
            dims = ["exposure", "detector"] if name == "img" else ["detector"]
            b.registry.register_dataset_type(name, dims, storage)
        for key, objects in pairs.items():
            data_id = {"instrument": "HSC", "detector": key[-1]}
            if key[0] == "img":
                data_id["exposure"] = key[1]
            for run, obj in zip(("HSC/runs/a", "HSC/runs/b"), objects, strict=True):
                if obj is not None:
                    b.put(obj, key[0], data_id, run=run)


def test_every_class_by_storage_class(repo, tmp_path):
    two_runs(repo)
    sides = (f"{repo}:HSC/runs/a", f"{repo}:HSC/runs/b")
    found = pairs_of(fed("compare", *sides, "--json", code=1))

    def check(key: tuple, kind: str, *reasons: str) -> None:
        name, *values = key
        dims = ("detector",) if name != "img" else ("exposure", "detector")
        data_id = dict(zip(dims, values, strict=True), instrument="HSC")
        data_id = tuple(sorted(data_id.items()))
        pair = found[(name, data_id)]
        assert pair["class"] == kind, (key, pair)
        for reason in reasons:
            assert any(reason in r for r in pair["reasons"]), (key, reason, pair["reasons"])

    check(("img", 903334, 0), "identical")
    check(("img", 903334, 1), "equivalent")
    check(("img", 903334, 2), "different", "15 of 256 values beyond the tolerance")
    check(("img", 903334, 3), "different", "shape (16, 16) in A, (16, 8) in B")
    check(("img", 903335, 0), "different", "NaN pattern differs: 1 values NaN in A only")
    check(("img", 903335, 1), "different", "type float64 in A, float32 in B")
    check(("img", 903336, 0), "only_a")
    check(("img", 903337, 0), "only_b")
    check(("arr", 0), "equivalent")
    check(("arr", 1), "different", "1 of 2 values beyond")
    check(("cat", 0), "equivalent")
    check(("cat", 1), "different", "column s: 1 of 2 values differ")
    check(("cat", 2), "different", "columns only in A: s")
    check(("meta", 0), "equivalent")
    check(("meta", 1), "different", "$: keys only in B: z")
    check(("meta", 2), "different", "$.s: 'x' in A, 'y' in B")
    check(("meta", 3), "different", "$.b: 2 items in A, 3 in B")
    check(("conf", 0), "identical")
    check(("conf", 1), "different", "$.k: 1.1 in A, 1.0 in B")
    check(("blob", 0), "identical")
    check(("blob", 1), "different", "the bytes differ")
    img = found[("img", (("detector", 2), ("exposure", 903334), ("instrument", "HSC")))]
    assert img["stats"]["max_abs"] == 1 and img["stats"]["values"] == 256

    loose = pairs_of(fed("compare", *sides, "--rtol", "0.2", "--json", code=1))
    assert loose[("conf", (("detector", 1), ("instrument", "HSC")))]["class"] == "equivalent"
    absolute = pairs_of(fed("compare", *sides, "--rtol", "0", "--atol", "1", "-t", "img",
                            "--where", "exposure = 903334 AND detector = 2", "--json"))
    assert [p["class"] for p in absolute.values()] == ["equivalent"]

    narrowed = fed("compare", *sides, "-t", "c*", "--where", "detector = 0").stdout
    assert narrowed.strip().endswith("scientifically equivalent within rtol=1e-06, atol=0")
    assert {line.split()[0] for line in narrowed.splitlines()[4:6]} == {"cat", "conf"}


def test_refusals_write_nothing(ldf104, tmp_path):
    report = tmp_path / "report"
    sides = (f"NCSA:{NCSA_RUN}", f"IN2P3:{NOISY_RUN}")
    with ldf104.butler("NCSA") as b:
        before = repo_state(b)
    cases = [
        (("Nowhere:HSC/runs/x", sides[1]), "unknown site 'Nowhere'"),
        ((sides[0], "NCSA:HSC/runs/nope"), "NCSA has no run 'HSC/runs/nope'"),
        (("NCSA", sides[1]), "give each side as SITE:RUN"),
        ((sides[0], "IN2P3:"), "give each side as SITE:RUN"),
        ((*sides, "--rtol", "-1"), "--rtol must be a finite number >= 0"),
        ((*sides, "--atol", "nan"), "--atol must be a finite number >= 0"),
        ((*sides, "-t", "nope*"), "-t nope*: no dataset type matches at NCSA or IN2P3"),
        ((*sides, "--where", "detector ="), "where"),
        ((*sides, "--where", "detector = 99"), "nothing to compare"),
    ]
    for args, message in cases:
        fails("compare", *args, "--sites", ldf104.sites_dir, "--report", report, match=message)
    usage_error("compare", *sides, "--rtol", "abc", "--sites", ldf104.sites_dir,
                match="--rtol")
    (tmp_path / "file").write_text("")
    usage_error("compare", *sides, "--sites", ldf104.sites_dir, "--report", tmp_path / "file",
                match="is a file")
    with ldf104.butler("NCSA") as b:
        ref = b.find_dataset("src", instrument="HSC", visit=903334, detector=0,
                             collections=NCSA_RUN)
        path = b.datastore.path_of(b.registry.datasets.file(ref.id)[0])
    path.write_bytes(path.read_bytes()[::-1])  # a damaged file is never compared
    fails("compare", *sides, "--sites", ldf104.sites_dir, "--report", report,
          match=["NCSA: the file of src {detector=0, instrument=HSC, visit=903334}",
                 "checksum mismatch", "fed verify"])
    assert not report.exists()
    with ldf104.butler("NCSA") as b:
        assert repo_state(b) == before


# -- the content comparisons themselves ------------------------------------------------


def test_content_comparisons_follow_isclose():
    from federation.compare.arrays import compare_arrays
    from federation.compare.model import Histogram, Tolerance
    from federation.compare.structures import compare_structures
    from federation.compare.tables import compare_tables
    from federation.errors import InputError

    tol = Tolerance(rtol=0.01, atol=0.5)
    b = np.array([100.0, 0.0, np.inf, np.nan, 5.0])
    at_the_edge = np.array([101.5, 0.5, np.inf, np.nan, 5.0])  # |a-b| == atol + rtol*|b|
    histogram = Histogram()
    found = compare_arrays(at_the_edge, b, tol, histogram=histogram)
    assert not found.reasons and found.stats.max_abs == 1.5 and found.stats.finite == 3
    assert histogram.zeros == 1 and sum(histogram.within) == 2 and not sum(histogram.beyond)
    beyond = compare_arrays(np.array([101.6, 0.0, -np.inf, np.nan, 5.0]), b, tol)
    assert beyond.stats.beyond == 2 and "2 of 5 values beyond" in beyond.reasons[0]
    nan = compare_arrays(np.array([100.0, np.nan, np.inf, 1.0, 5.0]), b, tol).reasons
    assert nan == ["NaN pattern differs: 1 values NaN in A only, 1 in B only"]
    records = np.array([(1, 2.0)], dtype=[("n", "i4"), ("x", "f8")])
    other = records.copy()
    other["x"] = 3.0
    assert compare_arrays(records, other, tol).reasons[0].startswith("x: 1 of 1 values")
    wider = records.astype([("n", "i8"), ("x", "f8")])
    assert compare_arrays(records, wider, tol).reasons == ["n: type int32 in A, int64 in B"]
    assert compare_arrays(records, np.zeros(1, dtype=[("m", "i4")]), tol).reasons == [
        "fields ['n', 'x'] in A, ['m'] in B"]

    masked_a = Table({"x": np.ma.array([1.0, 2.0], mask=[False, True])})
    masked_b = Table({"x": np.ma.array([1.0, 9.0], mask=[False, True])})
    assert not compare_tables(masked_a, masked_b, tol).reasons  # masked entries: not compared
    masked_b["x"].mask = [True, True]
    assert compare_tables(masked_a, masked_b, tol).reasons == [
        "column x: 1 entries masked on one side only"]
    rows = compare_tables(Table({"x": [1.0]}), Table({"x": [1.0, 2.0]}), tol).reasons
    assert rows == ["1 rows in A, 2 in B"]

    doc = {"a": [1, 2.0, {"b": float("nan")}], "flag": True, "none": None}
    assert not compare_structures(doc, json.loads(json.dumps(doc)), tol).reasons
    changed = compare_structures(doc, {"a": [1, 2.0, {"b": 1.0}], "flag": 1, "none": "x"},
                                 tol).reasons
    assert changed == ["$.flag: a boolean in A, a number in B", "$.none: null in A, text in B",
                       "$.a[2].b: nan in A, 1.0 in B"]
    for bad in (-1e-6, float("inf"), float("nan")):
        with pytest.raises(InputError, match="must be a finite number >= 0"):
            Tolerance(rtol=bad)
