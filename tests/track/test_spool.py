"""The spool's sender against a store that fails: away (retried until it is back) or full (the
cell's end does not wait for it; the writes stay spooled for `harness sync`)."""

import sqlite3
import time

from harness.track.spool import Spool, pending


class Store:
    def __init__(self, error=None):
        self.run_id, self.error, self.got = "r1", error, []

    def send(self, records):
        if self.error is not None:
            raise self.error
        self.got.extend(records)


def test_a_full_store_ends_the_wait_at_once_and_keeps_the_records(tmp_path):
    said = []
    spool = Spool(tmp_path, Store(sqlite3.OperationalError("database or disk is full")), say=said.append)
    spool.append("metrics", data=[["train.loss", 1.0, 0, 1]])
    spool.append("end", status="FAILED", reason="x")
    t0 = time.monotonic()
    assert spool.close(timeout=600) is False
    assert time.monotonic() - t0 < 10  # not the 600 s an unreachable store is given
    assert pending(tmp_path) == 2 and "store was full" in (tmp_path / "unsynced").read_text()
    assert any("tracking store full" in line for line in said)


def test_an_unreachable_store_is_waited_for_and_then_gets_everything(tmp_path):
    store = Store(ConnectionError("connection refused"))
    spool = Spool(tmp_path, store, say=lambda text: None)
    spool.append("metrics", data=[["train.loss", 1.0, 0, 1]])
    assert spool.wait_sent(timeout=1.0) is False  # still away: the wait goes on until the deadline
    store.error = None
    assert spool.close(timeout=30) is True
    assert [r["op"] for r in store.got] == ["metrics"] and pending(tmp_path) == 0
