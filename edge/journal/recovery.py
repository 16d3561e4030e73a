"""A damaged journal: kept aside for forensics, replaced by one built from what it still holds.

At every start the daemon opens the journal through :func:`open_journal`, which runs
SQLite's ``quick_check``. A journal SQLite finds damaged (a page overwritten, the
file truncated, not a database at all), or one marked damaged while it served
(:data:`~edge.journal.database.DAMAGED_MARK`: ``quick_check`` does not see every
damage a query hits), is not served from, and not refused either:

1. the file and its ``-wal`` and ``-shm`` are moved (renamed, no copy: the disk may be
   full) to ``state_dir/journal-damaged/<UTC time>/``, with a ``recovery.txt``;
2. what can still be read is read from that copy, read-only, table by table: each
   table is scanned forwards and backwards by rowid, so a damaged page in the middle
   loses only the rows on it;
3. a new journal is created, given those results (delivered or not: an undelivered
   one goes out as it was journalled, same ``id``, same payload; one the ``results``
   table lost is rebuilt from the outbox's copy of its payload) and the scored
   images (open studies, and the SOP Instance UIDs already scored, so an image
   sent again is still a duplicate), and the hub's last confirmation (so what the
   hub holds is not sent again, nor reported unconfirmed); its ``seq`` continues
   from the highest number read (the ``sequence`` table, the newest result, the
   hub's confirmation: a number the hub confirmed is never given again).

The file states are not carried over: files still in the watch folder are taken
again, and those whose image was scored are counted as duplicates. What the hub
sees is described in docs/messages.md (*A damaged journal*).
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edge.common.clock import iso
from edge.errors import JournalDamaged, JournalError
from edge.journal import FILENAME, Journal
from edge.journal.database import DAMAGED_MARK

log = logging.getLogger(__name__)

#: where damaged journals are kept, under ``state_dir``
DAMAGED_DIR = "journal-damaged"
#: what a new journal takes over from a damaged one, in this order
#: parents before the rows that reference them (``shadow_images`` -> ``images``,
#: ``shadow_results`` -> ``results``)
CARRIED_TABLES = ("results", "images", "confirmations", "shadow_images", "shadow_results")
_SIDE_FILES = ("-wal", "-shm")


@dataclass(frozen=True)
class Recovery:
    """What a recovery found and carried over; health's ``journal.replaced``."""

    problem: str
    kept_at: Path
    at: float
    #: the ``seq`` the new journal continues from, and where it was read
    last_seq: int
    seq_from: str
    results: int
    undelivered: int
    images: int
    #: the hub's confirmation carried over (0: none was readable)
    confirmed_seq: int = 0

    def health(self) -> dict[str, Any]:
        """Health's ``journal.replaced``: when, where the damaged file is kept, what was carried."""
        return {
            "at": iso(self.at),
            "kept_at": str(self.kept_at),
            "results": self.results,
            "undelivered": self.undelivered,
            "images": self.images,
            "last_seq": self.last_seq,
            "seq_from": self.seq_from,
            "confirmed_seq": self.confirmed_seq,
        }

    def summary(self) -> str:
        """One line for the log, the event and ``edge journal recover``."""
        return (
            f"damaged journal moved to {self.kept_at}; the new one holds {self.results} "
            f"results ({self.undelivered} not yet delivered), {self.images} scored images and "
            f"the hub's confirmation up to seq {self.confirmed_seq}; "
            f"seq continues from {self.last_seq} (read from {self.seq_from})"
        )


def open_journal(
    state_dir: Path, *, device: str, outbox_max: int
) -> tuple[Journal, Recovery | None]:
    """Open the journal of ``state_dir``, recovering it first if it is damaged.

    Raises
    ------
    JournalError
        When the journal (or its replacement) cannot be opened at all.
    """
    mark = state_dir / DAMAGED_MARK
    try:
        if mark.exists():
            # Found damaged while it served, even where quick_check sees nothing now.
            raise JournalDamaged(f"the journal was found damaged while serving: {_read(mark)}")
        return Journal.open(state_dir, device=device, outbox_max=outbox_max), None
    except JournalDamaged as exc:
        log.error("%s: recovering it", exc.detail)
        return recover(state_dir, device=device, outbox_max=outbox_max, problem=exc.detail)


def _read(mark: Path) -> str:
    try:
        return mark.read_text(encoding="utf-8", errors="replace").strip()[:300]
    except OSError as exc:
        return f"(the mark cannot be read: {exc.strerror or exc})"


