"""The journal: the durable state of files, scored images, results and the outbox.

One SQLite database, ``state_dir/journal.sqlite3``, written before anything is
acted on, so that a daemon killed at any instant (``kill -9``, power loss)
resumes where it stopped:

``files``
    one row per path in the watch folder, for the version (size, mtime) last
    taken: its SOP and Study Instance UIDs and its state, ``seen`` ->
    ``decoded`` -> ``scored`` -> ``published`` (its study's result acknowledged
    by the broker), or ``duplicate``, ``skipped``, ``quarantined``, ``gone``.
``images``
    one row per scored SOP Instance UID: what the study assembler needs to
    rebuild an open study without decoding again, and the result it went into.
``results``
    one row per study result, with its per-device ``seq`` and the exact payload,
    so that a result is replayed after a crash, never recomputed differently.
``outbox``
    the results on their way to the broker, at most ``outbox_max``, deleted at
    the broker's PUBACK. Results beyond that wait in ``results`` and move up in
    order as room frees.
``sequence``
    the last ``seq`` given per device name.
``events``
    the last :data:`EVENTS_KEPT` events sent on ``.../events`` (quarantined
    files, internal errors), for ``edge status`` after a restart.

What is old is forgotten in passes by :mod:`edge.journal.retention` (``journal.keep_days``).

Every public method is one transaction, serialised by one lock: the volume is a
few writes per image, far below what one connection serves.

What ``edge status`` and health read: :meth:`Journal.recent_results` (the last
studies with score, seq and when delivered), :meth:`Journal.backlog` (what waits
for the broker), :meth:`Journal.recent_events` (quarantines and errors, with
reasons) and :meth:`Journal.file_counts` (files per state).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edge.errors import JournalError
from edge.types import EngineInfo, ImageHeader, ImageScore, IncomingFile, StudyResult

log = logging.getLogger(__name__)

FILENAME = "journal.sqlite3"
SCHEMA_VERSION = 1
#: states after which a file is never processed again at the same (size, mtime)
DONE_STATES = frozenset({"scored", "published", "duplicate", "skipped", "quarantined"})
#: states of a file the journal forgets once the file has left the watch folder
FORGETTABLE_STATES = ("published", "duplicate", "skipped", "quarantined", "gone")
#: events kept in the journal; older ones are deleted as new ones come
EVENTS_KEPT = 1000

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
    result_entry INTEGER
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
"""


@dataclass(frozen=True)
class FileRecord:
    """What the journal knows of one path in the watch folder."""

    path: str
    size: int
    mtime_ns: int
    sop_uid: str | None
    study_uid: str | None
    state: str
    reason: str | None
    updated_at: float


@dataclass(frozen=True)
class OutboxEntry:
    """A journalled result on its way to the broker; ``entry`` orders the outbox."""

    entry: int
    seq: int
    result_id: str
    topic: str
    payload: bytes
    created_at: float


@dataclass(frozen=True)
class ResultSummary:
    """One study result as ``edge status`` lists it."""

    seq: int
    device: str
    id: str
    study_uid: str
    score: float
    suspicious: bool
    closed_by: str
    images: int
    created_at: float
    delivered_at: float | None


@dataclass(frozen=True)
class EventRecord:
    """An ``edge.event/1`` as journalled: no path, no patient identifier."""

    at: str
    kind: str
    reason: str
    stage: str | None
    file: str | None
    study: str | None
    message: str


@dataclass(frozen=True)
class Backlog:
    """Results not yet acknowledged: in the outbox, and waiting behind it."""

    outbox: int
    waiting: int
    oldest_created_at: float | None
    last_seq: int


