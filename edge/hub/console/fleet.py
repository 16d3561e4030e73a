"""The fleet: every box, its state, and what is wrong with it, the worst first.

Read from the ``devices`` row (status, latest health), ``device_gaps`` (seq
missing) and ``defect_hours`` (the last 24 hours' defects): a few hundred rows
whatever the number of results.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, func, select

from edge.hub import fields
from edge.hub.queries import gpu_temperature
from edge.hub.tables import defect_hours, device_gaps, devices

DEFECT_WINDOW = timedelta(hours=24)
#: a defect rate at or above this is listed as a problem
DEFECT_WARN = 0.05
#: health older than this is listed as a problem (the box may be hung)
HEALTH_STALE = timedelta(minutes=10)


@dataclass(frozen=True)
class FleetRow:
    site: str
    device: str
    status: str
    since: datetime | None
    last_result: datetime | None
    #: results on the box not yet acknowledged by the broker, and waiting behind them
    outbox: int | None
    backlog: int | None
    engine: str | None
    gpu_temperature_c: float | None
    #: the box's own p95 of ``total`` (file complete to result) over its recent images
    latency_p95_ms: float | None
    received_24h: int
    defects_24h: dict[str, int]
    missing: int
    alarms: tuple[str, ...]
    health_at: datetime | None
    problems: tuple[str, ...] = field(default=())

    @property
    def defect_rate(self) -> float | None:
        if not self.received_24h:
            return None
        return sum(self.defects_24h.values()) / self.received_24h

    @property
    def severity(self) -> tuple[int, int, int, float, int]:
        return (
            int(self.status != "online"),
            len(self.alarms),
            self.missing,
            self.defect_rate or 0.0,
            (self.outbox or 0) + (self.backlog or 0),
        )


def fleet(connection: Connection, now: datetime) -> list[FleetRow]:
    """Every box, the worst first (offline, alarms, seq missing, defects, backlog)."""
    missing = {
        (row.site, row.device): int(row.missing) for row in connection.execute(select(device_gaps))
    }
    defects = _defects(connection, now - DEFECT_WINDOW)
    rows = [
        _row(row, missing.get((row["site"], row["device"]), 0), defects, now)
        for row in connection.execute(select(devices)).mappings()
    ]
    return sorted(rows, key=lambda row: (tuple(-v for v in row.severity), row.site, row.device))


def _defects(connection: Connection, since: datetime) -> dict[tuple[str, str], dict[str, int]]:
    query = (
        select(defect_hours.c.site, defect_hours.c.device, defect_hours.c.kind,
               defect_hours.c.reason, func.sum(defect_hours.c.count))
        .where(defect_hours.c.hour >= since.replace(minute=0, second=0, microsecond=0))
        .group_by(defect_hours.c.site, defect_hours.c.device, defect_hours.c.kind,
                  defect_hours.c.reason)
    )  # fmt: skip
    found: dict[tuple[str, str], dict[str, int]] = {}
    for site, device, kind, reason, count in connection.execute(query):
        name = "received" if kind == "received" else f"{kind}:{reason}"
        found.setdefault((site, device), {})[name] = int(count)
    return found


def _row(
    row: Any, missing: int, defects: dict[tuple[str, str], dict[str, int]], now: datetime
) -> FleetRow:
    health = row["health"] if isinstance(row["health"], dict) else {}
    counts = dict(defects.get((row["site"], row["device"]), {}))
    received = counts.pop("received", 0)
    alarms = health.get("alarms")
    fleet_row = FleetRow(
        site=row["site"],
        device=row["device"],
        status=row["status"] or "unknown",
        since=row["status_since"],
        last_result=row["last_result_at"],
        outbox=fields.integer(fields.at(health, "queues", "outbox")),
        backlog=fields.integer(fields.at(health, "queues", "journal_backlog")),
        engine=_engine(health),
        gpu_temperature_c=gpu_temperature(health),
        latency_p95_ms=fields.number(fields.at(health, "latency_ms", "total", "p95")),
        received_24h=received,
        defects_24h=counts,
        missing=missing,
        alarms=tuple(str(a) for a in alarms) if isinstance(alarms, list) else (),
        health_at=row["health_at"],
    )
    return _with_problems(fleet_row, now)


def _with_problems(row: FleetRow, now: datetime) -> FleetRow:
    problems = []
    if row.status != "online":
        problems.append(row.status)
    problems.extend(f"alarm {alarm}" for alarm in row.alarms)
    if row.missing:
        problems.append(f"{row.missing} seq missing")
    if row.defect_rate is not None and row.defect_rate >= DEFECT_WARN:
        problems.append(f"defects {row.defect_rate:.0%}")
    if row.status == "online" and (row.health_at is None or now - row.health_at > HEALTH_STALE):
        problems.append("no recent health")
    return FleetRow(**{**row.__dict__, "problems": tuple(problems)})


def _engine(health: dict[str, Any]) -> str | None:
    name, version = fields.at(health, "engine", "name"), fields.at(health, "engine", "version")
    if not isinstance(version, str):
        return None
    return f"{name} {version}" if isinstance(name, str) else version
