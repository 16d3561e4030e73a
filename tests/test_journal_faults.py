"""The daemon against a journal damaged on disk and a state disk full at start.

Real processes throughout: ``edge run`` as a child, a real mosquitto, real
mammograms built around a CBIS-DDSM image, the journal a real SQLite file whose
pages are overwritten beneath the running daemon, a real tmpfs filled to the
last byte before the daemon starts.
"""

from __future__ import annotations

import signal
import sqlite3
from pathlib import Path
from typing import Any

from daemons import start_daemon
from mammo_files import build
from pydicom.dataset import FileDataset
from pydicom.uid import generate_uid
from schemas import conforms
from support import Broker, Subscriber
from test_journal_recovery import FILES_PAGES, overwrite_root_pages
from tmpfs import fill, small_state_dir

from edge.journal import FILENAME

__all__ = ["small_state_dir", "start_daemon"]  # fixtures

VIEWS = (("L", "CC"), ("L", "MLO"), ("R", "CC"), ("R", "MLO"))


def four_view_study(folder: Path, name: str) -> list[Path]:
    """A real four-view study written to ``folder`` (outside the watch folder)."""
    study_uid = generate_uid()

    def same_study(dataset: FileDataset) -> None:
        dataset.StudyInstanceUID = study_uid

    folder.mkdir(parents=True, exist_ok=True)
    return [
        build(folder / f"{name}-{lat}{view}.dcm", laterality=lat, view=view, edit=same_study)
        for lat, view in VIEWS
    ]


def put(files: list[Path], export: Path) -> list[Path]:
    """Move files into the watch folder under a temporary name, then rename them in."""
    placed = []
    for path in files:
        temporary = export / f".{path.name}.part"
        path.rename(temporary)
        placed.append(temporary.rename(export / path.name))
    return placed


def damage_beneath(journal: Path) -> None:
    """Overwrite the files table's pages under a running daemon, then make it read again.

    The daemon's connection caches pages; a commit by another connection changes
    the WAL index, which makes it drop that cache and read the damaged pages.
    """
    db = sqlite3.connect(journal, timeout=30)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    overwrite_root_pages(journal, *FILES_PAGES)
    db = sqlite3.connect(journal, timeout=30)
    db.execute("UPDATE sequence SET seq = seq")
    db.commit()
    db.close()


def results(subscriber: Subscriber, count: int) -> list[dict[str, Any]]:
    found = []
    while len(found) < count:
        message = subscriber.next("/results", 180)
        assert isinstance(message, dict)
        found.append(message)
    return found


def test_a_journal_damaged_beneath_the_daemon_costs_no_file_and_is_recovered_at_restart(
    broker: Broker, subscriber: Subscriber, tmp_path: Path, start_daemon: Any
) -> None:
    export = tmp_path / "export"
    state = tmp_path / "state"
    events = Subscriber(broker.port, ["edge/+/+/events"])
    # Its own subscriber: a result published before the health the test waits for must
    # not be passed over (and dropped) while ``subscriber`` looks for that health.
    scored = Subscriber(broker.port, ["edge/+/+/results"])
    daemon = start_daemon(broker.port)
    put(four_view_study(tmp_path / "new", "first"), export)
    (first,) = results(scored, 1)
    assert first["seq"] == 1

    damage_beneath(state / FILENAME)
    waiting = put(four_view_study(tmp_path / "new", "second"), export)
    stamps = {path: path.stat().st_mtime_ns for path in waiting}
    health = subscriber.wait_health(lambda h: "journal_failed" in h["alarms"], 60)
    conforms(health)
    assert health["journal"]["error"] and "malformed" in health["journal"]["error"]
    event = events.next("/events", 30)
    assert isinstance(event, dict)
    conforms(event)
    assert (event["kind"], event["reason"]) == ("error", "journal_failed"), event
    # The files wait in the export folder, untouched; none is blamed for the journal.
    assert {path: path.stat().st_mtime_ns for path in waiting} == stamps
    assert not list((state / "quarantine").glob("*"))
    assert health["counters"]["quarantined"] == 0 and daemon.alive()

    # Marked for the next start, whatever quick_check will then say.
    assert (state / "journal.sqlite3.damaged").is_file()
    assert daemon.stop(signal.SIGTERM) == 0
    daemon = start_daemon(broker.port)
    health = subscriber.wait_health(lambda h: "journal_replaced" in h["alarms"], 60)
    conforms(health)
    replaced = health["journal"]["replaced"]
    assert replaced["last_seq"] == 1 and replaced["seq_from"] == "sequence"
    assert Path(replaced["kept_at"], FILENAME).is_file()
    # The waiting study is scored now, numbered after what the old journal held. The
    # first result may come again before it, byte for byte: when the damage came
    # before its PUBACK was journalled, it was never marked delivered (at least once).
    (second,) = results(scored, 1)
    while second == first:
        (second,) = results(scored, 1)
    assert second["seq"] == 2 and second["id"] != first["id"]
    health = subscriber.wait_health(lambda h: h["counters"]["processed"] == 4, 60)
    assert "journal_failed" not in health["alarms"]
    assert health["counters"]["quarantined"] == 0
    assert not list((state / "quarantine").glob("*"))
    reasons = set()
    while "journal_replaced" not in reasons:
        event = events.next("/events", 30)
        assert isinstance(event, dict)
        conforms(event)
        reasons.add(event["reason"])
        assert event["reason"] != "quarantined", event
    events.close()
    scored.close()


def test_a_full_state_disk_at_start_serves_health_then_takes_files_once_space_returns(
    broker: Broker,
    subscriber: Subscriber,
    tmp_path: Path,
    small_state_dir: Path,
    start_daemon: Any,
) -> None:
    export = tmp_path / "export"
    daemon = start_daemon(broker.port)
    put(four_view_study(tmp_path / "new", "before"), export)
    results(subscriber, 1)
    daemon.stop(signal.SIGKILL)  # killed, as by the OOM killer: the WAL stays beside it

    filler = fill(small_state_dir)
    daemon = start_daemon(broker.port)
    health = subscriber.wait_health(lambda h: "state_disk_low" in h["alarms"], 60)
    assert health["disk"]["state"]["free_mb"] == 0
    waiting = put(four_view_study(tmp_path / "new", "during"), export)
    subscriber.wait_health(lambda h: "journal_write_failed" in h["alarms"], 60)
    assert all(path.exists() for path in waiting) and daemon.alive()
    assert not list((small_state_dir / "quarantine").glob("*"))

    filler.unlink()
    (after,) = results(subscriber, 1)
    assert after["seq"] == 2
    subscriber.wait_health(lambda h: h["alarms"] == [], 60)
    assert daemon.alive()
