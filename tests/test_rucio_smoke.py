"""Smoke test of the real Rucio server of tests/rucio_server.py, through rucio-clients.

It proves the server is a working Rucio: userpass authentication (and its refusal of wrong
credentials), scopes, POSIX RSEs whose ``file`` protocol prefix is a local directory,
replicas registered with size and checksums at the path Rucio maps them to, datasets, and
replication rules (which stay REPLICATING: no FTS or conveyor runs).
"""

from __future__ import annotations

import hashlib
import uuid
import zlib
from pathlib import Path

import pytest
from rucio_server import RucioServer, rucio_server  # noqa: F401  (fixture)

# rucio-clients is imported inside the tests, after the fixture has checked it is installed
# (a missing client must fail, not skip, where the Rucio tests are required).


def _adler32(data: bytes) -> str:
    return f"{zlib.adler32(data) & 0xFFFFFFFF:08x}"


def _posix_rse(client, name: str, prefix: Path) -> None:
    """A deterministic disk RSE whose files live under ``prefix`` (scheme ``file``)."""
    prefix.mkdir(parents=True, exist_ok=True)
    client.add_rse(name, deterministic=True, rse_type="DISK")
    client.add_protocol(name, {
        "scheme": "file",
        "hostname": "localhost",
        "port": 0,
        "prefix": f"{prefix}/",
        "impl": "rucio.rse.protocols.posix.Default",
        "domains": {
            "lan": {"read": 1, "write": 1, "delete": 1},
            "wan": {"read": 1, "write": 1, "delete": 1,
                    "third_party_copy_read": 1, "third_party_copy_write": 1},
        },
    })
    # Unlimited quota for root, so rules may place data there.
    client.set_local_account_limit("root", name, -1)


def test_wrong_credentials_are_refused(rucio_server: RucioServer) -> None:  # noqa: F811
    from rucio.common.exception import CannotAuthenticate

    with pytest.raises(CannotAuthenticate):
        rucio_server.client(password="not-the-password")
    with pytest.raises(CannotAuthenticate):
        rucio_server.client(username="nobody")
    assert rucio_server.client().whoami()["account"] == "root"


def test_scope_rse_replica_dataset_rule(rucio_server: RucioServer,  # noqa: F811
                                        tmp_path: Path) -> None:
    client = rucio_server.client()
    assert client.ping()["version"]
    tag = uuid.uuid4().hex[:8].upper()
    scope = f"fed_{tag.lower()}"
    source, target = f"NCSA_{tag}", f"IN2P3_{tag}"

    client.add_scope("root", scope)
    assert scope in client.list_scopes()

    _posix_rse(client, source, tmp_path / "ncsa")
    _posix_rse(client, target, tmp_path / "in2p3")
    assert {source, target} <= {rse["rse"] for rse in client.list_rses()}
    protocols = client.get_protocols(source)
    assert [(p["scheme"], p["prefix"]) for p in protocols] == [
        ("file", f"{tmp_path / 'ncsa'}/")]

    # The file goes where Rucio's lfn2pfn (the "hash" algorithm) maps it on the source RSE.
    name = "raw_HSC_903334_10.fits"
    data = b"SIMPLE  =                    T" + bytes(range(256)) * 40
    pfn = client.lfns2pfns(source, [f"{scope}:{name}"], operation="read",
                           scheme="file")[f"{scope}:{name}"]
    assert pfn.startswith("file://")
    path = Path(pfn.removeprefix("file://localhost").removeprefix("file://"))
    assert path.is_relative_to(tmp_path / "ncsa"), pfn
    path.parent.mkdir(parents=True)
    path.write_bytes(data)

    client.add_replica(source, scope, name, len(data), _adler32(data),
                       md5=hashlib.md5(data).hexdigest())
    [replica] = list(client.list_replicas([{"scope": scope, "name": name}],
                                          schemes=["file"]))
    assert replica["bytes"] == len(data)
    assert replica["adler32"] == _adler32(data)
    assert replica["md5"] == hashlib.md5(data).hexdigest()
    assert replica["states"] == {source: "AVAILABLE"}
    [replica_pfn] = replica["rses"][source]
    assert Path(replica_pfn.removeprefix("file://localhost").removeprefix("file://")) == path
    assert path.read_bytes() == data

    dataset = f"HSC_raw_{tag}"
    client.add_dataset(scope, dataset)
    client.attach_dids(scope, dataset, [{"scope": scope, "name": name}])
    assert [(f["scope"], f["name"], f["bytes"]) for f in client.list_files(scope, dataset)] \
        == [(scope, name, len(data))]

    [rule_id] = client.add_replication_rule([{"scope": scope, "name": dataset}], copies=1,
                                            rse_expression=target, account="root")
    rule = client.get_replication_rule(rule_id)
    assert rule["rse_expression"] == target
    assert (rule["scope"], rule["name"]) == (scope, dataset)
    # Nothing transfers (no FTS, no conveyor daemons): the lock waits for the copy.
    assert rule["state"] == "REPLICATING"
    assert (rule["locks_ok_cnt"], rule["locks_replicating_cnt"], rule["locks_stuck_cnt"]) \
        == (0, 1, 0)
    [lock] = list(client.get_dataset_locks(scope, dataset))
    assert (lock["rse"], lock["state"]) == (target, "REPLICATING")
    # The transfer Rucio queued for a conveyor (or, later, our transfer agent) to carry out.
    request = client.list_request_by_did(name, target, scope)
    assert request["state"] == "QUEUED"
    assert request["dest_rse"] == target
