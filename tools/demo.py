"""Demo of a federation of four sites, on SQLite and local files.

Writes site definitions for NCSA, IN2P3, Princeton and a laptop (all SQLite
registries, datastores under the work directory) and creates their
repositories. NCSA ingests generated HSC-like raw FITS files (deterministic
IDs), certifies a bias, runs a "processing" that writes a calexp per raw and
chains ``HSC/defaults``. IN2P3 syncs from NCSA, Princeton from IN2P3, and all
three converge. NCSA then prunes a bad exposure and the deletion propagates
along the same path. A laptop pre-caches one exposure with its calibrations
and reads them with every other site out of reach. Finally the project's
policies/*.yaml declare the same federation: `fed federate` runs its flows and
`fed status` shows every flow caught up. Each step shows the `fed` command it
runs and what that command printed.

    python tools/demo.py [--workdir DIR]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import yaml

FED = [str(Path(sys.executable).parent / "fed")]
PROJECT = Path(__file__).resolve().parent.parent
EXPOSURES = [(903334, "HSC-R"), (903336, "HSC-R"), (903338, "HSC-I")]
DETECTORS = [0, 1, 2, 3]
BAD = 903336  # the exposure NCSA finds bad and prunes
LAPTOP_EXPOSURE = 903334
OTHER_EXPOSURE = 903338  # the laptop holds its records only, and reads files on demand
PROCESSING_RUN = "HSC/runs/RC2/w_2026_47/DM-1"
SITES = {  # name -> collection prefixes it owns (as in sites/ at the top of the project)
    "NCSA": ["HSC/raw", "HSC/calib", "HSC/runs", "HSC/defaults", "refcats", "skymaps"],
    "IN2P3": ["u/in2p3", "HSC/runs-in2p3"],
    "Princeton": ["u/princeton"],
    "laptop": ["u/alice"],
}
SERVERS = ("NCSA", "IN2P3", "Princeton")


class Demo:
    """Runs `fed` in the work directory, where ./sites holds the site definitions."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir

    def fed(self, *args: str, code: int = 0, quiet: bool = False) -> str:
        """Run `fed ARGS`, show what it prints (``quiet``: not at all); stop the demo unless
        it exits ``code``."""
        shown = " ".join(a if a and " " not in a and "*" not in a else repr(a) for a in args)
        if not quiet:
            print(f"$ fed {shown}")
        env = {k: v for k, v in os.environ.items() if k not in ("FED_SITES", "FED_POLICIES")}
        result = subprocess.run(FED + list(args), capture_output=True, text=True,
                                cwd=self.workdir, env=env)  # the demo's own sites, policies
        for line in [] if quiet else (result.stdout + result.stderr).splitlines():
            print(f"  {line}")
        if result.returncode != code:
            sys.exit(f"demo failed: 'fed {shown}' exited {result.returncode}")
        return result.stdout


def step(title: str) -> None:
    print(f"\n== {title}")


def note(text: str) -> None:
    print(f"  # {text}")


def write_sites(directory: Path) -> None:
    """All-SQLite definitions; paths are relative to the YAML files."""
    directory.mkdir(parents=True)
    for name, owns in SITES.items():
        definition = {"name": name, "description": f"demo site {name} (SQLite)",
                      "registry": f"sqlite:///../{name}/registry.sqlite3",
                      "root": f"../{name}", "transport": "local", "owns": owns,
                      "read_only": False, "keep_deleted": False}
        (directory / f"{name}.yaml").write_text(yaml.safe_dump(definition, sort_keys=False))


