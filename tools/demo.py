"""Demo of one site's repository, on SQLite and local files.

Creates a repository for site NCSA, ingests generated HSC-like raw FITS
files (exposures x detectors), produces and certifies a bias calibration,
then queries and reads everything back. Each step shows the `fed` command
it runs and what that command printed.

    python tools/demo.py [--workdir DIR]
"""

from __future__ import annotations

import argparse
import csv
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

FED = [str(Path(sys.executable).parent / "fed")]
EXPOSURES = [(903334, "HSC-R"), (903336, "HSC-R"), (903338, "HSC-I")]
DETECTORS = [0, 1, 2, 3]


def step(title: str) -> None:
    print(f"\n== {title}")


def fed(*args: str) -> None:
    shown = " ".join(a if " " not in a else repr(a) for a in args)
    print(f"$ fed {shown}")
    result = subprocess.run(FED + list(args), capture_output=True, text=True)
    for line in (result.stdout + result.stderr).splitlines():
        print(f"  {line}")
    if result.returncode != 0:
        sys.exit(f"demo failed: 'fed {shown}' exited {result.returncode}")


def write_records(path: Path) -> None:
    records = {
        "instrument": [{"instrument": "HSC", "detector_max": 112,
                        "class_name": "lsst.obs.subaru.HyperSuprimeCam"}],
        "physical_filter": [{"instrument": "HSC", "physical_filter": "HSC-R", "band": "r"},
                            {"instrument": "HSC", "physical_filter": "HSC-I", "band": "i"}],
        "day_obs": [{"instrument": "HSC", "day_obs": 20130617}],
        "detector": [{"instrument": "HSC", "detector": d, "full_name": f"1_{d:02d}",
                      "purpose": "SCIENCE"} for d in DETECTORS],
        "exposure": [{"instrument": "HSC", "exposure": e, "physical_filter": f,
                      "day_obs": 20130617, "obs_id": f"HSCA{e}", "exposure_time": 30.0,
                      "observation_type": "science",
                      "timespan_begin": f"2013-06-17T13:{i * 2:02d}:00",
                      "timespan_end": f"2013-06-17T13:{i * 2:02d}:30"}
                     for i, (e, f) in enumerate(EXPOSURES)],
    }
    path.write_text(yaml.safe_dump(records, sort_keys=False))


def write_raws(directory: Path) -> Path:
    """Raw FITS images with HSC-like headers, and the ingest table listing them."""
    from astropy.io import fits

    directory.mkdir(parents=True)
    rng = np.random.default_rng(903334)
    table = directory / "raws.csv"
    with open(table, "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["file", "instrument", "exposure", "detector"])
        for exposure, physical_filter in EXPOSURES:
            for detector in DETECTORS:
                name = f"HSCA{exposure}_{detector:03d}.fits"
                hdu = fits.PrimaryHDU(rng.normal(1000, 30, (64, 64)).astype(np.float32))
                hdu.header.update(INSTRUME="HSC", EXP_ID=exposure, DET_ID=detector,
                                  FILTER=physical_filter, EXPTIME=30.0)
                hdu.writeto(directory / name)
                writer.writerow([name, "HSC", exposure, detector])
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("demo-repos"),
                        help="where the demo puts its repositories (recreated each run)")
    workdir = parser.parse_args().workdir.absolute()
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    repo = str(workdir / "NCSA")

    step("Create the NCSA repository (SQLite registry + local datastore)")
    fed("create", repo, "--site", "NCSA")

    step("Describe the instrument: dimension records")
    write_records(workdir / "records.yaml")
    fed("insert-dimension-records", repo, str(workdir / "records.yaml"))

    step("Register dataset types")
    fed("register-dataset-type", repo, "raw", "FitsImage", "exposure", "detector")
    fed("register-dataset-type", repo, "bias", "FitsImage", "detector")

    step(f"Ingest {len(EXPOSURES) * len(DETECTORS)} raw FITS files "
         "(deterministic IDs: any site ingesting them gets the same UUIDs)")
    table = write_raws(workdir / "incoming")
    fed("ingest-files", repo, "raw", "HSC/raw/all", str(table), "--id-mode", "deterministic")

    step("Produce a bias per detector and certify it for 2013")
    from astropy.io import fits

    from federation import Butler

    with Butler(repo, run="HSC/calib/gen/DM-0001") as butler:
        for detector in DETECTORS:
            butler.put(fits.PrimaryHDU(np.full((64, 64), 10.0 + detector, np.float32)),
                       "bias", instrument="HSC", detector=detector)
    print("  put 4 bias datasets into run HSC/calib/gen/DM-0001")
    fed("certify-calibrations", repo, "HSC/calib/gen/DM-0001", "HSC/calib/DM-0001", "bias",
        "--begin-date", "2013-01-01", "--end-date", "2014-01-01")
    fed("collection-chain", repo, "HSC/calib", "HSC/calib/DM-0001",
        "--doc", "Recommended calibrations for HSC")
    fed("collection-chain", repo, "HSC/defaults", "HSC/raw/all", "HSC/calib")

    step("Query")
    fed("query-collections", repo)
    fed("query-datasets", repo, "raw", "-c", "HSC/defaults",
        "--where", "instrument = 'HSC' AND exposure IN (903334..903336) AND band = 'r' "
                   "AND detector < 2")
    fed("query-dimension-records", repo, "exposure", "--where", "physical_filter = 'HSC-I'")

    step("Verify every file against its xxh3 checksum")
    fed("verify", repo)

    step("Read back through the Butler API")
    with Butler(repo, collections="HSC/defaults") as butler:
        raw = butler.get("raw", instrument="HSC", exposure=903338, detector=2)
        print(f"  raw 903338/2: {raw[0].data.shape} image, FILTER={raw[0].header['FILTER']}, "
              f"mean {raw[0].data.mean():.1f}")
        bias = butler.get("bias", instrument="HSC", detector=2, exposure=903338)
        print(f"  bias valid at exposure 903338's time, detector 2: value "
              f"{bias[0].data[0, 0]:.1f}")
        print(f"  file: {butler.get_uri('raw', instrument='HSC', exposure=903338, detector=2)}")
    print(f"\nDone. The repository is in {repo}; try: fed query-datasets {repo} -c '*'")


if __name__ == "__main__":
    main()
