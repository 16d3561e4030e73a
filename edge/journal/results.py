"""The ``images``, ``results``, ``outbox`` and ``sequence`` tables.

``images`` holds one row per scored SOP Instance UID: what the study assembler
needs to rebuild an open study without decoding again, the regions the engine
located included (the CAD SR's marks); the shadow engine's scores and the results'
companions are kept beside (:mod:`edge.journal.shadows`). ``results`` holds one row
per study result with its per-device ``seq`` and exact payload, so that a result is
replayed after a crash, never recomputed differently. ``outbox`` holds the results
on their way to the broker, at most ``outbox_max``, deleted at the broker's PUBACK;
results beyond that wait in ``results`` and move up in order as room frees.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge.journal.database import JournalBase, path_key
from edge.journal.records import Backlog, OutboxEntry, ResultSummary
from edge.types import (
    EngineInfo,
    Finding,
    ImageHeader,
    ImageScore,
    IncomingFile,
    StudyResult,
)

log = logging.getLogger(__name__)


class ResultRows(JournalBase):
    """The journal's scored images, results and outbox."""

    def image_scored(self, score: ImageScore) -> None:
        """Record an image's score; its file becomes ``scored``."""
        with self._transaction() as db:
            _insert_score(db, score)

    def open_study_scores(self) -> list[ImageScore]:
        """Scores of images whose study has no result yet, to rebuild open studies."""
        with self._reading() as db:
            rows = db.execute(
                "SELECT * FROM images WHERE result_entry IS NULL ORDER BY scored_at"
            ).fetchall()
        now = time.monotonic()
        return [image_score_of(row, now) for row in rows]

    def record_result(
        self,
        result: StudyResult,
        topic: str,
        encode: Callable[[int], tuple[str, bytes]],
        completing: ImageScore | None = None,
    ) -> int:
        """Give ``result`` the next ``seq``, journal the (id, payload) ``encode(seq)``
        gives and queue it; return seq.

        ``completing``: the score of the image that completed the study, recorded in
        the same commit (as :meth:`image_scored` would): one commit less on the way
        of every study's last image.
        """
        with self._transaction(durable=True) as db:
            if completing is not None:
                _insert_score(db, completing)
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

    def acknowledge(self, entry: int) -> bool:
        """The broker acknowledged ``entry``: out of the outbox, and the next moves up.

        True when this is its first acknowledgement (not a result sent again).
        """
        now = time.time()
        with self._transaction() as db:
            db.execute("DELETE FROM outbox WHERE entry = ?", (entry,))
            first = db.execute(
                "UPDATE results SET delivered_at = ? WHERE entry = ? AND delivered_at IS NULL",
                (now, entry),
            ).rowcount
            db.execute(
                "UPDATE files SET state = 'published', updated_at = ? WHERE state = 'scored'"
                " AND sop_uid IN (SELECT sop_uid FROM images WHERE result_entry = ?)",
                (now, entry),
            )
            self._fill_outbox(db)
        return first > 0

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

    def restore(self, rows: dict[str, list[dict[str, Any]]], last_seq: int) -> None:
        """Fill this new journal with what a damaged one still held
        (:mod:`edge.journal.recovery`), and continue ``seq`` from ``last_seq``."""
        orphans = 0
        with self._transaction(durable=True) as db:
            for table, table_rows in rows.items():
                columns = [str(row[1]) for row in db.execute(f"PRAGMA table_info({table})")]
                for row in table_rows:
                    known = [column for column in columns if column in row]
                    try:
                        db.execute(
                            f"INSERT OR IGNORE INTO {table} ({', '.join(known)})"
                            f" VALUES ({', '.join('?' * len(known))})",
                            [row[column] for column in known],
                        )
                    except sqlite3.IntegrityError:  # its parent row was not readable
                        orphans += 1
            db.execute(
                "INSERT INTO sequence (device, seq) VALUES (?, ?)"
                " ON CONFLICT (device) DO UPDATE SET seq = max(seq, excluded.seq)",
                (self.device, last_seq),
            )
            self._fill_outbox(db)
        if orphans:
            log.warning("%d rows of the damaged journal left out: what they belong to was lost",
                        orphans)  # fmt: skip

    def _next_seq(self, db: sqlite3.Connection) -> int:
        db.execute(
            "INSERT INTO sequence (device, seq) VALUES (?, 1)"
            " ON CONFLICT (device) DO UPDATE SET seq = seq + 1",
            (self.device,),
        )
        (seq,) = db.execute("SELECT seq FROM sequence WHERE device = ?", (self.device,)).fetchone()
        return int(seq)

    def forget_results(
        self, before: float, limit: int, *, keep_unconfirmed: bool = False
    ) -> tuple[int, int]:
        """Forget up to ``limit`` results delivered before ``before`` (epoch seconds),
        oldest first, with the scored images that went into them.

        Returns (results, images) forgotten. Results not yet delivered are kept
        however old; ``sequence`` keeps counting, so the hub sees no gap. The newest
        result is kept too: SQLite numbers a new row one above the highest, and the
        publisher relies on ``entry`` only ever growing. ``keep_unconfirmed``
        (``mqtt.confirm: hub``): a result the hub has not confirmed is kept too.
        """
        unconfirmed = (
            " AND NOT (device = :device AND seq > coalesce("
            "(SELECT seq FROM confirmations WHERE device = :device), 0))"
            if keep_unconfirmed
            else ""
        )
        with self._transaction() as db:
            entries = [
                int(row[0])
                for row in db.execute(
                    "SELECT entry FROM results WHERE delivered_at < :before"
                    " AND entry < (SELECT max(entry) FROM results)"
                    f"{unconfirmed} ORDER BY entry LIMIT :limit",
                    {"before": before, "limit": limit, "device": self.device},
                )
            ]
            if not entries:
                return 0, 0
            marks = ",".join("?" * len(entries))
            db.execute(f"DELETE FROM shadow_results WHERE result_entry IN ({marks})", entries)
            db.execute(
                "DELETE FROM shadow_images WHERE sop_uid IN"
                f" (SELECT sop_uid FROM images WHERE result_entry IN ({marks}))",
                entries,
            )
            images = db.execute(f"DELETE FROM images WHERE result_entry IN ({marks})", entries)
            db.execute(f"DELETE FROM results WHERE entry IN ({marks})", entries)
        return len(entries), images.rowcount

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


