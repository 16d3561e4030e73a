"""``edge status``: what the box is doing, for the technician standing at it.

Read from the journal (opened read-only, so it works while the daemon writes
it) and, where systemd runs, from the unit's state and its ``STATUS=`` line:
the engine, the queue, the outbox backlog, the last studies with their score
and whether the hub has them, and the last errors. Studies are named by the
short hash the log lines use, never by a patient identifier.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from edge.bundle.manifest import read_manifest
from edge.common.privacy import study_hash
from edge.config import Config
from edge.delivery.dicom_delivery import status_lines
from edge.dicom.counters import status_line as receiver_line
from edge.dicom.spool import Spool
from edge.engines.store import EngineStore
from edge.errors import EngineError
from edge.journal import FILENAME, Backlog, EventRecord, Journal, ResultSummary

UNIT = "edge.service"
#: the unit properties shown, in ``systemctl show`` spelling
UNIT_PROPERTIES = ("ActiveState", "SubState", "NRestarts", "StatusText")

TIME_FORMAT = "%Y-%m-%d %H:%M:%S"

Out = Callable[[str], None]


def show_status(config: Config, out: Out, *, limit: int = 10) -> None:
    """Print the status of the service that ``config`` configures.

    Raises
    ------
    JournalError
        When the journal does not exist yet or cannot be read.
    """
    read_as_journal_owner(config.state_dir / FILENAME)
    journal = Journal.open_read_only(config.state_dir, device=config.device)
    try:
        out(f"edge status of {config.site}/{config.device} (journal {journal.path})")
        out(f"service   {service_line()}")
        out(f"engine    {engine_line(config)}")
        out(f"queue     {queue_line(journal.file_counts(), len(open_studies(journal)))}")
        out(f"outbox    {outbox_line(journal.backlog())}")
        if config.receiver is not None:
            out(f"receiver  {receiver_status(config)}")
        for line in status_lines(config):
            out(line)
        show_studies(journal.recent_results(limit), out)
        show_events(journal.recent_events(limit), out)
    finally:
        journal.close()


def receiver_status(config: Config) -> str:
    """The DICOM receiver's counters and what waits in its spool."""
    assert config.receiver is not None
    spooled = (
        len(Spool(config.spool_dir, min_free_mb=0).files()) if config.spool_dir.is_dir() else 0
    )
    return receiver_line(config.state_dir, spooled, config.receiver.ae_title, config.receiver.port)


def read_as_journal_owner(path: Path) -> None:
    """Run as the journal's owner when root reads another user's journal.

    SQLite may create the journal's ``-wal`` and ``-shm`` files when it reads a
    database whose daemon is stopped; made by root, they would lock the service
    user out of its own journal at its next start.
    """
    if os.geteuid() != 0 or not path.exists():
        return
    owner = path.stat()
    if owner.st_uid == 0:
        return
    os.setgroups([])
    os.setgid(owner.st_gid)
    os.setuid(owner.st_uid)


def service_line() -> str:
    """The unit's state and its STATUS= text, or why they are not known."""
    if shutil.which("systemctl") is None or not Path("/run/systemd/system").is_dir():
        return "unknown (systemd is not running here)"
    answer = subprocess.run(
        ["systemctl", "show", UNIT, *(f"--property={name}" for name in UNIT_PROPERTIES)],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    if answer.returncode != 0:
        return f"unknown (systemctl: {answer.stderr.strip()})"
    unit = dict(line.split("=", 1) for line in answer.stdout.splitlines() if "=" in line)
    line = f"{unit.get('ActiveState', '?')} ({unit.get('SubState', '?')})"
    if unit.get("NRestarts", "0") not in ("", "0"):
        line += f", restarted {unit['NRestarts']} times"
    if unit.get("StatusText"):
        line += f": {unit['StatusText']}"
    return line


def engine_line(config: Config) -> str:
    """The engine the daemon serves at its next start (the running one is in STATUS=)."""
    store = EngineStore(config.engine_store_dir)
    current = store.current()
    if current is not None:
        return f"{current.name} {current.version} (engine store, {store.root})"
    folder = config.engine.bundle
    if folder is None:
        return f"none: no current engine in {store.root} and no engine.bundle"
    try:
        manifest = read_manifest(folder)
    except EngineError as exc:
        return f"cannot read engine.bundle: {exc}"
    return f"{manifest.name} {manifest.version} (engine.bundle {folder})"


def open_studies(journal: Journal) -> set[str]:
    """Studies with scored images whose result is not made yet (waiting for views)."""
    return {score.header.study_uid for score in journal.open_study_scores()}


def queue_line(file_counts: dict[str, int], open_count: int) -> str:
    taken = file_counts.get("seen", 0) + file_counts.get("decoded", 0)
    quarantined = file_counts.get("quarantined", 0)
    return (
        f"{taken} files taken and not yet scored; {open_count} studies waiting for more "
        f"views; {quarantined} files quarantined in all"
    )


def outbox_line(backlog: Backlog) -> str:
    waiting = backlog.outbox + backlog.waiting
    if waiting == 0:
        return f"empty: the hub has every result (last seq {backlog.last_seq})"
    oldest = _local_time(backlog.oldest_created_at) if backlog.oldest_created_at else "?"
    return (
        f"{waiting} results not yet acknowledged by the hub, oldest from {oldest} "
        f"(last seq {backlog.last_seq})"
    )


def show_studies(results: list[ResultSummary], out: Out) -> None:
    out(f"studies   last {len(results)}, newest first:" if results else "studies   none yet")
    for result in results:
        delivered = (
            f"delivered {_local_time(result.delivered_at)}"
            if result.delivered_at is not None
            else "NOT DELIVERED yet"
        )
        out(
            f"  {_local_time(result.created_at)}  study {study_hash(result.study_uid)}  "
            f"score {result.score:.3f}{' SUSPICIOUS' if result.suspicious else ''}  "
            f"{result.images} images, {result.closed_by}  seq {result.seq}  {delivered}"
        )


def show_events(events: list[EventRecord], out: Out) -> None:
    out(f"errors    last {len(events)}, newest first:" if events else "errors    none")
    for event in events:
        where = f" in {event.stage}" if event.stage else ""
        subject = (
            f" study {event.study}" if event.study else f" file {event.file}" if event.file else ""
        )
        what = f"{event.kind} {event.reason}{where}{subject}"
        out(f"  {_event_time(event.at)}  {what}: {event.message}")


def _local_time(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s).strftime(TIME_FORMAT)


def _event_time(at: str) -> str:
    """An event's ISO 8601 UTC time in the box's local time, like the other lines."""
    try:
        return datetime.fromisoformat(at).astimezone().strftime(TIME_FORMAT)
    except ValueError:
        return at