class Journal:
    """The journal database of one ``state_dir``; thread-safe."""

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
    def open(cls, state_dir: Path, *, device: str, outbox_max: int = 1000) -> Journal:
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
    def open_read_only(cls, state_dir: Path, *, device: str) -> Journal:
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

    # -- files ------------------------------------------------------------------------------

    def file(self, path: Path) -> FileRecord | None:
        """The record of ``path``, whatever version of it was taken last."""
        with self._reading() as db:
            row = db.execute("SELECT * FROM files WHERE path = ?", (_key(path),)).fetchone()
        return None if row is None else _file_record(row)

    def finished(self, incoming: IncomingFile) -> FileRecord | None:
        """The record of this very version of a file when it needs no more work."""
        record = self.file(incoming.path)
        if record is None or (record.size, record.mtime_ns) != (incoming.size, incoming.mtime_ns):
            return None
        return record if record.state in DONE_STATES else None

    def file_seen(self, incoming: IncomingFile) -> None:
        """Record that a version of a file was taken (forgetting any earlier version)."""
        with self._transaction() as db:
            db.execute(
                "INSERT INTO files (path, size, mtime_ns, state, updated_at)"
                " VALUES (?, ?, ?, 'seen', ?)"
                " ON CONFLICT (path) DO UPDATE SET size = excluded.size,"
                " mtime_ns = excluded.mtime_ns, sop_uid = NULL, study_uid = NULL,"
                " state = 'seen', reason = NULL, updated_at = excluded.updated_at",
                (_key(incoming.path), incoming.size, incoming.mtime_ns, time.time()),
            )

    def claim_sop(self, path: Path, sop_uid: str, study_uid: str) -> bool:
        """Give ``sop_uid`` to the file at ``path``; False (and ``duplicate``) if taken.

        A SOP Instance UID is taken once it is scored, or while another file
        holding it is being processed: the same image sent twice is scored once.
        """
        with self._transaction() as db:
            taken = db.execute(
                "SELECT 1 FROM images WHERE sop_uid = ?1 UNION ALL"
                " SELECT 1 FROM files WHERE sop_uid = ?1 AND path <> ?2"
                " AND state IN ('seen', 'decoded') LIMIT 1",
                (sop_uid, _key(path)),
            ).fetchone()
            state, reason = ("duplicate", "duplicate_sop") if taken else ("seen", None)
            db.execute(
                "UPDATE files SET sop_uid = ?, study_uid = ?, state = ?, reason = ?,"
                " updated_at = ? WHERE path = ?",
                (sop_uid, study_uid, state, reason, time.time(), _key(path)),
            )
        return taken is None

    def set_file_state(self, path: Path, state: str, reason: str | None = None) -> None:
        """Move a file to ``decoded``, ``skipped``, ``quarantined`` or ``gone``."""
        with self._transaction() as db:
            db.execute(
                "UPDATE files SET state = ?, reason = ?, updated_at = ? WHERE path = ?",
                (state, reason, time.time(), _key(path)),
            )

    def unfinished_files(self) -> list[FileRecord]:
        """Files taken but not scored when the daemon last stopped."""
        with self._reading() as db:
            rows = db.execute(
                "SELECT * FROM files WHERE state IN ('seen', 'decoded') ORDER BY path"
            ).fetchall()
        return [_file_record(row) for row in rows]

    # -- scored images ------------------------------------------------------------------------

    def image_scored(self, score: ImageScore) -> None:
        """Record an image's score; its file becomes ``scored``."""
        header = score.header
        source = header.source
        with self._transaction() as db:
            db.execute(
                "INSERT INTO images VALUES"
                " (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)",
                (
                    *(header.sop_uid, header.study_uid, header.accession),
                    *(_key(source.path), source.size, source.mtime_ns),
                    *(header.laterality, header.view, int(header.screening)),
                    *(header.rows, header.columns, header.transfer_syntax, header.row_direction),
                    score.score,
                    *(score.engine.name, score.engine.version, score.engine.sha256),
                    score.engine.backend,
                    json.dumps(score.timings_ms),
                    time.time(),
                ),
            )
            db.execute(
                "UPDATE files SET state = 'scored', updated_at = ? WHERE path = ? AND sop_uid = ?",
                (time.time(), _key(source.path), header.sop_uid),
            )

    def open_study_scores(self) -> list[ImageScore]:
        """Scores of images whose study has no result yet, to rebuild open studies."""
        with self._reading() as db:
            rows = db.execute(
                "SELECT * FROM images WHERE result_entry IS NULL ORDER BY scored_at"
            ).fetchall()
        now = time.monotonic()
        return [_image_score(row, now) for row in rows]

    # -- results and the outbox ---------------------------------------------------------------

    def record_result(
        self, result: StudyResult, topic: str, encode: Callable[[int], tuple[str, bytes]]
    ) -> int:
        """Give ``result`` the next ``seq``, journal the (id, payload) ``encode(seq)``
        gives and queue it; return seq."""
        with self._transaction(durable=True) as db:
            seq = self._next_seq(db)
            result_id, payload = encode(seq)
            cursor = db.execute(
                "INSERT INTO results (device, seq, id, study_uid, score, suspicious, closed_by,"
                " images, topic, payload, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    *(self.device, seq, result_id, result.study_uid, result.score),
                    *(int(result.suspicious), result.closed_by, len(result.images)),
                    *(topic, payload, time.time()),
                ),
            )
            db.executemany(
                "UPDATE images SET result_entry = ? WHERE sop_uid = ?",
                [(cursor.lastrowid, image.header.sop_uid) for image in result.images],
            )
            self._fill_outbox(db)
        return seq

    def outbox_after(self, entry: int) -> list[OutboxEntry]:
        """Outbox rows after ``entry``, in order (0: the whole outbox)."""
        with self._reading() as db:
            rows = db.execute(
                "SELECT * FROM outbox WHERE entry > ? ORDER BY entry", (entry,)
            ).fetchall()
        return [OutboxEntry(**dict(row)) for row in rows]

    def acknowledge(self, entry: int) -> None:
        """The broker acknowledged ``entry``: out of the outbox, and the next moves up."""
        now = time.time()
        with self._transaction() as db:
            db.execute("DELETE FROM outbox WHERE entry = ?", (entry,))
            db.execute(
                "UPDATE results SET delivered_at = ? WHERE entry = ? AND delivered_at IS NULL",
                (now, entry),
            )
            db.execute(
                "UPDATE files SET state = 'published', updated_at = ? WHERE state = 'scored'"
                " AND sop_uid IN (SELECT sop_uid FROM images WHERE result_entry = ?)",
                (now, entry),
            )
            self._fill_outbox(db)

    def _fill_outbox(self, db: sqlite3.Connection) -> None:
        # Results move up in entry order, so everything waiting is newer than
        # everything in the outbox, and the broker receives them in seq order.
        (count,) = db.execute("SELECT count(*) FROM outbox").fetchone()
        room = self.outbox_max - int(count)
        if room <= 0:
            return
        db.execute(
            "INSERT INTO outbox (entry, seq, result_id, topic, payload, created_at)"
            " SELECT entry, seq, id, topic, payload, created_at FROM results"
            " WHERE delivered_at IS NULL AND entry NOT IN (SELECT entry FROM outbox)"
            " ORDER BY entry LIMIT ?",
            (room,),
        )

    def _next_seq(self, db: sqlite3.Connection) -> int:
        db.execute(
            "INSERT INTO sequence (device, seq) VALUES (?, 1)"
            " ON CONFLICT (device) DO UPDATE SET seq = seq + 1",
            (self.device,),
        )
        (seq,) = db.execute("SELECT seq FROM sequence WHERE device = ?", (self.device,)).fetchone()
        return int(seq)

    # -- retention ------------------------------------------------------------------------------

    def forget_results(self, before: float, limit: int) -> tuple[int, int]:
        """Forget up to ``limit`` results delivered before ``before`` (epoch seconds),
        oldest first, with the scored images that went into them.

        Returns (results, images) forgotten. Results not yet delivered are kept
        however old; ``sequence`` keeps counting, so the hub sees no gap. The newest
        result is kept too: SQLite numbers a new row one above the highest, and the
        publisher relies on ``entry`` only ever growing.
        """
        with self._transaction() as db:
            entries = [
                int(row[0])
                for row in db.execute(
                    "SELECT entry FROM results WHERE delivered_at < ?"
                    " AND entry < (SELECT max(entry) FROM results) ORDER BY entry LIMIT ?",
                    (before, limit),
                )
            ]
            if not entries:
                return 0, 0
            marks = ",".join("?" * len(entries))
            images = db.execute(f"DELETE FROM images WHERE result_entry IN ({marks})", entries)
            db.execute(f"DELETE FROM results WHERE entry IN ({marks})", entries)
        return len(entries), images.rowcount

    def forgettable_files(
        self, before: float, after: tuple[float, str], limit: int
    ) -> list[tuple[float, str]]:
        """Up to ``limit`` finished files last changed before ``before``, as
        (updated_at, path) after ``after`` in that order: a pass over them in batches."""
        marks = ",".join("?" * len(FORGETTABLE_STATES))
        with self._reading() as db:
            rows = db.execute(
                # The age index: each batch walks on from the cursor, never sorts the table.
                "SELECT updated_at, path FROM files INDEXED BY files_by_age"
                f" WHERE state IN ({marks})"
                " AND updated_at < ? AND (updated_at, path) > (?, ?)"
                " ORDER BY updated_at, path LIMIT ?",
                (*FORGETTABLE_STATES, before, *after, limit),
            ).fetchall()
        return [(float(updated_at), str(path)) for updated_at, path in rows]

    def forget_files(self, rows: list[tuple[float, str]]) -> int:
        """Forget these files' rows, unless a row changed since it was listed."""
        if not rows:
            return 0
        with self._transaction() as db:
            cursor = db.executemany("DELETE FROM files WHERE updated_at = ? AND path = ?", rows)
        return cursor.rowcount

    # -- events ---------------------------------------------------------------------------------

    def record_event(self, event: EventRecord) -> None:
        """Keep an event (only the last :data:`EVENTS_KEPT`)."""
        with self._transaction() as db:
            db.execute(
                "INSERT INTO events (at, kind, reason, stage, file, study, message)"
                " VALUES (:at, :kind, :reason, :stage, :file, :study, :message)",
                asdict(event),
            )
            db.execute("DELETE FROM events WHERE id <= last_insert_rowid() - ?", (EVENTS_KEPT,))

    # -- what health and ``edge status`` read ---------------------------------------------------

    def backlog(self) -> Backlog:
        """How many results wait for the broker, in the outbox and behind it."""
        with self._reading() as db:
            (outbox,) = db.execute("SELECT count(*) FROM outbox").fetchone()
            waiting, oldest = db.execute(
                "SELECT count(*), min(created_at) FROM results WHERE delivered_at IS NULL"
            ).fetchone()
            row = db.execute("SELECT seq FROM sequence WHERE device = ?", (self.device,)).fetchone()
        return Backlog(
            outbox=int(outbox),
            waiting=int(waiting) - int(outbox),
            oldest_created_at=oldest,
            last_seq=int(row[0]) if row else 0,
        )

    def recent_results(self, limit: int = 20) -> list[ResultSummary]:
        """The last ``limit`` study results, newest first, delivered or not."""
        with self._reading() as db:
            rows = db.execute(
                "SELECT seq, device, id, study_uid, score, suspicious, closed_by, images,"
                " created_at, delivered_at FROM results ORDER BY entry DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [
            ResultSummary(**{**dict(row), "suspicious": bool(row["suspicious"])}) for row in rows
        ]

    def recent_events(self, limit: int = 20) -> list[EventRecord]:
        """The last ``limit`` events (quarantined files, internal errors), newest first."""
        with self._reading() as db:
            rows = db.execute(
                "SELECT at, kind, reason, stage, file, study, message FROM events"
                " ORDER BY id DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [EventRecord(**dict(row)) for row in rows]

    def file_counts(self) -> dict[str, int]:
        """Number of files in each state."""
        with self._reading() as db:
            rows = db.execute("SELECT state, count(*) FROM files GROUP BY state").fetchall()
        return {str(state): int(count) for state, count in rows}

    # -- transactions -------------------------------------------------------------------------

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
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    return db


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


def _key(path: Path) -> str:
    # File names are bytes on Linux; one that is not UTF-8 still gets a stable key.
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _file_record(row: sqlite3.Row) -> FileRecord:
    return FileRecord(**dict(row))


def _image_score(row: sqlite3.Row, detected_at: float) -> ImageScore:
    source = IncomingFile(Path(row["path"]), row["size"], row["mtime_ns"], detected_at, "journal")
    timings: dict[str, Any] = json.loads(row["timings"])
    header = ImageHeader(
        source=source,
        sop_uid=row["sop_uid"],
        study_uid=row["study_uid"],
        accession=row["accession"],
        laterality=row["laterality"],
        view=row["view"],
        rows=row["n_rows"],
        columns=row["n_columns"],
        transfer_syntax=row["transfer_syntax"],
        row_direction=row["row_direction"],
        screening=bool(row["screening"]),
        timings_ms=dict(timings),
    )
    engine = EngineInfo(
        row["engine_name"], row["engine_version"], row["engine_sha256"], row["engine_backend"]
    )
    return ImageScore(header, row["score"], engine, timings)
