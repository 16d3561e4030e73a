"""The hub's confirmations in the journal: what the box may stop sending, and what not.

``confirmations`` holds, per device name, the hub's last cumulative confirmation
(``edge.confirm/1``): every result up to its ``seq`` is in the hub's database.
Results above it are sent again until it covers them (:mod:`edge.delivery`), and
retention keeps them (:mod:`edge.journal.retention`).
"""

from __future__ import annotations

import sqlite3
import time

from edge.journal.database import JournalBase
from edge.journal.records import OutboxEntry, Unconfirmed


class ConfirmationRows(JournalBase):
    def confirm(self, seq: int, result_id: str) -> bool:
        """Record the hub's confirmation that results up to ``seq`` are in its database.

        False (nothing recorded) when it confirms no more than the journal holds
        already, or when this journal's result ``seq`` has another id: the hub
        confirmed another numbering of this device (a journal started afresh).
        """
        with self._transaction() as db:
            if seq <= confirmed_seq(db, self.device):
                return False
            row = db.execute(
                "SELECT id FROM results WHERE device = ? AND seq = ?", (self.device, seq)
            ).fetchone()
            if row is None or row["id"] != result_id:
                return False
            db.execute(
                "INSERT INTO confirmations (device, seq, result_id, confirmed_at)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (device) DO UPDATE SET seq = excluded.seq,"
                " result_id = excluded.result_id, confirmed_at = excluded.confirmed_at",
                (self.device, seq, result_id, time.time()),
            )
        return True

    def unconfirmed(self) -> Unconfirmed:
        """The newest ``seq``, the hub's confirmation, and the results above it."""
        with self._reading() as db:
            confirmed = confirmed_seq(db, self.device)
            count, oldest = db.execute(
                "SELECT count(*), min(created_at) FROM results WHERE device = ? AND seq > ?",
                (self.device, confirmed),
            ).fetchone()
            row = db.execute("SELECT seq FROM sequence WHERE device = ?", (self.device,)).fetchone()
        return Unconfirmed(
            last_seq=int(row[0]) if row else 0,
            confirmed_seq=confirmed,
            count=int(count),
            oldest_created_at=oldest,
        )

    def sendable_after(
        self, entry: int, *, replay: tuple[int, int] | None, limit: int
    ) -> list[OutboxEntry]:
        """Results to send after ``entry``, in order: the outbox, and this device's
        results with ``replay[0] < seq <= replay[1]`` however delivered (sent again
        byte for byte until the hub confirms them, or because it asked)."""
        low, high = replay if replay is not None else (0, 0)
        with self._reading() as db:
            rows = db.execute(
                "SELECT entry, seq, id AS result_id, topic, payload, created_at FROM results"
                " WHERE entry > :entry AND (entry IN (SELECT entry FROM outbox)"
                " OR (device = :device AND seq > :low AND seq <= :high))"
                " ORDER BY entry LIMIT :limit",
                {"entry": entry, "device": self.device, "low": low, "high": high, "limit": limit},
            ).fetchall()
        return [OutboxEntry(**dict(row)) for row in rows]


def confirmed_seq(db: sqlite3.Connection, device: str) -> int:
    row = db.execute("SELECT seq FROM confirmations WHERE device = ?", (device,)).fetchone()
    return int(row[0]) if row else 0