def check(state_dir: Path, *, full: bool = False) -> str | None:
    """What is wrong with the journal of ``state_dir``, or None when it is sound; no write.

    ``full`` runs ``integrity_check`` (indexes against their tables too) instead
    of ``quick_check``.

    Raises
    ------
    JournalError
        When there is no journal.
    """
    path = state_dir / FILENAME
    if not path.is_file():
        raise JournalError(f"no journal at {path}: the service has not run with this state_dir")
    if (state_dir / DAMAGED_MARK).exists():
        return f"found damaged while serving: {_read(state_dir / DAMAGED_MARK)}"
    pragma = "integrity_check(20)" if full else "quick_check(20)"
    try:
        with _read_only(path) as db:
            rows = db.execute(f"PRAGMA {pragma}").fetchall()
    except sqlite3.Error as exc:
        return str(exc)
    problems = [str(row[0]) for row in rows if str(row[0]) != "ok"]
    return "; ".join(problems) or None


def recover(
    state_dir: Path, *, device: str, outbox_max: int, problem: str
) -> tuple[Journal, Recovery]:
    """Move the journal of ``state_dir`` aside and start a new one from what it held.

    Raises
    ------
    JournalError
        When the new journal cannot be created or filled.
    """
    kept = _move_aside(state_dir)
    (state_dir / DAMAGED_MARK).unlink(missing_ok=True)
    rows, last_seq, seq_from = _salvage(kept / FILENAME, device)
    journal = Journal.open(state_dir, device=device, outbox_max=outbox_max)
    journal.restore(rows, last_seq)
    results = rows["results"]
    recovery = Recovery(
        problem=problem,
        kept_at=kept,
        at=time.time(),
        last_seq=last_seq,
        seq_from=seq_from,
        results=len(results),
        undelivered=sum(1 for row in results if row.get("delivered_at") is None),
        images=len(rows["images"]),
        confirmed_seq=_confirmed(rows["confirmations"], device),
    )
    _write_note(kept, recovery)
    log.warning("journal recovered: %s", recovery.summary())
    return journal, recovery


def _move_aside(state_dir: Path) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    kept = state_dir / DAMAGED_DIR / stamp
    kept.mkdir(parents=True)
    for suffix in ("", *_SIDE_FILES, ".damaged"):
        source = state_dir / f"{FILENAME}{suffix}"
        if source.exists():
            source.rename(kept / source.name)
    return kept


def _salvage(path: Path, device: str) -> tuple[dict[str, list[dict[str, Any]]], int, str]:
    """The rows of :data:`CARRIED_TABLES` still readable, the last seq and where it came from."""
    rows: dict[str, list[dict[str, Any]]] = {table: [] for table in CARRIED_TABLES}
    sequence: list[dict[str, Any]] = []
    try:
        with _read_only(path) as db:
            for table in CARRIED_TABLES:
                rows[table] = _readable_rows(db, table)
            sequence = _readable_rows(db, "sequence")
            rows["results"] = _with_outbox(rows["results"], _readable_rows(db, "outbox"))
    except sqlite3.Error as exc:
        log.error("nothing can be read from the damaged journal: %s", exc)
    last_seq, seq_from = _last_seq(sequence, rows, device)
    return rows, last_seq, seq_from


def _last_seq(
    sequence: list[dict[str, Any]], rows: dict[str, list[dict[str, Any]]], device: str
) -> tuple[int, str]:
    """The highest ``seq`` of ``device`` still readable, and where it was read.

    The hub's confirmation counts too: the numbers it confirmed are in its database,
    and a new result given one of them would be taken for delivered.
    """
    read = {
        "sequence": [int(row["seq"]) for row in sequence if row.get("device") == device],
        "results": [int(row["seq"]) for row in rows["results"] if row.get("device") == device],
        "the hub's confirmation": [_confirmed(rows["confirmations"], device)],
    }
    best, where = max(((max(seqs, default=0), where) for where, seqs in read.items()),
                      key=lambda found: found[0])  # fmt: skip
    if best == 0:
        return 0, "nothing readable: numbering starts again at 1"
    return best, where


def _confirmed(confirmations: list[dict[str, Any]], device: str) -> int:
    """The seq up to which the hub confirmed ``device``'s results (0: none readable)."""
    return max((int(row["seq"]) for row in confirmations if row.get("device") == device),
               default=0)  # fmt: skip


