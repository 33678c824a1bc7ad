"""Subsets that are complete: a selection by data ID brings the calibrations it needs.

``fed sync NCSA laptop -c HSC/defaults --where "..."`` brings the selected raws and, through
the CALIBRATION collections in the selected chains, the calibrations whose validity ranges
overlap the selected exposures' (and visits') time spans, with their data IDs agreeing:
the laptop then finds the right bias for each exposure offline. Other calibrations of
the same slots come as records only (the slot stays whole), and nothing else arrives.
"""

from __future__ import annotations

import numpy as np
from conftest import Federation, insert_hsc_records

from federation.timespan import Timespan

CHANGE = "2013-06-17T13:02:00"  # DM-1 biases are valid before, DM-2 biases after


def populate(fed: Federation, exposures=(903334, 903335)) -> None:
    """NCSA: raws of ``exposures`` x 4 detectors; biases DM-1 valid until CHANGE, DM-2
    from then on, in HSC/calib/DM-1 (in the HSC/defaults chain)."""
    with fed.butler("NCSA", run="HSC/raw/all") as b:
        insert_hsc_records(b.registry)
        b.registry.register_dataset_type("raw", ["exposure", "detector"], "NumpyArray")
        b.registry.register_dataset_type("bias", ["detector"], "NumpyArray")
        for exposure in exposures:
            put_raw(b, exposure)
        reg = b.registry
        reg.register_collection("HSC/calib/DM-1", "CALIBRATION")
        for generation, span in (("DM-1", ("2013-01-01", CHANGE)),
                                 ("DM-2", (CHANGE, "2014-01-01"))):
            run = f"HSC/calib/gen/{generation}"
            for detector in range(4):
                b.put(np.full(4, float(detector) + (generation == "DM-2")), "bias", run=run,
                      instrument="HSC", detector=detector)
            reg.datasets.certify("HSC/calib/DM-1", b.query_datasets("bias", run),
                                 Timespan.from_values(*span))
        reg.register_collection("HSC/calib", "CHAINED")
        reg.collections.set_chain("HSC/calib", ["HSC/calib/DM-1"])
        reg.register_collection("HSC/defaults", "CHAINED")
        reg.collections.set_chain("HSC/defaults", ["HSC/raw/all", "HSC/calib"])


def put_raw(butler, exposure: int) -> None:
    for detector in range(4):
        butler.put(np.full(8, exposure % 100 + detector), "raw", run="HSC/raw/all",
                   instrument="HSC", exposure=exposure, detector=detector,
                   id_mode="deterministic")


def held(fed: Federation, site: str) -> dict[tuple[str, str, int], str]:
    """(type, run, detector) -> 'file' or the site holding it, for every dataset at ``site``."""
    with fed.butler(site) as b:
        refs = b.query_datasets(["raw", "bias"], "*", find_first=False)
        return {(r.dataset_type.name, r.run, r.data_id["detector"],
                 r.data_id.get("exposure")): (b.exists(r).held_at or "file") for r in refs}


def bias_for(fed: Federation, site: str, exposure: int, detector: int) -> np.ndarray:
    with fed.butler(site) as b:
        ref = b.find_dataset("bias", instrument="HSC", detector=detector, exposure=exposure,
                             collections="HSC/defaults")
        assert ref is not None, f"no bias for {exposure}/{detector} at {site}"
        return b.get(ref)


def test_a_subset_by_exposure_brings_the_biases_valid_for_it(federation: Federation) -> None:
    populate(federation)
    federation.sync("NCSA", "laptop", collections=["HSC/defaults"],
                    where="exposure = 903334 AND detector = 1")
    assert held(federation, "laptop") == {
        ("raw", "HSC/raw/all", 1, 903334): "file",
        ("bias", "HSC/calib/gen/DM-1", 1, None): "file",
        ("bias", "HSC/calib/gen/DM-2", 1, None): "NCSA",  # same slot, not needed: records
    }
    ncsa = federation.root / "repos" / "NCSA"
    ncsa.rename(ncsa.with_name("NCSA.offline"))  # offline: only the laptop is reachable
    try:
        assert list(bias_for(federation, "laptop", 903334, 1)) == [1.0] * 4
    finally:
        ncsa.with_name("NCSA.offline").rename(ncsa)
    # What NCSA itself finds for that raw is what the laptop found.
    assert list(bias_for(federation, "NCSA", 903334, 1)) == [1.0] * 4


