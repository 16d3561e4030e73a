"""The journal's database: the schema, the connection, and one transaction per call.

Every public method of the journal is one transaction, serialised by one lock: the
volume is a few writes per image, far below what one connection serves. A failing
disk (``SQLITE_FULL``, ``SQLITE_IOERR``) becomes :class:`~edge.errors.JournalError`,
and ``write_error`` says why until a write succeeds again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

from edge.errors import JournalError

log = logging.getLogger(__name__)

FILENAME = "journal.sqlite3"
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sop_uid TEXT,
    study_uid TEXT,
    state TEXT NOT NULL,
    reason TEXT,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS files_by_sop ON files (sop_uid);
CREATE INDEX IF NOT EXISTS files_by_state ON files (state, updated_at);
-- retention's passes walk the files oldest first, a batch at a time
CREATE INDEX IF NOT EXISTS files_by_age ON files (updated_at, path);
CREATE TABLE IF NOT EXISTS images (
    sop_uid TEXT PRIMARY KEY,
    study_uid TEXT NOT NULL,
    accession TEXT NOT NULL,
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    laterality TEXT NOT NULL,
    view TEXT NOT NULL,
    screening INTEGER NOT NULL,
    n_rows INTEGER NOT NULL,
    n_columns INTEGER NOT NULL,
    transfer_syntax TEXT NOT NULL,
    row_direction TEXT,
    score REAL NOT NULL,
    engine_name TEXT NOT NULL,
    engine_version TEXT NOT NULL,
    engine_sha256 TEXT NOT NULL,
    engine_backend TEXT NOT NULL,
    timings TEXT NOT NULL,
    scored_at REAL NOT NULL,
    result_entry INTEGER,
    -- the regions the engine located, [[column, row, radius, score], ...]: the CAD SR's marks
    findings TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS images_open ON images (study_uid) WHERE result_entry IS NULL;
CREATE INDEX IF NOT EXISTS images_by_result ON images (result_entry);
CREATE TABLE IF NOT EXISTS results (
    entry INTEGER PRIMARY KEY,
    device TEXT NOT NULL,
    seq INTEGER NOT NULL,
    id TEXT NOT NULL,
    study_uid TEXT NOT NULL,
    score REAL NOT NULL,
    suspicious INTEGER NOT NULL,
    closed_by TEXT NOT NULL,
    images INTEGER NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    created_at REAL NOT NULL,
    delivered_at REAL,
    UNIQUE (device, seq)
);
CREATE INDEX IF NOT EXISTS results_waiting ON results (entry) WHERE delivered_at IS NULL;
CREATE TABLE IF NOT EXISTS outbox (
    entry INTEGER PRIMARY KEY REFERENCES results (entry),
    seq INTEGER NOT NULL,
    result_id TEXT NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sequence (
    device TEXT PRIMARY KEY,
    seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS shadow_images (
    sop_uid TEXT PRIMARY KEY REFERENCES images (sop_uid),
    engine_name TEXT NOT NULL,
    engine_version TEXT NOT NULL,
    engine_sha256 TEXT NOT NULL,
    engine_backend TEXT NOT NULL,
    score REAL NOT NULL,
    threshold REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    kind TEXT NOT NULL,
    reason TEXT NOT NULL,
    stage TEXT,
    file TEXT,
    study TEXT,
    message TEXT NOT NULL
);
-- the hub's last cumulative confirmation per device name (edge.confirm/1)
CREATE TABLE IF NOT EXISTS confirmations (
    device TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    result_id TEXT NOT NULL,
    confirmed_at REAL NOT NULL
);
"""

J = TypeVar("J", bound="JournalBase")


