"""The shared cache: a size limit, least recently read evicted first, never a last copy.

IN2P3 (SQLite and PostgreSQL) reads NCSA's raws through; every file is 192 bytes.
Under a limit, a fetch first evicts the least recently read fetched files, through
``fed drop``'s rule: only those another site holds verified now. Files synced here
with files are never the cache's. ``fed cache status/evict/configure/fetch`` show
and change it; bad input is one line and changes nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from test_cli import fails, fed
from test_pull_through import RAW, corrupt, records_only, registry_state, root

from federation.cache import CacheConfig, format_size, parse_size
from federation.config import RepoConfig
from federation.errors import ConfigError, DatastoreError, InputError
from federation.operations.cache import open_butler
from federation.registry.cache import CacheEntries

SIZE = 192  # bytes of one raw's file


class Clock:
    """Time that moves only when told: read order decides, not the machine's speed."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def detector(n: int, exposure: int = 903334) -> dict:
    return {"instrument": "HSC", "exposure": exposure, "detector": n}


def read(butler, clock: Clock, *detectors: int) -> None:
    for n in detectors:
        clock.now += 100  # more than the minute between two notes of one read
        assert np.array_equal(butler.get("raw", detector(n)), np.full(8, n))


def holders(fed_, site: str = "IN2P3") -> dict[int, str | None]:
    """Detector of exposure 903334 -> the site holding its file (None: here)."""
    with fed_.butler(site, collections=RAW) as b:
        found = {}
        for n in range(4):
            ref = b.find_dataset("raw", detector(n))
            found[n] = b.registry.datasets.file(ref.id)[1]
        return found


def used(fed_, site: str = "IN2P3") -> int:
    with fed_.butler(site) as b:
        return CacheEntries(b.registry.db).totals().bytes


def ncsa_file(fed_, n: int) -> Path:
    with fed_.butler("NCSA", collections=RAW) as b:
        return Path(b.get_uri("raw", detector(n))[7:])


def cached_butler(repo: Path, clock: Clock):
    butler = open_butler(repo, collections=RAW)
    butler.files.clock = clock
    return butler


# -- eviction on read ---------------------------------------------------------------------


def test_the_least_recently_read_file_goes_first_and_the_limit_holds(ncsa):
    repo = records_only(ncsa, size_limit=3 * SIZE)
    clock = Clock()
    with cached_butler(repo, clock) as b:
        read(b, clock, 0, 1, 2)
        assert used(ncsa) == 3 * SIZE
        read(b, clock, 0)  # 0 is now the most recent read; 1 the least
        read(b, clock, 3)
        assert holders(ncsa) == {0: None, 1: "NCSA", 2: None, 3: None}
        assert used(ncsa) == 3 * SIZE
        read(b, clock, 1)  # fetched again; 2 goes now
        assert holders(ncsa) == {0: None, 1: None, 2: "NCSA", 3: None}
        assert used(ncsa) <= 3 * SIZE
        assert b.verify().ok
    with ncsa.butler("IN2P3") as b:
        log = [(e.operation, e.result) for e in b.registry.log.entries()]
    assert log.count(("drop", "ok")) == 2  # each eviction is a drop, in the sync log


def test_a_file_no_other_site_holds_verified_is_never_evicted(ncsa):
    repo = records_only(ncsa, size_limit=2 * SIZE)
    clock = Clock()
    with cached_butler(repo, clock) as b:
        read(b, clock, 0, 1)
        corrupt(ncsa_file(ncsa, 0))  # IN2P3's copy of 0 is now the last good one
        read(b, clock, 2)
        assert holders(ncsa) == {0: None, 1: "NCSA", 2: None, 3: "NCSA"}
        corrupt(ncsa_file(ncsa, 2))
        before = registry_state(ncsa, "IN2P3")
        with pytest.raises(DatastoreError) as caught:
            b.get("raw", detector(3))
    assert f"no room for 192 B in the cache of IN2P3: {format_size(2 * SIZE)} of its " \
        f"{format_size(2 * SIZE)} are files no other site holds verified now" in str(caught.value)
    assert registry_state(ncsa, "IN2P3") == before
    assert holders(ncsa) == {0: None, 1: "NCSA", 2: None, 3: "NCSA"}