def write_records(path: Path) -> None:
    def span(i: int) -> dict[str, str]:
        return {"timespan_begin": f"2013-06-17T13:{i * 2:02d}:00",
                "timespan_end": f"2013-06-17T13:{i * 2:02d}:30"}

    records = {
        "instrument": [{"instrument": "HSC", "detector_max": 112, "visit_max": 21474800,
                        "class_name": "lsst.obs.subaru.HyperSuprimeCam"}],
        "physical_filter": [{"instrument": "HSC", "physical_filter": "HSC-R", "band": "r"},
                            {"instrument": "HSC", "physical_filter": "HSC-I", "band": "i"}],
        "day_obs": [{"instrument": "HSC", "day_obs": 20130617}],
        "detector": [{"instrument": "HSC", "detector": d, "full_name": f"1_{d:02d}",
                      "purpose": "SCIENCE"} for d in DETECTORS],
        "exposure": [{"instrument": "HSC", "exposure": e, "physical_filter": f,
                      "day_obs": 20130617, "obs_id": f"HSCA{e}", "exposure_time": 30.0,
                      "observation_type": "science", **span(i)}
                     for i, (e, f) in enumerate(EXPOSURES)],
        "visit": [{"instrument": "HSC", "visit": e, "physical_filter": f, "day_obs": 20130617,
                   "name": f"HSCA{e}", "exposure_time": 30.0, **span(i)}
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


def process(repo: Path) -> int:
    """A stand-in for pipeline processing: calexp = raw - bias, one per raw."""
    from astropy.io import fits

    from federation import Butler

    count = 0
    with Butler(repo, run=PROCESSING_RUN, collections="HSC/defaults") as butler:
        for ref in butler.query_datasets("raw", "HSC/raw/all"):
            exposure, detector = ref.data_id["exposure"], ref.data_id["detector"]
            raw = butler.get(ref)
            bias = butler.get("bias", instrument="HSC", detector=detector, exposure=exposure)
            image = fits.PrimaryHDU(raw[0].data - bias[0].data, header=raw[0].header)
            image.header["HISTORY"] = f"bias-subtracted by {PROCESSING_RUN}"
            butler.put(image, "calexp", instrument="HSC", visit=exposure, detector=detector,
                       id_mode="deterministic-run")
            count += 1
    return count


IN2P3_RUN = "HSC/runs-in2p3/RC2/w_2026_47/DM-1"  # IN2P3 owns HSC/runs-in2p3


def process_at_in2p3(repo: Path) -> int:
    """IN2P3's run of the same processing (LDF104): calexp = raw - bias, where another
    machine's floating point moves the last bit of about a third of the pixels."""
    from federation import Butler

    rng = np.random.default_rng(47)
    count = 0
    with Butler(repo, run=IN2P3_RUN, collections="HSC/defaults") as butler:
        for ref in butler.query_datasets("raw", "HSC/raw/all"):
            exposure, detector = ref.data_id["exposure"], ref.data_id["detector"]
            raw = butler.get(ref)
            bias = butler.get("bias", instrument="HSC", detector=detector, exposure=exposure)
            image = raw[0].data - bias[0].data
            moved = rng.random(image.shape) < 0.3
            image[moved] = np.nextafter(image[moved], np.float32(np.inf))
            butler.put(image, "calexp", instrument="HSC", visit=exposure, detector=detector,
                       id_mode="deterministic-run")
            count += 1
    return count


def site_state(repo: Path) -> dict[str, object]:
    """What a user could observe at a site, independent of which site it is."""
    from federation import Butler

    with Butler(repo) as butler:
        reg = butler.registry
        collections = sorted(reg.collections.query(), key=lambda c: c.name)
        runs = [c.name for c in collections if str(c.type) == "RUN"]
        lines = [f"collection {c.name} {c.type} {c.owner_site} {list(c.children)}"
                 for c in collections]
        refs = butler.query_datasets(None, runs, find_first=False) if runs else []
        for ref in refs:
            found = reg.datasets.file(ref.id)
            checksum = found[0].checksum if found else None
            lines.append(f"dataset {ref.id} {ref.dataset_type.name} {ref.run} "
                         f"{sorted(ref.required_data_id.items())} {checksum}")
        for c in collections:
            if str(c.type) == "CALIBRATION":
                lines += [f"calib {c.name} {r.id} {ts.begin} {ts.end}"
                          for r, ts in reg.datasets.certifications(c.name)]
        for name in reg.releases.names():
            info = reg.releases.get(name)
            lines.append(f"release {name} {info.root} {info.site} {info.retracted is not None}")
        files = sum(1 for p in Path(repo).rglob("*") if p.is_file() and p.suffix == ".fits")
    digest = hashlib.sha256("\n".join(sorted(lines)).encode()).hexdigest()[:16]
    return {"datasets": len(refs), "collections": len(collections), "files": files,
            "digest": digest}


def compare(workdir: Path, names: tuple[str, ...]) -> None:
    states = {name: site_state(workdir / name) for name in names}
    print(f"  {'site':<10} {'datasets':>8} {'files':>6} {'collections':>11}  state digest")
    for name, s in states.items():
        print(f"  {name:<10} {s['datasets']:>8} {s['files']:>6} {s['collections']:>11}  "
              f"{s['digest']}")
    same = len({s["digest"] for s in states.values()}) == 1
    print(f"  => {'identical' if same else 'DIFFERENT'}: collections, chains, datasets "
          "(UUID, type, run, data ID, checksum), certifications and releases")
    if not same:
        sys.exit("demo failed: the sites did not converge")


@contextmanager
def out_of_reach(workdir: Path, names: tuple[str, ...]):
    """Move other sites' repositories aside, as if the laptop were offline."""
    moved = []
    try:
        for name in names:
            (workdir / name).rename(workdir / f".{name}.offline")
            moved.append(name)
        yield
    finally:
        for name in moved:
            (workdir / f".{name}.offline").rename(workdir / name)


def run_policies(demo: Demo, workdir: Path) -> None:
    """The same federation run by its declared flows: the project's policies/*.yaml,
    checked against the demo's sites, then `fed federate` and `fed status`."""
    fed = demo.fed
    step("Policies: the flows declared in policies/*.yaml, run by fed federate")
    shutil.copytree(PROJECT / "policies", workdir / "policies",
                    ignore=shutil.ignore_patterns(".*", "README.md"))
    print("$ cat policies/replicas.yaml")
    for line in (workdir / "policies" / "replicas.yaml").read_text().splitlines():
        print(f"  {line}")
    fed("policy", "check")
    fed("policy", "list")
    note("the syncs above were run by hand with other selections: each flow's own cursor "
         "does not exist yet, so every flow with something to carry is behind")
    fed("status")
    note("one pass runs every flow in an order that converges (what is already there is "
         "skipped; DR1 reaches the laptop)")
    fed("federate", "--once")
    fed("status")
    note("IN2P3 -> Princeton has no flow: the syncs run by hand between them are behind "
         "what IN2P3 did since (its own processing run)")
    states = json.loads(fed("status", "--json", quiet=True))
    behind = [f["flow"] for f in states["flows"] if f["lag"]["entries"] or f["failures"]]
    if behind:
        sys.exit(f"demo failed: flows still behind or failing after fed federate: {behind}")
    note("run from cron: a pass runs only the flows that are due (none, a moment later)")
    fed("federate")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("demo-repos"),
                        help="where the demo puts its sites and repositories (recreated each run)")
    workdir = parser.parse_args().workdir.absolute()
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    demo = Demo(workdir)
    fed = demo.fed
    started = time.perf_counter()
    print(f"(commands run in {workdir}; ./sites holds the site definitions)")

    step("Define four sites (all SQLite here) and create their repositories")
    write_sites(workdir / "sites")
    print("$ cat sites/NCSA.yaml")
    for line in (workdir / "sites" / "NCSA.yaml").read_text().splitlines():
        print(f"  {line}")
    fed("site", "list")
    for name in SITES:
        fed("site", "init", name)
    fed("site", "check")

    step("NCSA: dimension records and dataset types")
    write_records(workdir / "records.yaml")
    fed("insert-dimension-records", "NCSA", "records.yaml")
    fed("register-dataset-type", "NCSA", "raw", "FitsImage", "exposure", "detector")
    fed("register-dataset-type", "NCSA", "bias", "FitsImage", "detector")
    fed("register-dataset-type", "NCSA", "calexp", "FitsImage", "visit", "detector")

    step(f"NCSA: ingest {len(EXPOSURES) * len(DETECTORS)} raw FITS files "
         "(deterministic IDs: any site ingesting them gets the same UUIDs)")
    table = write_raws(workdir / "incoming")
    fed("ingest-files", "NCSA", "raw", "HSC/raw/all", str(table.relative_to(workdir)),
        "--id-mode", "deterministic")

    step("NCSA: a bias per detector, certified for 2013; chains HSC/calib and HSC/defaults")
    from astropy.io import fits

    from federation import Butler
    from federation.operations.cache import open_butler

    with Butler(workdir / "NCSA", run="HSC/calib/gen/DM-0001") as butler:
        for detector in DETECTORS:
            butler.put(fits.PrimaryHDU(np.full((64, 64), 10.0 + detector, np.float32)),
                       "bias", instrument="HSC", detector=detector, id_mode="deterministic-run")
    print("  (Python) put 4 bias datasets into run HSC/calib/gen/DM-0001")
    fed("certify-calibrations", "NCSA", "HSC/calib/gen/DM-0001", "HSC/calib/DM-0001", "bias",
        "--begin-date", "2013-01-01", "--end-date", "2014-01-01")
    fed("collection-chain", "NCSA", "HSC/calib", "HSC/calib/DM-0001",
        "--doc", "Recommended calibrations for HSC")
    fed("collection-chain", "NCSA", "HSC/defaults", "HSC/raw/all", "HSC/calib")

    step(f"NCSA: processing run {PROCESSING_RUN} (a calexp = raw - bias per raw)")
    count = process(workdir / "NCSA")
    print(f"  (Python) put {count} calexp datasets into {PROCESSING_RUN}")
    fed("query-collections", "NCSA")

    step("IN2P3 replicates NCSA: plan first, then sync (files copied and xxh3-verified)")
    fed("sync", "NCSA", "IN2P3", "--dry-run")
    fed("sync", "NCSA", "IN2P3")

    step("Princeton replicates IN2P3 (NCSA's data, second hand)")
    fed("sync", "IN2P3", "Princeton")
    note("the same datasets from NCSA directly: same UUIDs, same checksums, nothing to do")
    fed("sync", "NCSA", "Princeton")
    note("and a re-run changes nothing: the cursor is already at NCSA's last journal entry")
    fed("sync", "NCSA", "IN2P3")
    compare(workdir, SERVERS)

    step(f"NCSA finds exposure {BAD} bad and prunes its raws and calexps")
    fed("prune-datasets", "NCSA", "raw", "-c", "HSC/raw/all", "--where", f"exposure = {BAD}",
        "--yes")
    fed("prune-datasets", "NCSA", "calexp", "-c", PROCESSING_RUN, "--where", f"visit = {BAD}",
        "--yes")

    step("The deletion propagates as tombstones: NCSA -> IN2P3 -> Princeton")
    fed("sync", "NCSA", "IN2P3")
    fed("sync", "IN2P3", "Princeton")
    fed("sync", "NCSA", "Princeton")
    fed("query-datasets", "Princeton", "raw", "calexp", "-c", "HSC/raw/all", "-c",
        PROCESSING_RUN, "--where", f"exposure = {BAD} OR visit = {BAD}")
    fed("verify", "Princeton")
    compare(workdir, SERVERS)

    step("NCSA freezes data release DR1 (raws and calibrations) and proves it holds it")
    fed("release", "create", "NCSA", "DR1", "-c", "HSC/defaults", "--doc", "First release")
    fed("release", "verify", "NCSA", "DR1")
    note("nothing changes a release: pruning a released raw is refused (exit 1)")
    fed("prune-datasets", "NCSA", "raw", "-c", "HSC/raw/all", "--yes", code=1)
    note("DR2 adds the processing run; the diff reads only the parts of the trees that differ")
    fed("release", "create", "NCSA", "DR2", "-c", "HSC/defaults", "-c", PROCESSING_RUN)
    fed("release", "diff", "NCSA:DR1", "NCSA:DR2", code=1)

    step("DR1 travels NCSA -> IN2P3 -> Princeton; each site verifies it as it arrives")
    fed("sync", "NCSA", "IN2P3", "--release", "DR1")
    fed("sync", "IN2P3", "Princeton", "--release", "DR1")
    note("each site's proof: its own verification (every file re-hashed, the root rebuilt)")
    fed("release", "status", "DR1")
    fed("release", "diff", "NCSA:DR1", "Princeton:DR1")

    step("LDF104: IN2P3 processes the same raws; fed compare decides if it agrees with NCSA")
    count = process_at_in2p3(workdir / "IN2P3")
    print(f"  (Python) IN2P3 put {count} calexp datasets into {IN2P3_RUN} "
          "(its floating point rounds differently: the last bit of some pixels differs)")
    note("IN2P3's run goes to NCSA, where both outputs meet; then they are compared")
    fed("sync", "IN2P3", "NCSA", "-c", IN2P3_RUN)
    fed("compare", f"NCSA:{PROCESSING_RUN}", f"NCSA:{IN2P3_RUN}", "--report", "compare-report")
    note(f"open {workdir / 'compare-report' / 'index.html'} for the plots")

    step(f"laptop pre-caches exposure {LAPTOP_EXPOSURE} from Princeton: a complete subset")
    note("the raws of that exposure bring the calibrations valid at its time, through the "
         "CALIBRATION collections of HSC/defaults; one cursor per selection: each sync can "
         "be re-run later to refresh")
    fed("sync", "Princeton", "laptop", "-c", "HSC/defaults", "--where",
        f"exposure = {LAPTOP_EXPOSURE}")
    fed("sync", "Princeton", "laptop", "-c", PROCESSING_RUN, "--where",
        f"visit = {LAPTOP_EXPOSURE}")
    fed("query-datasets", "laptop", "*", "-c", "*")
    note("what the laptop holds, per selection, and the proof it is exactly that")
    fed("subset", "show", "laptop")
    fed("subset", "verify", "laptop")

    step(f"laptop: exposure {OTHER_EXPOSURE} as records only, read on demand (pull-through)")
    fed("sync", "Princeton", "laptop", "-c", "HSC/raw/all", "--where",
        f"exposure = {OTHER_EXPOSURE}", "--no-files")
    fed("cache", "configure", "laptop", "--pull-through", "--size-limit", "10MB",
        "--sites", str(workdir / "sites"))
    with open_butler(workdir / "laptop", collections="HSC/raw/all") as butler:
        raw = butler.get("raw", instrument="HSC", exposure=OTHER_EXPOSURE, detector=1)
        print(f"  (Python) raw {OTHER_EXPOSURE}/1 read through the cache: fetched from "
              f"Princeton, verified, kept (mean {raw[0].data.mean():.1f})")
    fed("cache", "status", "laptop")

    step("Offline: only the laptop's repository is reachable")
    with out_of_reach(workdir, SERVERS):
        print(f"  (the NCSA, IN2P3 and Princeton directories are moved aside; "
              f"{workdir.name}/ holds {sorted(p.name for p in workdir.iterdir())})")
        fed("verify", "laptop")
        with Butler(workdir / "laptop", collections="HSC/defaults") as butler:
            raw = butler.get("raw", instrument="HSC", exposure=LAPTOP_EXPOSURE, detector=1)
            print(f"  raw {LAPTOP_EXPOSURE}/1: {raw[0].data.shape} image, "
                  f"FILTER={raw[0].header['FILTER']}, mean {raw[0].data.mean():.1f}")
            bias = butler.get("bias", instrument="HSC", detector=1, exposure=LAPTOP_EXPOSURE)
            print(f"  bias valid at exposure {LAPTOP_EXPOSURE}'s time (found through "
                  f"HSC/defaults -> HSC/calib): value {bias[0].data[0, 0]:.1f}")
            calexp = butler.get("calexp", instrument="HSC", visit=LAPTOP_EXPOSURE, detector=1,
                                collections=PROCESSING_RUN)
            print(f"  calexp {LAPTOP_EXPOSURE}/1: mean {calexp[0].data.mean():.1f} "
                  f"(raw - bias = {raw[0].data.mean() - bias[0].data.mean():.1f})")
            uri = butler.get_uri("raw", instrument="HSC", exposure=LAPTOP_EXPOSURE, detector=1)
            print(f"  file: {uri}")
        with open_butler(workdir / "laptop", collections="HSC/raw/all") as butler:
            raw = butler.get("raw", instrument="HSC", exposure=OTHER_EXPOSURE, detector=1)
            print(f"  raw {OTHER_EXPOSURE}/1, read once before: local now "
                  f"(mean {raw[0].data.mean():.1f})")
        note(f"raw {OTHER_EXPOSURE}/2 was never read: its file is at Princeton, offline")
        fed("cache", "fetch", "laptop", "-c", "HSC/raw/all", "--where",
            f"exposure = {OTHER_EXPOSURE} AND detector = 2", code=1)

    run_policies(demo, workdir)

    print(f"\nDone in {time.perf_counter() - started:.1f} s. The sites are in {workdir}; try:\n"
          f"  cd {workdir} && fed status && fed serve   # then open http://127.0.0.1:8765/")


if __name__ == "__main__":
    main()
