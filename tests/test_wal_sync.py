"""The journal's log synced in the quiet between a study's views, never in a burst."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from journal_builders import incoming

from edge.journal import Journal
from edge.journal.wal_sync import WalSync


def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


@pytest.fixture
def wal(tmp_path: Path) -> Iterator[Path]:
    """A real write-ahead log, left behind by an open SQLite connection."""
    db = sqlite3.connect(tmp_path / "j.sqlite3", isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("CREATE TABLE t (x)")
    db.execute("INSERT INTO t VALUES (1)")
    yield tmp_path / "j.sqlite3-wal"
    db.close()


def test_a_commit_not_synced_is_synced_once_the_journal_is_quiet(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path, device="box-1")
    sync = journal.wal_sync
    assert sync is not None
    assert sync.syncs == 0  # opening wrote nothing that waits
    journal.file_seen(incoming(tmp_path / "a.dcm"))
    assert eventually(lambda: sync.syncs == 1)
    time.sleep(0.2)
    assert sync.syncs == 1  # nothing written since: nothing more to sync
    assert sync.failures == 0
    journal.close()
    assert not sync.is_alive()


def test_no_sync_while_commits_keep_coming(wal: Path) -> None:
    sync = WalSync(wal, quiet_s=0.2)
    try:
        started = time.monotonic()
        while time.monotonic() - started < 0.6:
            sync.committed(synced=False)
            time.sleep(0.02)
        assert sync.syncs == 0
        assert eventually(lambda: sync.syncs == 1)
    finally:
        sync.stop()


def test_a_synced_commit_leaves_nothing_to_sync(wal: Path) -> None:
    sync = WalSync(wal, quiet_s=0.1)
    try:
        sync.committed(synced=False)
        sync.committed(synced=True)
        time.sleep(0.4)
        assert sync.syncs == 0
    finally:
        sync.stop()


def test_a_log_that_cannot_be_opened_is_counted_and_said_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    loop = tmp_path / "j.sqlite3-wal"
    loop.symlink_to(loop)  # ELOOP: neither there nor absent
    sync = WalSync(loop, quiet_s=0.01)
    try:
        with caplog.at_level(logging.WARNING, logger="edge.journal.wal_sync"):
            sync.committed(synced=False)
            assert eventually(lambda: sync.failures == 1)
            sync.committed(synced=False)
            assert eventually(lambda: sync.failures == 2)
        assert sync.syncs == 0
        warnings = [r for r in caplog.records if "cannot sync the journal's log" in r.message]
        assert len(warnings) == 1
    finally:
        sync.stop()


def test_a_log_checkpointed_away_is_nothing_to_sync(tmp_path: Path) -> None:
    sync = WalSync(tmp_path / "gone.sqlite3-wal", quiet_s=0.01)
    try:
        sync.committed(synced=False)
        time.sleep(0.2)
        assert (sync.syncs, sync.failures) == (0, 0)
    finally:
        sync.stop()
