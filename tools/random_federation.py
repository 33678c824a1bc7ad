"""A long randomized run of a four-site federation, checked as it goes and at the end.

NCSA, IN2P3, Princeton and a laptop each own collections (as in ``sites/``). At
random, NCSA ingests exposures with deterministic IDs, prunes them and ingests them
again (same UUIDs, new bytes), tags and untags them and redefines its chain; the
other sites write and remove processing runs of their own. Between the owner
operations, ``fed sync`` runs along random edges (both directions, cycles, several
paths to one site), sometimes killed with SIGKILL at a random instant or at a
random crash point, sometimes while the source's owner writes, sometimes beside a
second sync into the same repository. Ingests, prunes and run removals are
sometimes killed too. NCSA freezes data releases of its chain now and then (and
retracts some); what they hold is never pruned or removed, and releases travel
with the syncs.

After every step each repository the step touched is verified: every file its
registry records is there and matches its checksum, and every release it holds
verifies complete (every file re-hashed, the root rebuilt). At the end, syncs run
along every edge until nothing changes, and every site must hold the same
collections, datasets (UUID, type, run, data ID, checksum), certifications and
releases (name, root, retraction).

    python tools/random_federation.py [--seeds 1 2 3] [--steps 200] [--postgres URL]

Exits 0 when every check held for every seed; otherwise prints the seed, the step,
the command and its output, and keeps the work directory for a look.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from demo import site_state

from federation import Butler
from federation.release.verify import verify as verify_release

FED = str(Path(sys.executable).parent / "fed")
OWNS = {"NCSA": ["HSC/raw", "HSC/calib", "HSC/defaults"], "IN2P3": ["HSC/runs-in2p3", "u/in2p3"],
        "Princeton": ["u/princeton"], "laptop": ["u/alice"]}
RUN_PREFIX = {"IN2P3": "HSC/runs-in2p3", "Princeton": "u/princeton", "laptop": "u/alice"}
EXPOSURES = list(range(1000, 1008))
DETECTORS = [0, 1]
RAWS, TAG, CHAIN, CALIB = "HSC/raw/all", "HSC/raw/good", "HSC/defaults", "HSC/calib"
CONVERGE_ROUNDS = 4
YEARS = list(range(2010, 2021))  # calibration validity is certified in whole years


class Failed(Exception):
    """An invariant did not hold: the message says which, where and after what."""


@dataclass
class Model:
    """What the owners did, as far as the next operation needs to know."""

    ingested: set[int] = field(default_factory=set)  # NCSA's exposures in HSC/raw/all
    versions: dict[int, int] = field(default_factory=dict)  # how often each was ingested
    tagged: bool = False
    calibs: list[str] = field(default_factory=list)  # NCSA's bias runs
    certified: dict[int, str] = field(default_factory=dict)  # year -> the run valid then
    runs: dict[str, list[str]] = field(default_factory=dict)  # site -> its live runs
    made: int = 0  # runs created so far (names are never reused)
    releases: list[str] = field(default_factory=list)  # NCSA's releases
    released: set[int] = field(default_factory=set)  # exposures a release holds
    released_runs: set[str] = field(default_factory=set)  # calibration runs a release holds


class Run:
    """One seed: the sites, the random choices, the steps."""

    def __init__(self, workdir: Path, seed: int, steps: int, postgres: str | None) -> None:
        self.workdir = workdir
        self.rng = random.Random(seed)
        self.seed = seed
        self.steps = steps
        self.postgres = postgres
        self.model = Model()
        self.kills = 0
        self.syncs = 0
        self.log: list[str] = []
        self.schemas: list[str] = []

    # -- running fed --------------------------------------------------------------------

    def fed(self, *args: str, kill: str | None = None, background: bool = False
            ) -> subprocess.Popen | subprocess.CompletedProcess:
        """Run `fed ARGS` in the work directory; ``kill``: "point" (SIGKILL at a random
        crash point) or "timer" (SIGKILL after a random delay)."""
        env = dict(os.environ)
        env.pop("FED_FAULT_KILL_AT", None)
        if kill == "point":
            env["FED_FAULT_KILL_AT"] = str(self.rng.randint(1, 40))
        self.log.append(f"fed {' '.join(args)}" + (f"  [{kill} kill]" if kill else ""))
        proc = subprocess.Popen([FED, *args], cwd=self.workdir, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if background:
            return proc
        if kill == "timer":
            try:
                proc.wait(timeout=self.rng.uniform(0.05, 1.0))
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate(timeout=600)
        return subprocess.CompletedProcess(args, proc.returncode, out, "")

    def must(self, *args: str) -> str:
        result = self.fed(*args)
        if result.returncode != 0:
            raise Failed(f"'fed {' '.join(args)}' exited {result.returncode}:\n{result.stdout}")
        return result.stdout

    def owner_run(self, *args: str) -> bool:
        """An owner's command that is sometimes killed with SIGKILL at a random instant;
        whether it was."""
        if self.rng.random() >= 0.15:
            self.must(*args)
            return False
        result = self.fed(*args, kill="timer")
        self.finished(args, result.returncode, result.stdout, killable=True)
        return result.returncode == -signal.SIGKILL

    def refresh_raws(self) -> None:
        """Which exposures NCSA holds after a killed ingest or prune (either way is fine)."""
        with Butler(self.workdir / "NCSA") as butler:  # the first ingest may have died
            refs = butler.query_datasets("raw", RAWS) \
                if butler.registry.collections.exists(RAWS) else []
        self.model.ingested = {ref.data_id["exposure"] for ref in refs}

    def finished(self, args: tuple[str, ...], code: int, output: str, killable: bool) -> None:
        """A sync ends in success, or killed when it was to be; nothing else is fine."""
        if code == -signal.SIGKILL and killable:
            self.kills += 1
            return
        if code != 0 or "Traceback" in output:
            raise Failed(f"'fed {' '.join(args)}' exited {code}:\n{output}")

    # -- set-up -------------------------------------------------------------------------

    def drop_databases(self) -> None:
        """Drop the PostgreSQL schemas this run made."""
        if not self.schemas:
            return
        import sqlalchemy as sa

        engine = sa.create_engine(self.postgres, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            for schema in self.schemas:
                conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        engine.dispose()

    def setup(self) -> None:
        urls = self._databases()
        sites = self.workdir / "sites"
        sites.mkdir(parents=True)
        for name, owns in OWNS.items():
            definition = {"name": name, "root": f"../{name}", "transport": "local",
                          "owns": owns, "keep_deleted": False,
                          "registry": urls.get(name, f"sqlite:///../{name}/registry.sqlite3")}
            (sites / f"{name}.yaml").write_text(yaml.safe_dump(definition, sort_keys=False))
            self.must("site", "init", name)
            self.model.runs[name] = []
        self._write_records(self.workdir / "records.yaml")
        for name in OWNS:  # the same records and types everywhere: syncs find them equal
            self.must("insert-dimension-records", name, "records.yaml")
            self.must("register-dataset-type", name, "raw", "Bytes", "exposure", "detector")
            self.must("register-dataset-type", name, "calexp", "Bytes", "visit", "detector")
            self.must("register-dataset-type", name, "bias", "Bytes", "detector")
        self.ingest(self.rng.choice(EXPOSURES))
        for name in OWNS:
            if name != "NCSA":
                self.must("sync", "NCSA", name)

    def _databases(self) -> dict[str, str]:
        """NCSA and IN2P3 on PostgreSQL (a schema each) when asked; the rest on SQLite."""
        if not self.postgres:
            return {}
        import sqlalchemy as sa

        urls = {}
        engine = sa.create_engine(self.postgres, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            for name in ("NCSA", "IN2P3"):
                schema = f"fed_random_{uuid.uuid4().hex[:10]}"
                conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
                self.schemas.append(schema)
                url = sa.engine.make_url(self.postgres).update_query_dict(
                    {"options": f"-csearch_path={schema}"})
                urls[name] = url.render_as_string(hide_password=False)
        engine.dispose()
        return urls

    @staticmethod
    def _write_records(path: Path) -> None:
        records = {
            "instrument": [{"instrument": "HSC", "detector_max": 112, "visit_max": 21474800,
                            "class_name": "lsst.obs.subaru.HyperSuprimeCam"}],
            "physical_filter": [{"instrument": "HSC", "physical_filter": "HSC-R",
                                 "band": "r"}],
            "day_obs": [{"instrument": "HSC", "day_obs": 20130617}],
            "detector": [{"instrument": "HSC", "detector": d, "full_name": f"1_{d:02d}",
                          "purpose": "SCIENCE"} for d in DETECTORS],
            "exposure": [{"instrument": "HSC", "exposure": e, "physical_filter": "HSC-R",
                          "day_obs": 20130617, "obs_id": f"HSCA{e}", "exposure_time": 30.0,
                          "observation_type": "science"} for e in EXPOSURES],
            "visit": [{"instrument": "HSC", "visit": e, "physical_filter": "HSC-R",
                       "day_obs": 20130617, "name": f"HSCA{e}", "exposure_time": 30.0}
                      for e in EXPOSURES],
        }
        path.write_text(yaml.safe_dump(records, sort_keys=False))

    # -- owner operations ---------------------------------------------------------------

    def ingest(self, exposure: int) -> None:
        """NCSA ingests an exposure's raws: the same UUIDs every time, new bytes each time."""
        version = self.model.versions.get(exposure, 0) + 1
        folder = self.workdir / "incoming" / f"{exposure}-v{version}"
        folder.mkdir(parents=True)
        with open(folder / "raws.csv", "w", newline="") as stream:
            writer = csv.writer(stream)
            writer.writerow(["file", "instrument", "exposure", "detector"])
            for detector in DETECTORS:
                name = f"raw_{exposure}_{detector}.dat"
                (folder / name).write_bytes(self.rng.randbytes(self.rng.randint(16, 4096)))
                writer.writerow([name, "HSC", exposure, detector])
        self.model.versions[exposure] = version
        if self.owner_run("ingest-files", "NCSA", "raw", RAWS, str(folder / "raws.csv"),
                          "--id-mode", "deterministic"):
            self.refresh_raws()
        else:
            self.model.ingested.add(exposure)

    def owner_operation(self) -> None:
        """One random thing an owner does to its own collections."""
        model, rng = self.model, self.rng
        choices = ["ingest", "process", "process", "certify"]
        if model.ingested:
            choices += ["prune", "tag", "release"]
        if model.releases:
            choices.append("retract")
        if model.tagged:
            choices += ["untag", "chain"]
        if any(model.runs.values()):
            choices.append("remove-run")
        if model.calibs:
            choices += ["decertify", "remove-calib"]
        what = rng.choice(choices)
        if what == "ingest":
            fresh = [e for e in EXPOSURES if e not in model.ingested]
            if fresh:
                self.ingest(rng.choice(fresh))
        elif what == "release":
            self.release()
        elif what == "retract":
            self.must("release", "retract", "NCSA", rng.choice(model.releases), "--reason",
                      f"step {len(self.log)}")
        elif what == "prune":
            unreleased = sorted(model.ingested - model.released)
            if not unreleased:
                return
            exposure = rng.choice(unreleased)
            if self.owner_run("prune-datasets", "NCSA", "raw", "-c", RAWS, "--where",
                              f"exposure = {exposure}", "--yes"):
                self.refresh_raws()
            else:
                model.ingested.discard(exposure)
        elif what == "tag":
            exposure = rng.choice(sorted(model.ingested))
            self.must("associate", "NCSA", TAG, "-c", RAWS, "--where", f"exposure = {exposure}")
            model.tagged = True
        elif what == "untag":
            self.must("disassociate", "NCSA", TAG, "-c", TAG, "--where",
                      f"exposure = {rng.choice(EXPOSURES)}")
        elif what == "chain":
            children = [RAWS, TAG]
            rng.shuffle(children)
            self.must("collection-chain", "NCSA", CHAIN, *children[:rng.randint(1, 2)])
        elif what == "process":
            self.process(rng.choice(sorted(RUN_PREFIX)))
        elif what == "certify":
            self.certify()
        elif what == "decertify":
            begin, end = sorted(rng.sample(YEARS, 2))
            self.must("decertify", "NCSA", CALIB, "bias", "--begin-date", f"{begin}-01-01",
                      "--end-date", f"{end}-01-01")
            for year in range(begin, end):
                model.certified.pop(year, None)
        elif what == "remove-calib":
            free = [r for r in model.calibs if r not in model.released_runs]
            if not free:
                return
            run = free[rng.randrange(len(free))]
            model.calibs.remove(run)
            self.must("remove-runs", "NCSA", run, "--force", "--yes")
            model.certified = {y: r for y, r in model.certified.items() if r != run}
        else:
            site = rng.choice([s for s, runs in model.runs.items() if runs])
            run = model.runs[site].pop(rng.randrange(len(model.runs[site])))
            if self.owner_run("remove-runs", site, run, "--force", "--yes"):
                with Butler(self.workdir / site) as butler:
                    if butler.registry.collections.exists(run):
                        model.runs[site].append(run)  # killed before it committed

    def release(self) -> None:
        """NCSA freezes what its chain finds now (the creation may be killed)."""
        self.model.made += 1
        with Butler(self.workdir / "NCSA") as butler:
            present = [c for c in (CHAIN, CALIB) if butler.registry.collections.exists(c)]
        if not present:
            return
        args = ("release", "create", "NCSA", f"DR{self.model.made}",
                *(a for c in present for a in ("-c", c)))
        kill = "timer" if self.rng.random() < 0.15 else None
        result = self.fed(*args, kill=kill)
        if not (result.returncode == 1 and "would be empty" in result.stdout):
            self.finished(args, result.returncode, result.stdout, killable=kill is not None)
        with Butler(self.workdir / "NCSA") as butler:
            releases = butler.registry.releases
            self.model.releases = releases.names()
            held = {e.dataset_id for r in self.model.releases for e in releases.entries(r)}
            refs = butler.registry.datasets.get_many(held).values()
        self.model.released = {r.data_id["exposure"] for r in refs
                               if r.dataset_type.name == "raw"}
        self.model.released_runs = {r.run for r in refs if r.dataset_type.name == "bias"}

    def certify(self) -> None:
        """NCSA writes a bias per detector into a new run and certifies it for some years
        no other bias is valid in."""
        self.model.made += 1
        run = f"{CALIB}/gen/r{self.model.made}"
        self.log.append(f"(Python) NCSA: put biases into {run}")
        with Butler(self.workdir / "NCSA", run=run) as butler:
            for detector in DETECTORS:
                butler.put(self.rng.randbytes(32), "bias", instrument="HSC", detector=detector)
        self.model.calibs.append(run)
        free = [y for y in YEARS if y not in self.model.certified]
        if not free:
            return
        begin = self.rng.choice(free)  # validity ranges of one data ID must not overlap
        end = begin + 1
        while end in free and end < YEARS[-1] and self.rng.random() < 0.5:
            end += 1
        self.must("certify-calibrations", "NCSA", run, CALIB, "bias",
                  "--begin-date", f"{begin}-01-01", "--end-date", f"{end}-01-01")
        self.model.certified.update(dict.fromkeys(range(begin, end), run))

    def process(self, site: str) -> None:
        """A site writes a small processing run of its own (a calexp or two)."""
        self.model.made += 1
        run = f"{RUN_PREFIX[site]}/r{self.model.made}"
        self.log.append(f"(Python) {site}: put calexps into {run}")
        with Butler(self.workdir / site, run=run) as butler:
            for detector in self.rng.sample(DETECTORS, self.rng.randint(1, 2)):
                visit = self.rng.choice(EXPOSURES)
                butler.put(self.rng.randbytes(64), "calexp", instrument="HSC", visit=visit,
                           detector=detector)
        self.model.runs[site].append(run)

    # -- syncs ---------------------------------------------------------------------------

    def edge(self) -> tuple[str, str]:
        return tuple(self.rng.sample(sorted(OWNS), 2))  # type: ignore[return-value]

    def sync(self) -> set[str]:
        """One sync along a random edge, perhaps killed, perhaps with a writer beside it."""
        source, destination = self.edge()
        args = ("sync", source, destination, "--jobs", str(self.rng.choice([1, 2, 4])))
        self.syncs += 1
        kind = self.rng.random()
        if kind < 0.15:  # the source's owner writes while the sync runs
            proc = self.fed(*args, background=True)
            self.owner_operation()
            out, _ = proc.communicate(timeout=600)
            self.finished(args, proc.returncode, out, killable=False)
            return {destination, "NCSA", *RUN_PREFIX}
        if kind < 0.25:  # a second sync into the same repository at the same time
            other = self.rng.choice([s for s in OWNS if s not in (source, destination)])
            second = ("sync", other, destination)
            procs = [self.fed(*args, background=True), self.fed(*second, background=True)]
            self.syncs += 1
            for each, proc in zip((args, second), procs, strict=True):
                out, _ = proc.communicate(timeout=600)
                self.finished(each, proc.returncode, out, killable=False)
            return {destination}
        kill = None if kind < 0.6 else ("point" if kind < 0.8 else "timer")
        result = self.fed(*args, kill=kill)
        self.finished(args, result.returncode, result.stdout, killable=kill is not None)
        return {destination}

    # -- checks --------------------------------------------------------------------------

    def verify(self, sites: set[str]) -> None:
        """Invariant 1 at every site touched: each recorded file is there and matches."""
        for site in sorted(sites & set(OWNS)):
            with Butler(self.workdir / site) as butler:
                report = butler.verify()
                releases = butler.registry.releases.names()
                checks = {name: verify_release(butler, name, jobs=1).check
                          for name in releases}
            if report.problems:
                raise Failed(f"{site}: {len(report.problems)} file(s) missing or corrupt: "
                             f"{report.problems[:3]}")
            for name, check in checks.items():
                if not check.complete:
                    raise Failed(f"{site}: release {name} does not verify: {check}")

    def converge(self) -> dict[str, str]:
        """Sync along every edge until nothing changes; every site must end up the same."""
        states = {}
        for _ in range(CONVERGE_ROUNDS):
            for source in OWNS:
                for destination in OWNS:
                    if source != destination:
                        self.must("sync", source, destination)
            before, states = states, {s: site_state(self.workdir / s)["digest"] for s in OWNS}
            if states == before and len(set(states.values())) == 1:
                return states
        raise Failed(f"the sites did not converge after {CONVERGE_ROUNDS} rounds: {states}")

    def go(self) -> None:
        self.setup()
        for number in range(1, self.steps + 1):
            self.log.append(f"-- step {number}")
            touched = self.sync() if self.rng.random() < 0.6 else self._owner_step()
            self.verify(touched)
        self.converge()

    def _owner_step(self) -> set[str]:
        self.owner_operation()
        return set(OWNS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--steps", type=int, default=200, help="steps per seed")
    parser.add_argument("--postgres", metavar="URL",
                        help="put NCSA's and IN2P3's registries on this PostgreSQL server")
    parser.add_argument("--workdir", type=Path, help="where to run (default: a temporary "
                        "directory, removed when every seed passed)")
    args = parser.parse_args()
    top = args.workdir or Path(tempfile.mkdtemp(prefix="random-federation-"))
    total = {"steps": 0, "syncs": 0, "kills": 0}
    for seed in args.seeds:
        workdir = top / f"seed-{seed}"
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
        run = Run(workdir, seed, args.steps, args.postgres)
        started = time.perf_counter()
        try:
            run.go()
        except Failed as exc:
            print("\n".join(run.log[-25:]))
            sys.exit(f"seed {seed} FAILED ({run.log[-1] if run.log else 'set-up'}): {exc}\n"
                     f"the sites are in {workdir}")
        run.drop_databases()
        print(f"seed {seed}: {args.steps} steps, {run.syncs} syncs, {run.kills} killed, "
              f"converged in {time.perf_counter() - started:.0f} s")
        total["steps"] += args.steps
        total["syncs"] += run.syncs
        total["kills"] += run.kills
    print(f"all {len(args.seeds)} seeds passed: {total['steps']} steps, {total['syncs']} syncs, "
          f"{total['kills']} SIGKILLs")
    if args.workdir is None:
        shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    main()