class JournalBase:
    """The connection of one ``state_dir``'s journal and its transactions; thread-safe."""

    def __init__(
        self, path: Path, *, device: str, outbox_max: int, read_only: bool = False
    ) -> None:
        self.path = path
        self.device = device
        self.outbox_max = outbox_max
        self._lock = threading.RLock()
        #: why the last write failed, until one succeeds again
        self.write_error: str | None = None
        self._db = _connect_read_only(path) if read_only else _connect(path)

    @classmethod
    def open(cls: type[J], state_dir: Path, *, device: str, outbox_max: int = 1000) -> J:
        """Open (creating if needed) the journal of ``state_dir``.

        Raises
        ------
        JournalError
            When the database cannot be opened or created.
        """
        try:
            return cls(state_dir / FILENAME, device=device, outbox_max=outbox_max)
        except sqlite3.Error as exc:
            raise JournalError(f"cannot open the journal {state_dir / FILENAME}: {exc}") from exc

    @classmethod
    def open_read_only(cls: type[J], state_dir: Path, *, device: str) -> J:
        """Open an existing journal only to read it, beside a daemon that writes it.

        Raises
        ------
        JournalError
            When there is no journal yet, or it cannot be read.
        """
        path = state_dir / FILENAME
        if not path.is_file():
            raise JournalError(f"no journal at {path}: the service has not run with this state_dir")
        try:
            return cls(path, device=device, outbox_max=0, read_only=True)
        except sqlite3.Error as exc:
            raise JournalError(f"cannot read the journal {path}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextlib.contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                yield self._db
            except sqlite3.OperationalError as exc:
                raise JournalError(f"journal read failed: {exc}") from exc

    @contextlib.contextmanager
    def _transaction(self, *, durable: bool = False) -> Iterator[sqlite3.Connection]:
        """One write transaction; a failing disk becomes :class:`JournalError`.

        ``durable``: on disk when the commit returns, and with it every commit
        before it (see :func:`_connect`).
        """
        with self._lock:
            try:
                if durable:
                    self._db.execute("PRAGMA synchronous = FULL")
                self._db.execute("BEGIN IMMEDIATE")
                yield self._db
                self._db.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                # SQLITE_FULL, SQLITE_IOERR, ...: the disk, not the code.
                self._rollback()
                self._write_failed(exc)
                raise JournalError(f"journal write failed: {exc}") from exc
            except BaseException:
                self._rollback()
                raise
            finally:
                if durable:
                    self._db.execute("PRAGMA synchronous = NORMAL")
            if self.write_error is not None:
                log.info("journal %s is writable again", self.path)
                self.write_error = None

    def _rollback(self) -> None:
        if not self._db.in_transaction:
            return
        try:
            self._db.execute("ROLLBACK")
        except sqlite3.Error as exc:
            log.error("journal rollback failed: %s", exc)

    def _write_failed(self, exc: sqlite3.Error) -> None:
        if self.write_error is None:
            log.error(
                "journal %s cannot be written (%s): new work waits until it can", self.path, exc
            )
        self.write_error = str(exc)


def _connect(path: Path) -> sqlite3.Connection:
    # isolation_level=None: transactions are the explicit BEGIN IMMEDIATE above.
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA journal_mode = WAL")
    # In WAL mode NORMAL keeps every commit safe from a killed process but may
    # lose the last commits at a power loss; FULL syncs the WAL at each commit,
    # and with it every frame written before. Most commits only track work
    # (a file taken, a SOP claimed, an image scored): losing them costs that work
    # done again, since the file is still in the watch folder. The commit that
    # gives a result its seq and payload must not be lost once the result may be
    # published (the box would give that seq to another result, or recompute a
    # delivered result differently): it is made with FULL (``durable``), which
    # also makes the scores it was built from durable. One fsync per result
    # instead of five per image: milliseconds per image on an eMMC.
    db.execute("PRAGMA synchronous = NORMAL")
    db.execute("PRAGMA foreign_keys = ON")
    (version,) = db.execute("PRAGMA user_version").fetchone()
    if version not in (0, SCHEMA_VERSION):
        db.close()
        raise sqlite3.DatabaseError(f"journal schema {version} is newer than {SCHEMA_VERSION}")
    db.executescript(_SCHEMA)
    _add_columns(db)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    return db


#: columns added since a table was first created: (table, column, definition)
_ADDED_COLUMNS = (("images", "findings", "TEXT NOT NULL DEFAULT '[]'"),)


def _add_columns(db: sqlite3.Connection) -> None:
    """Give a journal made before a column existed that column (at the table's end).

    The schema version stays: an older daemon's journal reads the same, and
    ``edge status`` reads one not yet opened by this version (the column absent)."""
    for table, column, definition in _ADDED_COLUMNS:
        present = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        if column not in present:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")


def _connect_read_only(path: Path) -> sqlite3.Connection:
    # mode=ro: a reader (edge status) never writes, so it never creates the schema,
    # never changes user_version and never holds a write lock the daemon waits on.
    uri = f"{path.resolve().as_uri()}?mode=ro"
    db = sqlite3.connect(uri, uri=True, check_same_thread=False, timeout=30)
    db.row_factory = sqlite3.Row
    (version,) = db.execute("PRAGMA user_version").fetchone()
    if version != SCHEMA_VERSION:
        db.close()
        raise sqlite3.DatabaseError(f"journal schema {version}, expected {SCHEMA_VERSION}")
    return db


def path_key(path: Path) -> str:
    # File names are bytes on Linux; one that is not UTF-8 still gets a stable key.
    return os.fsencode(path).decode("utf-8", "backslashreplace")