def _with_outbox(
    results: list[dict[str, Any]], outbox: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """``results`` and, rebuilt from the outbox's copy, the undelivered ones it lost.

    The outbox holds each undelivered result's exact payload a second time: the one
    thing a box must never lose survives a damaged ``results`` table.
    """
    held = {int(row["entry"]) for row in results}
    rebuilt = [_result_row(row) for row in outbox if int(row["entry"]) not in held]
    found = [row for row in rebuilt if row is not None]
    if found:
        log.warning("%d undelivered results rebuilt from the outbox's copy", len(found))
    return sorted([*results, *found], key=lambda row: int(row["entry"]))


def _result_row(outbox: dict[str, Any]) -> dict[str, Any] | None:
    """A ``results`` row from an outbox row and its payload, or None if it cannot be read."""
    try:
        document = json.loads(outbox["payload"])
        study = document["study"]
        return {
            **{key: outbox[key] for key in ("entry", "seq", "topic", "payload", "created_at")},
            "id": outbox["result_id"],
            "device": str(document["device"]),
            "study_uid": str(document["study_uid"]),
            "score": float(study["score"]),
            "suspicious": int(bool(study["suspicious"])),
            "closed_by": str(document["closed_by"]),
            "images": len(document["images"]),
            "delivered_at": None,
        }
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("outbox entry %s cannot be rebuilt: %s", outbox.get("entry"), exc)
        return None


def _readable_rows(db: sqlite3.Connection, table: str) -> list[dict[str, Any]]:
    """Every row of ``table`` a forward and a backward scan by rowid can still read."""
    found: dict[int, dict[str, Any]] = {}
    for direction in ("ASC", "DESC"):
        try:
            query = f"SELECT rowid AS _rowid_, * FROM {table} ORDER BY rowid {direction}"
            cursor = db.execute(query)
            for row in cursor:
                found.setdefault(int(row["_rowid_"]), dict(row))
        except sqlite3.Error as exc:
            log.warning("journal table %s: a scan stopped at a damaged page (%s)", table, exc)
    for row in found.values():
        row.pop("_rowid_", None)
    return [found[rowid] for rowid in sorted(found)]


@contextlib.contextmanager
def _read_only(path: Path) -> Iterator[sqlite3.Connection]:
    """A connection that never writes ``path``.

    Read-only first (with the WAL's last commits); when SQLite refuses even the
    schema (a file cut short of the size its header declares), an in-memory copy
    whose header is made to agree with what is left.
    """
    db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError:
        db.close()
        db = _patched_copy(path)
    db.row_factory = sqlite3.Row
    try:
        yield db
    finally:
        db.close()


def _patched_copy(path: Path) -> sqlite3.Connection:
    """The main file in memory, padded with empty pages to the size its header declares.

    The pages cut off read as damaged, and the scans skip them; the schema, which
    names them, still parses.

    Raises
    ------
    sqlite3.DatabaseError
        When the copy cannot be read either (page 1 itself is damaged).
    """
    data = bytearray(path.read_bytes())
    page_size = int.from_bytes(data[16:18], "big") if len(data) >= 100 else 0
    page_size = 65536 if page_size == 1 else page_size
    db = sqlite3.connect(":memory:")
    deserialize = getattr(db, "deserialize", None)  # Python 3.11+
    if page_size < 512 or deserialize is None:
        db.close()
        raise sqlite3.DatabaseError("the journal's first page is unreadable")
    declared = int.from_bytes(data[28:32], "big") * page_size
    data.extend(b"\0" * max(declared - len(data), -len(data) % page_size))
    data[28:32] = (len(data) // page_size).to_bytes(4, "big")
    data[18:20] = b"\x01\x01"  # legacy journal mode: no WAL for an in-memory copy
    deserialize(bytes(data))
    db.execute("SELECT count(*) FROM sqlite_master").fetchone()
    return db


def _write_note(kept: Path, recovery: Recovery) -> None:
    at = datetime.fromtimestamp(recovery.at, timezone.utc).isoformat(timespec="seconds")
    note = f"recovered at: {at}\nproblem: {recovery.problem}\n{recovery.summary()}\n"
    try:
        (kept / "recovery.txt").write_text(note, encoding="utf-8")
    except OSError as exc:
        log.error("could not write %s/recovery.txt: %s", kept, exc.strerror or exc)


def kept_journals(state_dir: Path) -> list[Path]:
    """The damaged journals kept under ``state_dir``, oldest first."""
    folder = state_dir / DAMAGED_DIR
    return sorted(path for path in folder.iterdir() if path.is_dir()) if folder.is_dir() else []


def disk_use(path: Path) -> int:
    """Bytes under ``path`` (for ``edge journal check`` to say what the kept copies cost)."""
    return sum(item.stat().st_size for item in path.rglob("*") if item.is_file())
