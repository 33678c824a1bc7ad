"""A selected chain that gains a child brings the child's existing datasets."""

import numpy as np
from conftest import populate_ncsa

REACHES = ("local", "sftp", "http")  # see conftest.pytest_generate_tests


def test_chain_gaining_a_child_is_snapshotted(federation):
    populate_ncsa(federation)
    with federation.butler("NCSA", run="HSC/runs/RC2/w_2026_47/DM-1") as ncsa:
        ncsa.registry.register_dataset_type("calexp", ["exposure", "detector"], "NumpyArray")
        ncsa.put(np.ones(3), "calexp", instrument="HSC", exposure=903334, detector=0)
    federation.sync("NCSA", "IN2P3", collections=["HSC/defaults"])
    with federation.butler("IN2P3") as in2p3:
        assert not in2p3.registry.collections.exists("HSC/runs/RC2/w_2026_47/DM-1")
    # The processing run already existed; now NCSA puts it on the default search path.
    with federation.butler("NCSA") as ncsa:
        ncsa.registry.collections.set_chain(
            "HSC/defaults", ["HSC/runs/RC2/w_2026_47/DM-1", "HSC/raw/all", "HSC/calib"])
    federation.sync("NCSA", "IN2P3", collections=["HSC/defaults"])
    with federation.butler("IN2P3", collections="HSC/defaults") as in2p3:
        assert in2p3.get("calexp", instrument="HSC", exposure=903334, detector=0).tolist() \
            == [1.0, 1.0, 1.0]
        assert in2p3.registry.collections.children("HSC/defaults")[0] == \
            "HSC/runs/RC2/w_2026_47/DM-1"
    report = federation.sync("NCSA", "IN2P3", collections=["HSC/defaults"])
    assert report.files == 0 and not any("insert" in k for k in report.counts)
