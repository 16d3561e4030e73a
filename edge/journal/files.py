"""The ``files`` table: one row per path in the watch folder, for the version last taken.

A file moves ``seen`` -> ``scored`` -> ``published`` (its study's result
acknowledged by the broker), or to ``duplicate``, ``skipped``, ``quarantined``,
``gone``. Journals of earlier versions may hold ``decoded`` (a file whose image
was in the engine's queue), read as ``seen``. Its SOP Instance UID is claimed here, so that the same
image sent twice is scored once.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from edge.journal.database import JournalBase, path_key
from edge.journal.records import FileRecord
from edge.types import IncomingFile

#: states after which a file is never processed again at the same (size, mtime)
DONE_STATES = frozenset({"scored", "published", "duplicate", "skipped", "quarantined"})
#: states of a file the journal forgets once the file has left the watch folder
FORGETTABLE_STATES = ("published", "duplicate", "skipped", "quarantined", "gone")


class FileRows(JournalBase):
    """The journal's file rows."""

    def file(self, path: Path) -> FileRecord | None:
        """The record of ``path``, whatever version of it was taken last."""
        with self._reading() as db:
            row = db.execute("SELECT * FROM files WHERE path = ?", (path_key(path),)).fetchone()
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
                (path_key(incoming.path), incoming.size, incoming.mtime_ns, time.time()),
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
                (sop_uid, path_key(path)),
            ).fetchone()
            state, reason = ("duplicate", "duplicate_sop") if taken else ("seen", None)
            db.execute(
                "UPDATE files SET sop_uid = ?, study_uid = ?, state = ?, reason = ?,"
                " updated_at = ? WHERE path = ?",
                (sop_uid, study_uid, state, reason, time.time(), path_key(path)),
            )
        return taken is None

    def set_file_state(self, path: Path, state: str, reason: str | None = None) -> None:
        """Move a file to ``skipped``, ``quarantined`` or ``gone``."""
        with self._transaction() as db:
            db.execute(
                "UPDATE files SET state = ?, reason = ?, updated_at = ? WHERE path = ?",
                (state, reason, time.time(), path_key(path)),
            )

    def unfinished_files(self) -> list[FileRecord]:
        """Files taken but not scored when the daemon last stopped."""
        with self._reading() as db:
            rows = db.execute(
                "SELECT * FROM files WHERE state IN ('seen', 'decoded') ORDER BY path"
            ).fetchall()
        return [_file_record(row) for row in rows]

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

    def file_counts(self) -> dict[str, int]:
        """Number of files in each state."""
        with self._reading() as db:
            rows = db.execute("SELECT state, count(*) FROM files GROUP BY state").fetchall()
        return {str(state): int(count) for state, count in rows}


def _file_record(row: sqlite3.Row) -> FileRecord:
    return FileRecord(**dict(row))