def image_score_of(row: sqlite3.Row, detected_at: float) -> ImageScore:
    """The ``ImageScore`` an ``images`` row holds (its file named by ``detected_at``)."""
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
    columns = row.keys()  # sqlite3.Row: "in row" would look among the values
    findings = _findings(row["findings"] if "findings" in columns else "[]")
    return ImageScore(header, row["score"], engine, timings, findings)


def _insert_score(db: sqlite3.Connection, score: ImageScore) -> None:
    """The image's row; its file becomes ``scored``."""
    header = score.header
    source = header.source
    db.execute(
        "INSERT INTO images VALUES"
        " (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?)",
        (
            *(header.sop_uid, header.study_uid, header.accession),
            *(path_key(source.path), source.size, source.mtime_ns),
            *(header.laterality, header.view, int(header.screening)),
            *(header.rows, header.columns, header.transfer_syntax, header.row_direction),
            score.score,
            *(score.engine.name, score.engine.version, score.engine.sha256),
            score.engine.backend,
            json.dumps(score.timings_ms),
            time.time(),
            _findings_json(score.findings),
        ),
    )
    db.execute(
        "UPDATE files SET state = 'scored', updated_at = ? WHERE path = ? AND sop_uid = ?",
        (time.time(), path_key(source.path), header.sop_uid),
    )


def _findings_json(findings: tuple[Finding, ...]) -> str:
    return json.dumps([[f.column, f.row, f.radius, f.score] for f in findings])


def _findings(text: str) -> tuple[Finding, ...]:
    return tuple(Finding(*(float(value) for value in item)) for item in json.loads(text))
