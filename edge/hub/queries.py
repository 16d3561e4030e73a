"""The operator's questions, answered from the database: devices, results, gaps.

Health documents are read defensively: each field is looked up by its explicit
path and is None (shown as ``-``) when an appliance's version does not send it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, func, select

from edge.hub import fields
from edge.hub.tables import devices, results, shadow_scores


@dataclass(frozen=True)
class DeviceRow:
    site: str
    device: str
    #: ``online``, ``offline``, or None when no status was ever received
    status: str | None
    since: datetime | None
    engine_version: str | None
    last_result: datetime | None
    outbox: int | None
    gpu_temperature_c: float | None
    health_at: datetime | None
    #: seq numbers missing over all of the device's epochs
    missing: int
    #: the highest seq the hub holds (current epoch), and the device's own (health)
    hub_seq: int
    device_seq: int | None


@dataclass(frozen=True)
class ResultRow:
    site: str
    device: str
    seq: int
    study_uid: str
    accession: str
    score: float
    suspicious: bool
    model: str
    created_at: datetime
    received_at: datetime
    deliveries: int
    id: str


@dataclass(frozen=True)
class Gap:
    site: str
    device: str
    epoch: int
    first: int
    last: int
    #: when the result just after the gap arrived: the gap has been open since then
    since: datetime
    #: ``results`` missing, or ``shadow``: stored results whose companion is missing
    what: str = "results"

    @property
    def count(self) -> int:
        return self.last - self.first + 1


def list_devices(connection: Connection) -> list[DeviceRow]:
    """Every device the hub has heard from, with its state and latest health."""
    missing: dict[tuple[str, str], int] = {}
    for gap in find_gaps(connection):
        key = (gap.site, gap.device)
        missing[key] = missing.get(key, 0) + gap.count
    rows = connection.execute(select(devices).order_by(devices.c.site, devices.c.device))
    return [
        _device_row(row, missing.get((row.site, row.device), 0)) for row in rows.mappings().all()
    ]


def _device_row(row: Any, missing: int) -> DeviceRow:
    health = row["health"] if isinstance(row["health"], dict) else {}
    return DeviceRow(
        site=row["site"],
        device=row["device"],
        status=row["status"],
        since=row["status_since"],
        engine_version=fields.text(fields.at(health, "engine", "version")),
        last_result=row["last_result_at"],
        outbox=fields.integer(fields.at(health, "queues", "outbox")),
        gpu_temperature_c=gpu_temperature(health),
        health_at=row["health_at"],
        missing=missing,
        hub_seq=row["max_seq"],
        device_seq=fields.integer(fields.at(health, "journal", "last_seq")),
    )


def gpu_temperature(health: dict[str, Any]) -> float | None:
    """The hottest GPU's ``temperature_c``: from ``gpu.devices[]`` (NVML or jetson-stats
    telemetry), or from ``gpu`` itself where it is one reading; None without GPU telemetry.
    """
    gpu = health.get("gpu")
    if isinstance(gpu, dict) and isinstance(gpu.get("devices"), list):
        boards = gpu["devices"]
    else:
        boards = gpu if isinstance(gpu, list) else [gpu]
    readings = [fields.number(fields.at(board, "temperature_c")) for board in boards]
    present = [reading for reading in readings if reading is not None]
    return max(present) if present else None


def list_results(
    connection: Connection,
    *,
    since: datetime,
    site: str | None = None,
    suspicious: bool = False,
    limit: int = 1000,
) -> list[ResultRow]:
    """Results created on the devices at or after ``since`` (UTC), newest first."""
    query = select(results).where(results.c.created_at >= since)
    if site is not None:
        query = query.where(results.c.site == site)
    if suspicious:
        query = query.where(results.c.suspicious.is_(True))
    query = query.order_by(results.c.created_at.desc(), results.c.id).limit(limit)
    return [
        ResultRow(
            site=row["site"],
            device=row["device"],
            seq=row["seq"],
            study_uid=row["study_uid"],
            accession=row["accession"],
            score=row["score"],
            suspicious=row["suspicious"],
            model=f"{row['model_name']} {row['model_version']}",
            created_at=row["created_at"],
            received_at=row["received_at"],
            deliveries=row["deliveries"],
            id=row["id"],
        )
        for row in connection.execute(query).mappings().all()
    ]


def find_gaps(
    connection: Connection, *, site: str | None = None, device: str | None = None
) -> list[Gap]:
    """Missing ``seq`` ranges per device and epoch, from 1 up to the highest received.

    A missing range is found between two neighbouring seq values of a device's
    numbering (a window over the results ordered by seq), so it disappears by
    itself once the late result is stored. A gap after the highest seq stored is
    seen from the box's own newest seq (``device_last_seq``, from its hello and its
    health): a lost last result is missing too.
    """
    found = _gaps_between(connection, site=site, device=device)
    found.extend(_gaps_after(connection, site=site, device=device))
    return sorted(found, key=lambda gap: (gap.site, gap.device, gap.epoch, gap.first))


def missing_companions(connection: Connection, *, now: datetime, window_s: float) -> list[Gap]:
    """Results of the last ``window_s`` that said ``shadow_follows`` and whose companion
    (``edge.shadow/1``) is not stored, one gap each (``what="shadow"``).

    Only recent results are searched (through the ``created_at`` index): a box keeps
    a companion as long as its result, and one missing for longer than that window
    has been asked for many times already.
    """
    follows = results.c.document["shadow_follows"].as_boolean()
    query = (
        select(
            results.c.site, results.c.device, results.c.epoch, results.c.seq, results.c.received_at
        )
        .outerjoin(shadow_scores, shadow_scores.c.result_id == results.c.id)
        .where(
            and_(
                results.c.created_at >= now - timedelta(seconds=window_s),
                follows.is_(True),
                shadow_scores.c.result_id.is_(None),
            )
        )
        .order_by(results.c.site, results.c.device, results.c.epoch, results.c.seq)
    )
    return [
        Gap(row.site, row.device, row.epoch, row.seq, row.seq, row.received_at, "shadow")
        for row in connection.execute(query)
    ]


def _gaps_between(connection: Connection, *, site: str | None, device: str | None) -> list[Gap]:
    partition = (results.c.site, results.c.device, results.c.epoch)
    previous = func.lag(results.c.seq).over(partition_by=partition, order_by=results.c.seq)
    numbered = select(*partition, results.c.seq, results.c.received_at, previous.label("prev"))
    if site is not None:
        numbered = numbered.where(results.c.site == site)
    if device is not None:
        numbered = numbered.where(results.c.device == device)
    inner = numbered.subquery()
    after = func.coalesce(inner.c.prev, 0)
    query = (
        select(
            inner.c.site,
            inner.c.device,
            inner.c.epoch,
            (after + 1).label("first"),
            (inner.c.seq - 1).label("last"),
            inner.c.received_at,
        )
        .where(inner.c.seq - after > 1)
        .order_by(inner.c.site, inner.c.device, inner.c.epoch, inner.c.seq)
    )
    return [
        Gap(row.site, row.device, row.epoch, int(row.first), int(row.last), row.received_at)
        for row in connection.execute(query)
    ]


def _gaps_after(connection: Connection, *, site: str | None, device: str | None) -> list[Gap]:
    """Per device, the seq numbers between the highest stored and the box's own newest."""
    query = select(devices).where(devices.c.device_last_seq > devices.c.max_seq)
    if site is not None:
        query = query.where(devices.c.site == site)
    if device is not None:
        query = query.where(devices.c.device == device)
    return [
        Gap(
            row["site"],
            row["device"],
            row["epoch"],
            int(row["max_seq"]) + 1,
            int(row["device_last_seq"]),
            row["device_last_seq_at"],
        )
        for row in connection.execute(query).mappings()
    ]
