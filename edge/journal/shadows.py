"""The ``shadow_images`` and ``shadow_results`` tables: what a shadow engine scored.

``shadow_images`` holds the shadow engine's score of a scored image (written after
its serving score, which it references), so that a study reopened after a restart
keeps the scores its companion is made of. ``shadow_results`` holds each result's
companion message (``edge.shadow/1``) with its exact payload, on its way to the
broker until its PUBACK and kept, like its result, until retention forgets both,
so that a re-send request for the result's ``seq`` sends the companion again too.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable

from edge.journal.database import JournalBase
from edge.journal.records import Companion, Unaccompanied
from edge.journal.results import image_score_of
from edge.types import EngineInfo, ShadowScore

#: the engine columns' suffixes, in EngineInfo's order
ENGINE_KEYS = ("name", "version", "sha256", "backend")


def _engine_columns(engine: EngineInfo) -> tuple[str, str, str, str]:
    return engine.name, engine.version, engine.sha256, engine.backend


def _shadow_score(row: sqlite3.Row) -> ShadowScore:
    engine = EngineInfo(*(row[f"engine_{key}"] for key in ENGINE_KEYS))
    return ShadowScore(engine, row["score"], row["threshold"])


class ShadowRows(JournalBase):
    """The journal's shadow scores and the results' companions."""

    def image_shadowed(self, sop_uid: str, score: ShadowScore) -> None:
        """Record the shadow's score of a scored image."""
        engine = score.engine
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO shadow_images VALUES (?, ?, ?, ?, ?, ?, ?)",
                (sop_uid, *_engine_columns(engine), score.score, score.threshold),
            )

    def open_shadow_scores(self) -> dict[str, ShadowScore]:
        """Shadow scores of the images whose study has no result yet."""
        with self._reading() as db:
            rows = db.execute(
                "SELECT shadow_images.* FROM shadow_images JOIN images USING (sop_uid)"
                " WHERE images.result_entry IS NULL"
            ).fetchall()
        return {row["sop_uid"]: _shadow_score(row) for row in rows}

    def unaccompanied(self) -> list[Unaccompanied]:
        """Results whose images were scored in shadow and that have no companion."""
        with self._reading() as db:
            results = db.execute(
                "SELECT DISTINCT results.entry, results.seq, results.id, results.study_uid"
                " FROM results JOIN images ON images.result_entry = results.entry"
                " JOIN shadow_images USING (sop_uid)"
                " WHERE results.entry NOT IN (SELECT result_entry FROM shadow_results)"
                " ORDER BY results.entry"
            ).fetchall()
            found = []
            for entry, seq, result_id, study_uid in results:
                images = db.execute(
                    "SELECT * FROM images WHERE result_entry = ? ORDER BY sop_uid", (entry,)
                ).fetchall()
                shadows = db.execute(
                    "SELECT shadow_images.* FROM shadow_images JOIN images USING (sop_uid)"
                    " WHERE images.result_entry = ?",
                    (entry,),
                ).fetchall()
                now = time.monotonic()
                found.append(
                    Unaccompanied(
                        seq,
                        result_id,
                        study_uid,
                        tuple(image_score_of(row, now) for row in images),
                        {row["sop_uid"]: _shadow_score(row) for row in shadows},
                    )
                )
        return found

    def record_companion(
        self, result_id: str, topic: str, encode: Callable[[int], bytes]
    ) -> int | None:
        """Journal the companion ``encode(seq)`` of the result ``result_id``; return its
        seq (None: the result is no longer journalled)."""
        with self._transaction(durable=True) as db:
            row = db.execute("SELECT entry, seq FROM results WHERE id = ?", (result_id,)).fetchone()
            if row is None:
                return None
            db.execute(
                "INSERT OR IGNORE INTO shadow_results (result_entry, seq, topic, payload,"
                " created_at) VALUES (?, ?, ?, ?, ?)",
                (row["entry"], row["seq"], topic, encode(row["seq"]), time.time()),
            )
        return int(row["seq"])

    def companions_waiting(self, limit: int) -> list[Companion]:
        """Companions the broker has not acknowledged, oldest first."""
        with self._reading() as db:
            rows = db.execute(
                "SELECT result_entry, seq, topic, payload FROM shadow_results"
                " WHERE delivered_at IS NULL ORDER BY result_entry LIMIT ?",
                (limit,),
            ).fetchall()
        return [Companion(row[0], row[1], row[2], bytes(row[3])) for row in rows]

    def companion_delivered(self, entry: int) -> None:
        """The broker acknowledged the companion of result ``entry``."""
        with self._transaction() as db:
            db.execute(
                "UPDATE shadow_results SET delivered_at = ? WHERE result_entry = ?",
                (time.time(), entry),
            )

    def resend_companions(self, first_seq: int, last_seq: int | None) -> int:
        """Send the companions of results ``first_seq..last_seq`` again; how many."""
        last = last_seq if last_seq is not None else 2**62
        with self._transaction() as db:
            return db.execute(
                "UPDATE shadow_results SET delivered_at = NULL WHERE seq BETWEEN ? AND ?"
                " AND delivered_at IS NOT NULL",
                (first_seq, last),
            ).rowcount