def test_files_synced_here_with_files_are_not_the_caches(ncsa):
    ncsa.sync("NCSA", "IN2P3", collections=["HSC/calib/gen/DM-1"])  # biases, with files
    repo = records_only(ncsa, size_limit=SIZE)
    clock = Clock()
    with cached_butler(repo, clock) as b:
        read(b, clock, 0, 1)
        assert holders(ncsa) == {0: "NCSA", 1: None, 2: "NCSA", 3: "NCSA"}
    out = fed("cache", "evict", repo, "--to", "0").stdout
    assert "evicted 1 files (192 B) from IN2P3: 0 B left (target 0 B)" in out
    with ncsa.butler("IN2P3", collections="HSC/calib/gen/DM-1") as b:
        biases = b.query_datasets("bias")
        assert len(biases) == 4 and all(b.exists(r) for r in biases)


def test_a_file_larger_than_the_limit_is_refused(ncsa):
    repo = records_only(ncsa, size_limit=100)
    before = registry_state(ncsa, "IN2P3")
    with open_butler(repo, collections=RAW) as b, pytest.raises(DatastoreError) as caught:
        b.get("raw", detector(0))
    assert "a file of 192 B does not fit in the cache of IN2P3 (size limit 100 B)" \
        in str(caught.value)
    assert registry_state(ncsa, "IN2P3") == before


# -- fed cache ------------------------------------------------------------------------------


def test_configure_status_fetch_and_evict_from_the_command_line(ncsa):
    ncsa.sync("NCSA", "IN2P3", collections=[RAW], files=False)
    repo = root(ncsa, "IN2P3")
    registry_url = RepoConfig.load(repo).db_url
    out = fed("cache", "configure", repo, "--pull-through", "--size-limit", "1kB",
              "--sites", ncsa.sites_dir).stdout
    assert out == f"cache: pull-through on, size limit 1.0 kB, sites {ncsa.sites_dir}\n"
    config = CacheConfig.load(repo)
    assert (config.pull_through, config.size_limit, config.sites) == (True, 1000, ncsa.sites_dir)
    assert RepoConfig.load(repo).db_url == registry_url  # the rest of the file is kept

    out = fed("cache", "status", repo).stdout
    assert "used:        0 B of 1.0 kB (0%) in 0 files fetched from other sites" in out

    out = fed("cache", "fetch", repo, "-c", RAW, "--where", "exposure = 903334").stdout
    assert "fetched 4 files into IN2P3; 0 were here already" in out
    out = fed("cache", "fetch", repo, "-c", RAW, "--where", "exposure = 903334").stdout
    assert "fetched 0 files into IN2P3; 4 were here already" in out

    out = fed("cache", "status", repo).stdout
    assert "used:        768 B of 1.0 kB (77%) in 4 files fetched from other sites" in out
    assert "reads:       oldest 20" in out and "least recently read:" in out
    assert out.count("raw@{instrument='HSC', detector=") == 4
    found = json.loads(fed("cache", "status", repo, "--json", "--check").stdout)
    assert (found["files"], found["bytes"], found["size_limit"]) == (4, 768, 1000)
    assert len(found["evictable"]["evicted"]) == 4 and found["evictable"]["kept"] == []
    out = fed("cache", "status", repo, "--check").stdout
    assert "evictable:   4 files (768 B) held verified at another site now" in out

    before = registry_state(ncsa, "IN2P3")
    out = fed("cache", "evict", repo, "--to", "400", "--dry-run").stdout
    assert "would evict 2 files (384 B) from IN2P3: 384 B left (target 400 B)" in out
    assert registry_state(ncsa, "IN2P3") == before
    first_two = [e["id"] for e in found["least_recent"][:2]]
    result = json.loads(fed("cache", "evict", repo, "--to", "400", "--json").stdout)
    assert [e["id"] for e in result["evicted"]] == first_two
    assert (result["freed"], result["left"]) == (384, 384)
    assert used(ncsa) == 384
    out = fed("cache", "evict", repo).stdout  # down to the limit: nothing to do
    assert "evicted 0 files (0 B) from IN2P3: 384 B left (target 1.0 kB)" in out


def test_evict_keeps_last_copies_and_exits_1(ncsa):
    repo = records_only(ncsa)
    fed("cache", "fetch", repo, "-c", RAW, "--where", "exposure = 903334 AND detector < 2")
    corrupt(ncsa_file(ncsa, 0))
    result = fed("cache", "evict", repo, "--to", "0", code=1).stdout
    assert "kept 1 files: no verified copy at another site" in result
    assert "NCSA: checksum mismatch" in result
    assert "evicted 1 files (192 B) from IN2P3: 192 B left (target 0 B)" in result
    assert holders(ncsa)[0] is None and holders(ncsa)[1] == "NCSA"


