"""The ``events`` table: the last events sent on ``.../events``, for ``edge status``."""

from __future__ import annotations

from dataclasses import asdict

from edge.journal.database import JournalBase
from edge.journal.records import EventRecord

#: events kept in the journal; older ones are deleted as new ones come
EVENTS_KEPT = 1000


class EventRows(JournalBase):
    """The journal's recent events (quarantined files, internal errors)."""

    def record_event(self, event: EventRecord) -> None:
        """Keep an event (only the last :data:`EVENTS_KEPT`)."""
        with self._transaction() as db:
            db.execute(
                "INSERT INTO events (at, kind, reason, stage, file, study, message)"
                " VALUES (:at, :kind, :reason, :stage, :file, :study, :message)",
                asdict(event),
            )
            db.execute("DELETE FROM events WHERE id <= last_insert_rowid() - ?", (EVENTS_KEPT,))

    def recent_events(self, limit: int = 20) -> list[EventRecord]:
        """The last ``limit`` events (quarantined files, internal errors), newest first."""
        with self._reading() as db:
            rows = db.execute(
                "SELECT at, kind, reason, stage, file, study, message FROM events"
                " ORDER BY id DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [EventRecord(**dict(row)) for row in rows]
