"""The in-memory transport, the one test double: its injected faults (transient failures,
cut transfers, corrupted bytes, missing files) and how retries and resumes meet them."""

from __future__ import annotations

import time

import pytest
from test_transport_contract import blob

from federation.datastore.checksum import CHUNK, bytes_checksum, file_checksum
from federation.transport.base import MissingFileError, RemoteFile, TransportError
from federation.transport.memory import MemoryTransport
from federation.transport.retry import RetryPolicy


def memory(files: dict[str, bytes], **retry) -> MemoryTransport:
    policy = {"attempts": 4, "initial": 0.01, "maximum": 0.02, "deadline": 2.0} | retry
    return MemoryTransport(files, retry=RetryPolicy(**policy))


def test_transient_failures_are_retried_and_the_operation_succeeds(tmp_path):
    t = memory({"a": b"data", "b": b"other"})
    t.fail_next(2, path="a")
    assert t.fetch("a", tmp_path / "a") == (4, bytes_checksum(b"data")) and t.contacts == 3
    t.fail_next(1)  # on any path
    assert t.stat("b") == RemoteFile("b", 5) and t.contacts == 5


def test_a_site_that_keeps_failing_is_given_up_on_within_the_bounds(tmp_path):
    t = memory({"a": b"x"}, attempts=3)
    t.fail_next(100, path="a")
    with pytest.raises(TransportError, match="gave up after 3 attempts"):
        t.fetch("a", tmp_path / "a")
    assert t.contacts == 3
    slow = memory({"a": b"x"}, attempts=1000, initial=0.05, maximum=0.05, deadline=0.3)
    slow.fail_next(10_000)
    start = time.monotonic()
    with pytest.raises(TransportError, match="gave up after"):
        slow.stat("a")
    assert time.monotonic() - start < 1 and slow.contacts < 10


def test_a_cut_transfer_is_resumed_by_the_next_fetch(tmp_path):
    data = blob(3 * CHUNK)
    t = memory({"big": data}, attempts=1)
    t.cut_after("big", CHUNK + 10)
    local = tmp_path / "big.part"
    with pytest.raises(TransportError, match="gave up after 1 attempt"):
        t.fetch("big", local)
    assert local.read_bytes() == data[:CHUNK + 10]  # kept for the next run
    arrived: list[int] = []
    assert t.fetch("big", local, resume=True, on_bytes=arrived.append) == \
        (len(data), bytes_checksum(data))
    assert sum(arrived) == len(data) - CHUNK - 10
    assert (t.counters.resumed_files, t.counters.resumed_bytes) == (1, CHUNK + 10)


def test_a_cut_transfer_is_resumed_by_the_retry_and_a_cut_upload_stores_nothing(tmp_path):
    data = blob(5000)
    t = memory({"f": data})
    t.cut_after("f", 1000)
    assert t.fetch("f", tmp_path / "f") == (len(data), bytes_checksum(data))
    assert t.counters.resumed_bytes == 1000 and t.contacts == 2
    once = memory({"f": data}, attempts=1)
    once.cut_after("g", 10)
    with pytest.raises(TransportError):
        once.put(tmp_path / "f", "g")
    assert set(once.files) == {"f"}


def test_corrupted_bytes_are_caught_by_the_callers_checksum(tmp_path):
    data = blob(4096)
    t = memory({"f": data})
    t.corrupt("f")
    size, digest = t.fetch("f", tmp_path / "f")
    assert size == len(data) == t.stat("f").size and digest != bytes_checksum(data)
    assert file_checksum(tmp_path / "f") == (size, digest)  # what arrived is what was hashed
    t.clear_faults()
    assert t.fetch("f", tmp_path / "f")[1] == bytes_checksum(data)


def test_a_file_reported_missing_is_missing_everywhere_until_written_again(tmp_path):
    t = memory({"d/f": b"x", "d/g": b"y"})
    t.report_missing("d/f")
    assert t.stat("d/f") is None and list(t.list()) == [RemoteFile("d/g", 1)]
    with pytest.raises(MissingFileError):
        t.fetch("d/f", tmp_path / "f")
    with pytest.raises(MissingFileError):
        t.rename("d/f", "e")
    (tmp_path / "new").write_bytes(b"new")
    t.put(tmp_path / "new", "d/f")
    assert t.read_bytes("d/f") == b"new"


def test_faults_are_checked_when_they_are_set():
    t = memory({})
    for bad in (lambda: t.fail_next(0), lambda: t.cut_after("f", -1)):
        with pytest.raises(ValueError):
            bad()
    with pytest.raises(TransportError, match="escapes"):
        t.corrupt("../f")