def test_a_wider_subset_fetches_what_it_needs_more(federation: Federation) -> None:
    populate(federation, exposures=(903334, 903335, 903336))
    federation.sync("NCSA", "laptop", collections=["HSC/defaults"],
                    where="exposure = 903334 AND detector = 1")
    federation.sync("NCSA", "laptop", collections=["HSC/defaults"], where="detector = 1")
    found = held(federation, "laptop")
    assert found[("bias", "HSC/calib/gen/DM-2", 1, None)] == "file"  # 903336 is after CHANGE
    assert sorted(k[3] for k in found if k[0] == "raw") == [903334, 903335, 903336]
    assert all(k[2] == 1 for k in found)
    assert list(bias_for(federation, "laptop", 903336, 1)) == [2.0] * 4
    assert list(bias_for(federation, "laptop", 903335, 1)) == [1.0] * 4


def test_new_raws_bring_their_biases_on_the_next_sync(federation: Federation) -> None:
    populate(federation)
    subset = {"collections": ["HSC/defaults"], "where": "detector = 2"}
    federation.sync("NCSA", "laptop", **subset)
    assert held(federation, "laptop")[("bias", "HSC/calib/gen/DM-2", 2, None)] == "NCSA"
    with federation.butler("NCSA") as b:
        put_raw(b, 903337)  # 13:03, after CHANGE: needs the DM-2 bias
    federation.sync("NCSA", "laptop", **subset)
    found = held(federation, "laptop")
    assert found[("raw", "HSC/raw/all", 2, 903337)] == "file"
    assert found[("bias", "HSC/calib/gen/DM-2", 2, None)] == "file"
    assert list(bias_for(federation, "laptop", 903337, 2)) == [3.0] * 4


def test_recertification_at_the_source_reaches_the_subset(federation: Federation) -> None:
    populate(federation)
    subset = {"collections": ["HSC/defaults"], "where": "exposure = 903335 AND detector = 0"}
    federation.sync("NCSA", "laptop", **subset)
    assert list(bias_for(federation, "laptop", 903335, 0)) == [0.0] * 4
    with federation.butler("NCSA") as b:  # DM-2 biases now valid from 13:00 on
        b.decertify("HSC/calib/DM-1", "bias", Timespan.from_values("2013-06-17T13:00:00",
                                                                    CHANGE))
        b.registry.datasets.certify(
            "HSC/calib/DM-1", b.query_datasets("bias", "HSC/calib/gen/DM-2"),
            Timespan.from_values("2013-06-17T13:00:00", CHANGE))
    federation.sync("NCSA", "laptop", **subset)
    assert list(bias_for(federation, "laptop", 903335, 0)) == [1.0] * 4
    assert all(k[2] == 0 for k in held(federation, "laptop"))


def test_without_a_where_nothing_changes(federation: Federation) -> None:
    populate(federation)
    federation.sync("NCSA", "laptop", collections=["HSC/raw/all"], where="detector = 3")
    assert {k[0] for k in held(federation, "laptop")} == {"raw"}  # no calibration selected


def test_a_calibration_collection_alone_is_selected_by_its_data_ids(
        federation: Federation) -> None:
    populate(federation)
    federation.sync("NCSA", "laptop", collections=["HSC/calib"], where="detector = 2")
    assert held(federation, "laptop") == {("bias", "HSC/calib/gen/DM-1", 2, None): "file",
                                          ("bias", "HSC/calib/gen/DM-2", 2, None): "file"}


