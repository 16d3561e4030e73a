"""The audit log: who changed what, when (outcomes recorded, users' logins refused)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select

from edge.hub.tables import audit


@dataclass(frozen=True)
class AuditEntry:
    at: datetime
    user: str
    action: str
    detail: dict[str, Any]


def recent(connection: Connection, limit: int) -> list[AuditEntry]:
    rows = connection.execute(select(audit).order_by(audit.c.id.desc()).limit(limit)).mappings()
    return [AuditEntry(row["at"], row["user"], row["action"], dict(row["detail"])) for row in rows]
