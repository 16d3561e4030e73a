"""The DICOM outbox's durable state: every SR to send, per destination, until sent.

Its own SQLite database, ``state_dir/dicom.sqlite3``, beside the journal:

``documents``
    one row per SR built: its SOP Instance UID, study, series, version number,
    the result it reports, and the exact Part 10 bytes, so that a resend after
    a restart or a PACS outage is the very same object.
``deliveries``
    one row per (SR, destination) until the destination's C-STORE response
    completes it: attempts, the last error, when it is tried next.
``holds``
    destinations that refused in a way that will not change (an alarm).

A row is committed with ``synchronous = FULL`` before the result that names
the SR can reach the hub, so a killed box has it after its restart.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from edge.errors import JournalError

FILENAME = "dicom.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    sop_uid TEXT PRIMARY KEY,
    study_uid TEXT NOT NULL,
    series_uid TEXT NOT NULL,
    version INTEGER NOT NULL,
    result_id TEXT NOT NULL,
    payload BLOB NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS documents_by_study ON documents (study_uid, version);
CREATE TABLE IF NOT EXISTS deliveries (
    sop_uid TEXT NOT NULL REFERENCES documents (sop_uid) ON DELETE CASCADE,
    destination TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    next_at REAL NOT NULL,
    delivered_at REAL,
    PRIMARY KEY (sop_uid, destination)
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (destination, next_at)
    WHERE delivered_at IS NULL;
CREATE TABLE IF NOT EXISTS holds (
    destination TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    since REAL NOT NULL
);
"""


@dataclass(frozen=True)
class SrDocument:
    sop_uid: str
    study_uid: str
    series_uid: str
    version: int
    result_id: str
    payload: bytes


@dataclass(frozen=True)
class Pending:
    """One SR due at one destination."""

    sop_uid: str
    attempts: int
    payload: bytes
    created_at: float


@dataclass(frozen=True)
class DestinationState:
    """What health and ``edge status`` show of one destination."""

    name: str
    waiting: int
    delivered: int
    last_error: str | None
    held: str | None
    oldest_created_at: float | None