# -- fed subset show / verify ---------------------------------------------------------------


def subset_cli(federation: Federation, *args: str, code: int = 0) -> str:
    from test_cli import fed

    laptop = federation.root / "repos" / "laptop"
    return fed("subset", args[0], laptop, *args[1:], "--sites", federation.sites_dir,
               code=code).output if args[0] == "verify" else \
        fed("subset", args[0], laptop, *args[1:], code=code).output


NARROW = {"collections": ["HSC/defaults"], "where": "exposure = 903334 AND detector = 1"}


def test_subset_show_names_source_query_and_position(federation: Federation) -> None:
    populate(federation)
    report = federation.sync("NCSA", "laptop", **NARROW)
    shown = subset_cli(federation, "show")
    assert "NCSA" in shown and "exposure = 903334 AND detector = 1" in shown
    assert f"entry {report.cursor}" in shown


def test_subset_verify_proves_an_exact_subset(federation: Federation) -> None:
    populate(federation)
    federation.sync("NCSA", "laptop", **NARROW)
    out = subset_cli(federation, "verify")
    assert "exact: 3 dataset(s), 2 file(s) verified here, 1 record(s) only" in out


def test_subset_verify_finds_damage_and_staleness(federation: Federation) -> None:
    populate(federation)
    federation.sync("NCSA", "laptop", **NARROW)
    with federation.butler("laptop") as b:  # a damaged bias file on the laptop
        ref = b.find_dataset("bias", instrument="HSC", detector=1, exposure=903334,
                             collections="HSC/defaults")
        path = b.datastore.root / b.registry.datasets.file(ref.id)[0].path
    path.write_bytes(b"not a bias")
    out = subset_cli(federation, "verify", code=1)
    assert "NOT exact: damaged" in out and "damaged:" in out and str(ref.id) in out
    path.unlink()
    with federation.butler("NCSA") as b:  # the source moves on: a newer bias for 903334
        b.put(np.full(4, 9.0), "bias", run="HSC/calib/gen/DM-3", instrument="HSC", detector=1)
        b.decertify("HSC/calib/DM-1", "bias", Timespan.from_values("2013-01-01", CHANGE))
        b.registry.datasets.certify("HSC/calib/DM-1", b.query_datasets("bias",
                                                                      "HSC/calib/gen/DM-3"),
                                    Timespan.from_values("2013-01-01", CHANGE))
    out = subset_cli(federation, "verify", code=1)
    assert "NOT exact: the source changed since the last sync (stale)" in out
    assert "missing: bias instrument=HSC detector=1 in HSC/calib/gen/DM-3" in out
    assert "extra: bias instrument=HSC detector=1 in HSC/calib/gen/DM-1" in out
    federation.sync("NCSA", "laptop", **NARROW)
    assert "exact" in subset_cli(federation, "verify")
    assert list(bias_for(federation, "laptop", 903334, 1)) == [9.0] * 4


def test_subset_verify_without_subsets_says_so(federation: Federation) -> None:
    from test_cli import fails

    fails("subset", "verify", federation.root / "repos" / "laptop", "--sites",
          federation.sites_dir, match="holds no subset")


def test_a_where_naming_dimensions_some_types_lack_still_completes(
        federation: Federation) -> None:
    populate(federation)
    with federation.butler("NCSA", run="HSC/runs/calexp") as b:  # a visit-based type too
        b.registry.register_dataset_type("calexp", ["visit", "detector"], "NumpyArray")
        b.put(np.zeros(2), "calexp", instrument="HSC", visit=903334, detector=1)
        b.registry.collections.set_chain("HSC/defaults",
                                         ["HSC/raw/all", "HSC/runs/calexp", "HSC/calib"])
    federation.sync("NCSA", "laptop", collections=["HSC/defaults"],
                    where="exposure = 903334 AND detector = 1")
    assert held(federation, "laptop")[("bias", "HSC/calib/gen/DM-1", 1, None)] == "file"