@pytest.mark.parametrize(("block", "args", "match"), [
    (None, ["evict", "{repo}"], "has no size limit: give --to SIZE"),
    (None, ["evict", "{repo}", "--to", "12XB"], "invalid --to size '12XB'"),
    (None, ["configure", "{repo}", "--size-limit", "lots"], "invalid --size-limit 'lots'"),
    (None, ["status", "{tmp}/nowhere"], "is not a federation repository"),
    ({"pull_through": "maybe"}, ["status", "{repo}"], "pull_through must be true or false"),
    ({"size_limit": "-3"}, ["status", "{repo}"], "cache: invalid size_limit '-3'"),
    ({"pulltrough": True}, ["status", "{repo}"], "unknown key(s) pulltrough"),
    ({"pull_through": True, "sites": "{tmp}/nosites"}, ["fetch", "{repo}", "-c", RAW],
     "nosites"),
])
def test_bad_input_is_one_line_and_changes_nothing(ncsa, tmp_path, block, args, match):
    ncsa.sync("NCSA", "IN2P3", collections=[RAW], files=False)
    repo = root(ncsa, "IN2P3")
    if block is not None:
        data = yaml.safe_load((repo / "federation.yaml").read_text())
        block = {k: v.format(tmp=tmp_path) if isinstance(v, str) else v
                 for k, v in block.items()}
        (repo / "federation.yaml").write_text(yaml.safe_dump(data | {"cache": block}))
    config = (repo / "federation.yaml").read_text()
    before = registry_state(ncsa, "IN2P3")
    fails("cache", *[a.format(repo=repo, tmp=tmp_path) for a in args], match=match)
    assert registry_state(ncsa, "IN2P3") == before
    assert (repo / "federation.yaml").read_text() == config


def test_sizes_read_and_written():
    assert [parse_size(s) for s in ("50GB", "1.5 TB", "500MiB", "1024", 7, "2kb")] == \
        [50 * 10**9, 15 * 10**11, 500 * 2**20, 1024, 7, 2000]
    assert [format_size(n) for n in (0, 999, 1000, 768_000_000)] == \
        ["0 B", "999 B", "1.0 kB", "768.0 MB"]
    with pytest.raises(InputError, match="invalid size 'GB'"):
        parse_size("GB")


def test_a_configuration_without_a_cache_block_reads_as_off(ncsa):
    config = CacheConfig.load(root(ncsa, "IN2P3"))
    assert config == CacheConfig()
    with pytest.raises(ConfigError, match="is not a federation repository"):
        CacheConfig.load(ncsa.root / "nothing")


# -- concurrent readers under a limit -------------------------------------------------------

READER = textwrap.dedent("""
    import sys, time
    from pathlib import Path

    from federation.operations.cache import open_butler
    from federation.registry.cache import CacheEntries

    repo, go, detector = sys.argv[1], sys.argv[2], int(sys.argv[3])
    Path(f"{go}.{detector}.ready").touch()
    while not Path(go).exists():
        time.sleep(0.01)
    with open_butler(repo, collections="HSC/raw/all") as b:
        entries, most = CacheEntries(b.registry.db), 0
        for exposure in (903334, 903335, 903336):
            b.get("raw", instrument="HSC", exposure=exposure, detector=detector)
            most = max(most, entries.totals().bytes)
    print(most)
""")


def test_readers_of_different_files_at_once_stay_within_the_limit(ncsa, tmp_path):
    repo = records_only(ncsa, size_limit=3 * SIZE)
    script, go = tmp_path / "reader.py", tmp_path / "go"
    script.write_text(READER)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    readers = [subprocess.Popen([sys.executable, str(script), str(repo), str(go), str(n)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env) for n in (0, 1)]
    deadline = time.monotonic() + 60
    while len(list(tmp_path.glob("go.*.ready"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()
    for reader in readers:
        out, err = reader.communicate(timeout=300)
        assert reader.returncode == 0, err
        assert int(out) <= 3 * SIZE  # what each reader saw after each of its reads
    assert used(ncsa) <= 3 * SIZE
    with ncsa.butler("IN2P3") as b:
        assert CacheEntries(b.registry.db).totals().files == 3
        assert b.verify().ok