class DicomStore:
    """Thread-safe; each public method is one transaction."""

    def __init__(self, path: Path, *, read_only: bool = False) -> None:
        self.path = path
        self._lock = threading.Lock()
        try:
            self._db = _connect_read_only(path) if read_only else _connect(path)
        except sqlite3.Error as exc:
            raise JournalError(f"cannot open the DICOM outbox {path}: {exc}") from exc

    @classmethod
    def open(cls, state_dir: Path, *, read_only: bool = False) -> DicomStore:
        return cls(state_dir / FILENAME, read_only=read_only)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def latest(self, study_uid: str) -> tuple[int, str, str] | None:
        """(version, series UID, SOP Instance UID) of the study's newest SR, if any."""
        with self._using() as db:
            row = db.execute(
                "SELECT version, series_uid, sop_uid FROM documents WHERE study_uid = ?"
                " ORDER BY version DESC LIMIT 1",
                (study_uid,),
            ).fetchone()
        return None if row is None else (int(row[0]), str(row[1]), str(row[2]))

    def queue(self, document: SrDocument, destinations: list[str]) -> bool:
        """Keep ``document`` for each destination; False when it is already kept."""
        now = time.time()
        with self._using(durable=True) as db:
            added = db.execute(
                "INSERT OR IGNORE INTO documents VALUES (?, ?, ?, ?, ?, ?, ?)",
                (document.sop_uid, document.study_uid, document.series_uid, document.version,
                 document.result_id, document.payload, now),
            ).rowcount  # fmt: skip
            db.executemany(
                "INSERT OR IGNORE INTO deliveries (sop_uid, destination, next_at) VALUES (?, ?, ?)",
                [(document.sop_uid, name, now) for name in destinations],
            )
        return bool(added)

    def due(self, destination: str, now: float) -> Pending | None:
        """The oldest SR waiting for ``destination`` whose retry time has come."""
        with self._using() as db:
            row = db.execute(
                "SELECT d.sop_uid, d.attempts, doc.payload, doc.created_at FROM deliveries d"
                " JOIN documents doc USING (sop_uid) WHERE d.destination = ?"
                " AND d.delivered_at IS NULL AND d.next_at <= ?"
                " ORDER BY doc.created_at, d.sop_uid LIMIT 1",
                (destination, now),
            ).fetchone()
        return None if row is None else Pending(str(row[0]), int(row[1]), bytes(row[2]), row[3])

    def next_retry(self, destination: str) -> float | None:
        with self._using() as db:
            (at,) = db.execute(
                "SELECT min(next_at) FROM deliveries WHERE destination = ?"
                " AND delivered_at IS NULL",
                (destination,),
            ).fetchone()
        return None if at is None else float(at)

    def delivered(self, sop_uid: str, destination: str) -> None:
        with self._using() as db:
            db.execute(
                "UPDATE deliveries SET delivered_at = ?, last_error = NULL"
                " WHERE sop_uid = ? AND destination = ?",
                (time.time(), sop_uid, destination),
            )

    def failed(self, sop_uid: str, destination: str, error: str, retry_at: float) -> None:
        with self._using() as db:
            db.execute(
                "UPDATE deliveries SET attempts = attempts + 1, last_error = ?, next_at = ?"
                " WHERE sop_uid = ? AND destination = ?",
                (error, retry_at, sop_uid, destination),
            )

    def hold(self, destination: str, reason: str) -> None:
        with self._using() as db:
            db.execute(
                "INSERT INTO holds VALUES (?, ?, ?) ON CONFLICT (destination)"
                " DO UPDATE SET reason = excluded.reason, since = excluded.since",
                (destination, reason, time.time()),
            )

    def release(self, destination: str) -> str | None:
        """Lift a hold (at start-up: the operator restarted after fixing the PACS)."""
        with self._using() as db:
            row = db.execute("SELECT reason FROM holds WHERE destination = ?", (destination,))
            held = row.fetchone()
            db.execute("DELETE FROM holds WHERE destination = ?", (destination,))
            db.execute(
                "UPDATE deliveries SET next_at = ? WHERE destination = ? AND delivered_at IS NULL",
                (time.time(), destination),
            )
        return None if held is None else str(held[0])

    def states(self, destinations: list[str]) -> list[DestinationState]:
        return [self._state(name) for name in destinations]

    def forget(self, before: float) -> int:
        """Forget SRs delivered everywhere before ``before`` (``journal.keep_days``)."""
        with self._using() as db:
            return db.execute(
                "DELETE FROM documents WHERE created_at < ? AND sop_uid NOT IN"
                " (SELECT sop_uid FROM deliveries WHERE delivered_at IS NULL OR delivered_at >= ?)",
                (before, before),
            ).rowcount

    def _state(self, name: str) -> DestinationState:
        with self._using() as db:
            waiting, oldest = db.execute(
                "SELECT count(*), min(doc.created_at) FROM deliveries d JOIN documents doc"
                " USING (sop_uid) WHERE d.destination = ? AND d.delivered_at IS NULL",
                (name,),
            ).fetchone()
            (delivered,) = db.execute(
                "SELECT count(*) FROM deliveries WHERE destination = ?"
                " AND delivered_at IS NOT NULL",
                (name,),
            ).fetchone()
            error = db.execute(
                "SELECT last_error FROM deliveries WHERE destination = ? AND delivered_at IS NULL"
                " AND last_error IS NOT NULL ORDER BY next_at DESC LIMIT 1",
                (name,),
            ).fetchone()
            held = db.execute("SELECT reason FROM holds WHERE destination = ?", (name,)).fetchone()
        return DestinationState(
            name=name,
            waiting=int(waiting),
            delivered=int(delivered),
            last_error=None if error is None else str(error[0]),
            held=None if held is None else str(held[0]),
            oldest_created_at=oldest,
        )

    @contextlib.contextmanager
    def _using(self, *, durable: bool = False) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                if durable:
                    self._db.execute("PRAGMA synchronous = FULL")
                with self._db:
                    yield self._db
            except sqlite3.Error as exc:
                raise JournalError(f"DICOM outbox {self.path}: {exc}") from exc
            finally:
                if durable:
                    self._db.execute("PRAGMA synchronous = NORMAL")


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, check_same_thread=False, timeout=30)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")
    db.execute("PRAGMA foreign_keys = ON")
    db.executescript(_SCHEMA)
    return db


def _connect_read_only(path: Path) -> sqlite3.Connection:
    if not path.is_file():
        raise sqlite3.OperationalError("no DICOM outbox yet")
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False)
