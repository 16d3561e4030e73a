"""The journal's database: the connection, and one transaction per call.

Every public method of the journal is one transaction, serialised by one lock: the
volume is a few writes per image, far below what one connection serves. A failing
disk (``SQLITE_FULL``, ``SQLITE_IOERR``), a damaged page, a constraint: every
``sqlite3`` error becomes :class:`~edge.errors.JournalError` (``JournalDamaged``
for a damaged file), never a file's fault; ``write_error``, ``read_error`` and
``damaged`` say why. Opening writes nothing that is already there, and
:meth:`JournalBase.open` runs ``quick_check`` (see :mod:`edge.journal.recovery`).
The tables are in :mod:`edge.journal.schema`; between a study's views the log is
synced by :mod:`edge.journal.wal_sync`.
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

from edge.errors import JournalDamaged, JournalError
from edge.journal.schema import SCHEMA, SCHEMA_VERSION, add_columns, missing_schema
from edge.journal.wal_sync import WalSync

log = logging.getLogger(__name__)

FILENAME = "journal.sqlite3"
#: beside the journal: SQLite found it damaged while it served (what it said, one line)
DAMAGED_MARK = "journal.sqlite3.damaged"
#: SQLite result codes that mean the file itself is damaged, not the disk full or busy
_DAMAGE_CODES = frozenset({11, 26})  # SQLITE_CORRUPT, SQLITE_NOTADB


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
        #: why the last read failed, until one succeeds again
        self.read_error: str | None = None
        #: what showed the database file damaged; only a recovery at start clears it
        self.damaged: str | None = None
        self._db = _connect_read_only(path) if read_only else _connect(path)
        #: syncs the log between a study's views (None: a reader, which never writes)
        self.wal_sync = None if read_only else WalSync(path.with_name(f"{path.name}-wal"))

    @classmethod
    def open(cls: type[J], state_dir: Path, *, device: str, outbox_max: int = 1000) -> J:
        """Open (creating if needed) the journal of ``state_dir``.

        Raises
        ------
        JournalError
            When the database cannot be opened or created.
        """
        path = state_dir / FILENAME
        try:
            journal = cls(path, device=device, outbox_max=outbox_max)
        except sqlite3.Error as exc:
            raise _journal_error(f"cannot open the journal {path}", exc) from exc
        problem = journal.quick_check()
        if problem is not None:
            journal.close()
            raise JournalDamaged(f"the journal {path} is damaged: {problem}")
        return journal

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
            raise _journal_error(f"cannot read the journal {path}", exc) from exc

    def close(self) -> None:
        if self.wal_sync is not None:
            self.wal_sync.stop()
        with self._lock:
            self._db.close()

    def quick_check(self) -> str | None:
        """What SQLite's ``quick_check`` finds wrong with the file, or None when sound.

        Reads every page once (no index-to-table cross-check): a journal kept small
        by retention is checked in well under a second, so it runs at each start.
        """
        try:
            with self._lock:
                rows = self._db.execute("PRAGMA quick_check(20)").fetchall()
        except sqlite3.Error as exc:
            return str(exc)
        problems = [str(row[0]) for row in rows if str(row[0]) != "ok"]
        return "; ".join(problems) or None

    @property
    def failure(self) -> str | None:
        """Why the journal cannot be used now (damaged, or a read failing); None when it can."""
        return self.damaged or self.read_error

    @contextlib.contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                yield self._db
            except sqlite3.Error as exc:
                # Every class: a DatabaseError (a damaged page) is the journal's too, never
                # the fault of the file whose work asked for the read.
                self._read_failed(exc)
                raise _journal_error("journal read failed", exc) from exc
            if self.read_error is not None:
                log.info("journal %s can be read again", self.path)
                self.read_error = None

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
                if self.wal_sync is not None:
                    self.wal_sync.committed(synced=durable)
            except sqlite3.Error as exc:
                # SQLITE_FULL, SQLITE_IOERR, SQLITE_CORRUPT, a constraint: the journal's
                # failure, whatever its class, never the file's.
                self._rollback()
                self._write_failed(exc)
                raise _journal_error("journal write failed", exc) from exc
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

    def _read_failed(self, exc: sqlite3.Error) -> None:
        if _is_damage(exc):
            self._note_damage(exc)
            return
        if self.read_error is None:
            log.error("journal %s cannot be read (%s)", self.path, exc)
        self.read_error = str(exc)

    def _write_failed(self, exc: sqlite3.Error) -> None:
        if _is_damage(exc):
            self._note_damage(exc)
            return
        if self.write_error is None:
            log.error(
                "journal %s cannot be written (%s): new work waits until it can", self.path, exc
            )
        self.write_error = str(exc)

    def _note_damage(self, exc: sqlite3.Error) -> None:
        # Sticky: a damaged page stays damaged whatever other reads succeed, until the
        # start-up check moves the file aside.
        if self.damaged is None:
            log.error(
                "journal %s is damaged (%s): new work waits; restart the service to recover it",
                self.path,
                exc,
            )
            self.damaged = str(exc)
            self._mark_damaged()

    def _mark_damaged(self) -> None:
        """Leave a mark for the next start: ``quick_check`` does not see every damage."""
        try:
            (self.path.parent / DAMAGED_MARK).write_text(f"{self.damaged}\n", encoding="utf-8")
        except OSError as exc:
            log.error("cannot mark the journal damaged: %s", exc.strerror or exc)


def _connect(path: Path) -> sqlite3.Connection:
    # isolation_level=None: transactions are the explicit BEGIN IMMEDIATE above.
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    db.row_factory = sqlite3.Row
    (version,) = db.execute("PRAGMA user_version").fetchone()
    if version not in (0, SCHEMA_VERSION):
        db.close()
        raise sqlite3.DatabaseError(f"journal schema {version} is newer than {SCHEMA_VERSION}")
    # Only what is missing is written: a journal opened on a full disk (after a
    # kill -9 while it was full) opens without a write, and the daemon serves health.
    (mode,) = db.execute("PRAGMA journal_mode").fetchone()
    if str(mode).lower() != "wal":
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
    # When writes pause (between a study's views), WalSync syncs what they left,
    # off the result's way; in a burst it waits, and the result's fsync does it.
    db.execute("PRAGMA synchronous = NORMAL")
    db.execute("PRAGMA foreign_keys = ON")
    if version != SCHEMA_VERSION or missing_schema(db):
        db.executescript(SCHEMA)
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    add_columns(db)
    return db


def _is_damage(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    if code is not None:
        return int(code) & 0xFF in _DAMAGE_CODES
    text = str(exc)
    return "malformed" in text or "not a database" in text


def _journal_error(what: str, exc: sqlite3.Error) -> JournalError:
    """The journal's own error for any sqlite3 one: :class:`JournalDamaged` for damage."""
    kind = JournalDamaged if _is_damage(exc) else JournalError
    return kind(f"{what}: {exc}")


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
