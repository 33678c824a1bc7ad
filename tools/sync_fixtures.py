"""The repositories and timed syncs of ``bench_sync.py``, run inside its subprocesses.

Each function here runs in a fresh subprocess of the benchmark, so that the
timings, CPU seconds and peak RSS it reports are its own.
"""

from __future__ import annotations

import gc
import json
import os
import time
from pathlib import Path
from typing import Any

from benchlib import DETECTORS, FIRST_EXPOSURE, Profiled, Timer, dimension_records, peak_rss_mib
from benchlib import remove as remove_paths
from benchlib import settle as settle_disk

FILE_SIZE = 1024
RUN = "HSC/raw/all"
SOURCE, DESTINATION = "NCSA", "IN2P3"
SITES, RSYNC_COPY = "sites", "rsync-copy"
RECORDS_CHUNK = 50_000


def delta_count(n: int) -> int:
    return max(1, n // 100)


def data_ids(start: int, count: int) -> list[tuple[int, int]]:
    """(exposure, detector) pairs number start .. start+count-1, 100 detectors per exposure."""
    return [(FIRST_EXPOSURE + i // DETECTORS, i % DETECTORS) for i in range(start, start + count)]


def write_sites(base: Path) -> Path:
    """Site definitions of the source and the destination (SQLite, local) under ``base``."""
    import yaml

    sites = base / SITES
    sites.mkdir(parents=True, exist_ok=True)
    owns = {SOURCE: ["HSC/raw", "HSC/calib", "HSC/runs"], DESTINATION: ["u/in2p3"]}
    for name in (SOURCE, DESTINATION):
        (sites / f"{name}.yaml").write_text(yaml.safe_dump({
            "name": name, "registry": f"sqlite:///../{name}/registry.sqlite3",
            "root": f"../{name}", "transport": "local", "owns": owns[name]}))
    return sites


def create_destination(base: Path) -> None:
    """An empty destination repository (any earlier one removed)."""
    from federation.butler import Butler

    remove_paths(base / DESTINATION)
    Butler.create(base / DESTINATION, site=DESTINATION)


def write_files(directory: Path, ids: list[tuple[int, int]]) -> list[Path]:
    paths = []
    made: set[Path] = set()
    for exposure, detector in ids:
        path = directory / str(exposure) / f"{detector:03d}.raw"
        if path.parent not in made:
            path.parent.mkdir(parents=True, exist_ok=True)
            made.add(path.parent)
        path.write_bytes(os.urandom(FILE_SIZE))
        paths.append(path)
    return paths


def ingest(repo: Path, incoming: Path, start: int, count: int) -> float:
    """Write ``count`` files and ingest them (transfer=move) at the source; seconds taken."""
    from federation.butler import Butler, FileDataset

    begin = time.perf_counter()
    ids = data_ids(start, count)
    paths = write_files(incoming, ids)
    with Butler(repo) as butler:
        butler.ingest([FileDataset(p, "raw", {"instrument": "HSC", "exposure": e,
                                              "detector": d})
                       for p, (e, d) in zip(paths, ids, strict=True)],
                      run=RUN, transfer="move")
    remove_paths(incoming)
    return time.perf_counter() - begin


def empty_source(base: Path, n_ids: int):
    """The source repository with dimension records for ``n_ids`` data IDs and type raw."""
    from federation.butler import Butler
    from federation.sites import load_site

    site = load_site(SOURCE, base / SITES)
    Butler.create(site.root, site=SOURCE)
    with Butler(site.root) as butler:
        for dimension, records in dimension_records(n_ids).items():
            butler.registry.insert_dimension_records(dimension, records)
        butler.registry.register_dataset_type("raw", ["exposure", "detector"], "Bytes")
    return site.root


def build_source(base: Path, n: int) -> dict[str, Any]:
    """N datasets ingested from files (records for N + 1% data IDs, for the delta)."""
    root = empty_source(base, n + delta_count(n))
    return {"seconds": ingest(root, base / "incoming", 0, n)}


def build_records_source(base: Path, n: int) -> dict[str, Any]:
    """N datasets whose rows are inserted directly, with fabricated file records.

    No file is created: a records-only sync never reads the files, so a file
    record's path, size and checksum only have to be well formed and distinct.
    """
    from federation.butler import Butler
    from federation.datastore.checksum import bytes_checksum
    from federation.datastore.storage_classes import get_storage_class
    from federation.model import CollectionType, DatasetRef, IdMode, StoredFile, make_dataset_id

    begin = time.perf_counter()
    root = empty_source(base, n)
    with Butler(root) as butler:
        registry = butler.registry
        dtype = registry.get_dataset_type("raw")
        formatter = get_storage_class(dtype.storage_class).formatter.name
        registry.collections.register(RUN, CollectionType.RUN)
        for start in range(0, n, RECORDS_CHUNK):
            entries, keys = [], []
            for exposure, detector in data_ids(start, min(RECORDS_CHUNK, n - start)):
                required = {"instrument": "HSC", "exposure": exposure, "detector": detector}
                full, key = registry.expand_data_id(dtype, required)
                ref = DatasetRef(make_dataset_id(IdMode.RANDOM, "raw", required), dtype, full,
                                 RUN)
                path = f"{RUN}/raw/{exposure}/raw_HSC_{exposure}_{detector:03d}.raw"
                entries.append((ref, StoredFile(path, formatter, FILE_SIZE,
                                                bytes_checksum(ref.id.bytes))))
                keys.append(key)
            with registry.transaction():
                registry.datasets.insert(RUN, entries, keys=keys)
    return {"seconds": time.perf_counter() - begin}


def count_destination(base: Path, with_files: bool) -> tuple[int, int]:
    """Datasets in the destination's registry, and files under its run directory."""
    import sqlalchemy as sa

    from federation.butler import Butler

    root = base / DESTINATION
    with Butler(root) as butler:
        db = butler.registry.db
        with db.reading() as conn:
            datasets = conn.execute(sa.select(sa.func.count()).select_from(
                db.tables.dataset)).scalar_one()
    files = sum(1 for p in (root / RUN).rglob("*") if p.is_file()) if with_files else 0
    return datasets, files


def run_sync(base: Path, with_files: bool, profile: bool, label: str) -> dict[str, Any]:
    """One in-process sync of the source into the destination: timed, then checked."""
    from federation.operations.sync import sync_sites
    from federation.sites import list_sites, load_site
    from federation.sync.options import SyncOptions
    from federation.sync.selection import Selection

    sites_dir = base / SITES
    src, dst = load_site(SOURCE, sites_dir), load_site(DESTINATION, sites_dir)
    options = SyncOptions(Selection(files=with_files))
    gc.collect()
    with Profiled(profile, label), Timer() as timer:
        report = sync_sites(src, dst, options, sites=list_sites(sites_dir))
    rss = peak_rss_mib()  # before the checks below, which load more
    if report.failed or report.conflicts:
        raise SystemExit(f"{label}: {len(report.failed)} failed files, "
                         f"{len(report.conflicts)} conflicts")
    datasets, files = count_destination(base, with_files)
    return {"seconds": timer.seconds, "cpu_seconds": timer.cpu, "peak_rss_mib": rss,
            "files": report.files, "bytes": report.bytes, "counts": dict(report.counts),
            "dest_datasets": datasets, "dest_files": files}


def lsst_source(root: Path, incoming: Path, n: int):
    """An lsst.daf.butler repository with N ~1 KiB JSON datasets ingested (transfer=move)."""
    from lsst.daf.butler import Butler, DatasetRef, DatasetType, FileDataset

    Butler.makeRepo(str(root))
    source = Butler.from_config(str(root), writeable=True, run=RUN)
    registry = source.registry
    registry.insertDimensionData("instrument", {
        "name": "HSC", "detector_max": n + 1, "visit_max": 21474800, "exposure_max": 21474800,
        "class_name": "lsst.obs.subaru.HyperSuprimeCam"})
    registry.insertDimensionData("detector", *[
        {"instrument": "HSC", "id": d, "full_name": f"d{d}", "purpose": "SCIENCE"}
        for d in range(n)])
    dataset_type = DatasetType("raw_json", ["instrument", "detector"], "StructuredDataDict",
                               universe=source.dimensions)
    registry.registerDatasetType(dataset_type)
    registry.registerRun(RUN)
    incoming.mkdir(parents=True)
    datasets = []
    for d in range(n):
        path = incoming / f"{d:07d}.json"
        path.write_text(json.dumps({"detector": d, "pad": os.urandom(500).hex()}))
        ref = DatasetRef(dataset_type, {"instrument": "HSC", "detector": d}, run=RUN)
        datasets.append(FileDataset(path=str(path), refs=[ref],
                                    formatter="lsst.daf.butler.formatters.json.JsonFormatter"))
    source.ingest(*datasets, transfer="move")
    remove_paths(incoming)
    return source


def lsst_transfer(base: Path, n: int, settle_s: float) -> dict[str, Any]:
    """Time lsst.daf.butler's ``transfer_from`` (transfer=copy) of N datasets into an empty
    repository; the disk settles after the source is built and before the clock starts."""
    from lsst.daf.butler import Butler

    source = lsst_source(base / "lsst-src", base / "lsst-incoming", n)
    refs = list(source.registry.queryDatasets("raw_json", collections=RUN))
    Butler.makeRepo(str(base / "lsst-dst"))
    destination = Butler.from_config(str(base / "lsst-dst"), writeable=True)
    gc.collect()
    settle_disk(settle_s)
    with Timer() as timer:
        moved = destination.transfer_from(source, refs, transfer="copy",
                                          register_dataset_types=True,
                                          transfer_dimensions=True)
    return {"seconds": timer.seconds, "cpu_seconds": timer.cpu, "count": len(list(moved)),
            "peak_rss_mib": peak_rss_mib()}
