"""Writing what the collector received: one transaction per batch, idempotent.

A result is stored once per ``id``; a re-delivery only raises its ``deliveries``
count. Messages are applied device by device, each device's row locked first
(``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite's write lock covers the whole
file), in a fixed order so that two collectors writing into one database
serialise per device instead of deadlocking.

Sequence numbers: each device numbers its results 1, 2, 3... (``seq``). A seq
above the highest seen so far opens a gap, a lower one that is new closes (part
of) a gap, and a seq already taken by a different result means the device
started counting again (its journal was wiped): the hub begins a new *epoch*
for that device and keeps the old numbering's gaps on record.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import groupby
from typing import Any

from sqlalchemy import Connection, Engine, Table, select, update
from sqlalchemy.dialects import postgresql, sqlite

from edge.delivery.protocol import Confirmation
from edge.hub.aggregates import Tally
from edge.hub.compare import store_shadow
from edge.hub.confirm import advance, announced_last_seq
from edge.hub.messages import (
    EventRecord,
    HealthRecord,
    HelloRecord,
    Record,
    Rejected,
    ResultRecord,
    StatusRecord,
)
from edge.hub.tables import devices, events, rejects, results, seq_resets

log = logging.getLogger(__name__)

#: how far behind another collector's write of the same device's health may be
HEALTH_ORDER_WINDOW = timedelta(seconds=60)

Device = tuple[str, str]
DeviceRecord = ResultRecord | HealthRecord | StatusRecord | EventRecord | HelloRecord


@dataclass
class DeviceState:
    """A device's row while a transaction holds it."""

    site: str
    device: str
    status: str | None
    status_since: datetime | None
    health: dict[str, Any] | None
    health_at: datetime | None
    health_received_at: datetime | None
    epoch: int
    max_seq: int
    last_result_at: datetime | None
    confirmed_seq: int | None
    device_last_seq: int | None
    device_last_seq_at: datetime | None

    @property
    def name(self) -> str:
        return f"{self.site}/{self.device}"


@dataclass
class WriteReport:
    """What one committed batch did; the notices are logged after the commit."""

    stored: int = 0
    duplicates: int = 0
    rejected: int = 0
    updates: int = 0
    #: (logging level, message) for gaps opened or closed and seq resets
    notices: list[tuple[int, str]] = field(default_factory=list)
    #: devices that received a result filling a gap: their open gaps are re-counted
    late: set[Device] = field(default_factory=set)
    #: the confirmation to publish, after the commit, to each device that sent a result
    #: or a hello in this batch (None: nothing of its current epoch stored from seq 1)
    confirms: dict[Device, Confirmation | None] = field(default_factory=dict)


class Store:
    """The collector's writer on one database engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def write(self, records: Sequence[Record], received_at: datetime) -> WriteReport:
        """Apply ``records`` in one transaction; committed when this returns.

        Raises
        ------
        sqlalchemy.exc.SQLAlchemyError
            Nothing was committed: the caller retries, or writes the records one
            by one to find one the database refuses.
        """
        report, tally = WriteReport(), Tally()
        with self.engine.begin() as connection:
            for record in records:
                if isinstance(record, Rejected):
                    self._reject(connection, record, received_at)
                    report.rejected += 1
            for device, group in _by_device(records):
                state = self._lock_device(connection, device, received_at)
                for record in group:
                    self._apply(connection, state, record, received_at, report, tally)
                if any(isinstance(r, ResultRecord | HelloRecord) for r in group):
                    state.confirmed_seq, report.confirms[device] = advance(
                        connection, *device, state.epoch, state.confirmed_seq or 0
                    )
                self._save_device(connection, state)
            tally.flush(connection)
        return report

    # -- devices ----------------------------------------------------------------------------

    def _lock_device(self, connection: Connection, device: Device, now: datetime) -> DeviceState:
        site, name = device
        self._insert_new(
            connection, devices, ("site", "device"),
            {"site": site, "device": name, "first_seen": now, "epoch": 1, "max_seq": 0},
        )  # fmt: skip
        row = (
            connection.execute(
                select(devices)
                .where(devices.c.site == site, devices.c.device == name)
                .with_for_update()
            )
            .mappings()
            .one()
        )
        return DeviceState(**{key: row[key] for key in DeviceState.__dataclass_fields__})

    def _save_device(self, connection: Connection, state: DeviceState) -> None:
        values = {
            key: getattr(state, key)
            for key in DeviceState.__dataclass_fields__
            if key not in ("site", "device")
        }
        connection.execute(
            update(devices)
            .where(devices.c.site == state.site, devices.c.device == state.device)
            .values(**values)
        )

    def _apply(
        self,
        connection: Connection,
        state: DeviceState,
        record: DeviceRecord,
        now: datetime,
        report: WriteReport,
        tally: Tally,
    ) -> None:
        if isinstance(record, ResultRecord):
            self._result(connection, state, record, now, report, tally)
            return
        report.updates += 1
        if isinstance(record, HelloRecord):
            state.device_last_seq, state.device_last_seq_at = record.last_seq, now
        elif isinstance(record, StatusRecord):
            if record.status != state.status:
                state.status, state.status_since = record.status, now
        elif isinstance(record, HealthRecord):
            if _is_newer_health(state, record, now):
                tally.health(state.site, state.device, state.health, record.document,
                             record.at or now)  # fmt: skip
                state.health, state.health_at = record.document, record.at
                state.health_received_at = now
                last_seq = announced_last_seq(record.document)
                if last_seq is not None and last_seq != state.device_last_seq:
                    state.device_last_seq, state.device_last_seq_at = last_seq, now
        else:
            self._event(connection, record, now)

    def _event(self, connection: Connection, record: EventRecord, now: datetime) -> None:
        row = {
            "digest": record.digest,
            "site": record.site,
            "device": record.device,
            "kind": record.kind,
            "at": record.at,
            "document": record.document,
            "received_at": now,
            "deliveries": 1,
        }
        if not self._insert_new(connection, events, ("digest",), row):
            connection.execute(
                update(events)
                .where(events.c.digest == record.digest)
                .values(deliveries=events.c.deliveries + 1)
            )

    # -- results ----------------------------------------------------------------------------

    def _result(
        self,
        connection: Connection,
        state: DeviceState,
        record: ResultRecord,
        now: datetime,
        report: WriteReport,
        tally: Tally,
    ) -> None:
        if self._count_redelivery(connection, record.id, now):
            report.duplicates += 1
            return
        missing = self._place_in_sequence(connection, state, record, now, report)
        row = _result_row(record, state.epoch, now)
        if not self._insert_new(connection, results, ("id",), row):
            # Another collector stored the same id in between: a re-delivery.
            self._count_redelivery(connection, record.id, now)
            report.duplicates += 1
            return
        store_shadow(connection, record)
        report.stored += 1
        tally.result(record)
        tally.missing(state.site, state.device, missing)
        state.max_seq = max(state.max_seq, record.seq)
        if state.last_result_at is None or record.created_at > state.last_result_at:
            state.last_result_at = record.created_at

    def _count_redelivery(self, connection: Connection, result_id: str, now: datetime) -> bool:
        counted = connection.execute(
            update(results)
            .where(results.c.id == result_id)
            .values(deliveries=results.c.deliveries + 1, last_delivery_at=now)
        )
        return counted.rowcount > 0

    def _place_in_sequence(
        self,
        connection: Connection,
        state: DeviceState,
        record: ResultRecord,
        now: datetime,
        report: WriteReport,
    ) -> int:
        """Assign the result's epoch and note the gap it opens or closes.

        Returns the change of the device's count of missing seq numbers.
        """
        seq = record.seq
        if seq <= state.max_seq and self._seq_taken(connection, state, seq):
            self._begin_epoch(connection, state, record, now, report)
        if seq > state.max_seq + 1:
            first = state.max_seq + 1
            missing = f"seq {first}" if first == seq - 1 else f"seq {first}..{seq - 1}"
            report.notices.append(
                (logging.WARNING, f"{state.name}: gap, {missing} missing (epoch {state.epoch})")
            )
            return seq - first
        if seq < state.max_seq:
            report.notices.append(
                (logging.INFO, f"{state.name}: late seq {seq} arrived (epoch {state.epoch})")
            )
            report.late.add((state.site, state.device))
            return -1
        return 0

    def _seq_taken(self, connection: Connection, state: DeviceState, seq: int) -> bool:
        taken = connection.execute(
            select(results.c.id)
            .where(
                results.c.site == state.site,
                results.c.device == state.device,
                results.c.epoch == state.epoch,
                results.c.seq == seq,
            )
            .limit(1)
        ).first()
        return taken is not None

    def _begin_epoch(
        self,
        connection: Connection,
        state: DeviceState,
        record: ResultRecord,
        now: datetime,
        report: WriteReport,
    ) -> None:
        connection.execute(
            seq_resets.insert().values(
                site=state.site,
                device=state.device,
                epoch=state.epoch + 1,
                previous_max_seq=state.max_seq,
                first_seq=record.seq,
                result_id=record.id,
                detected_at=now,
            )
        )
        report.notices.append(
            (
                logging.WARNING,
                f"{state.name}: seq went back from {state.max_seq} to {record.seq} with a new "
                f"result (journal wiped?); numbering epoch {state.epoch + 1} begins",
            )
        )
        state.epoch += 1
        state.max_seq = 0
        state.confirmed_seq = 0

    # -- rejects ----------------------------------------------------------------------------

    def _reject(self, connection: Connection, record: Rejected, now: datetime) -> None:
        connection.execute(
            rejects.insert().values(
                topic=record.topic,
                payload=record.payload,
                text=_as_text(record.payload),
                reason=record.reason,
                detail=record.detail,
                received_at=now,
            )
        )

    def _insert_new(
        self, connection: Connection, table: Table, key: tuple[str, ...], row: dict[str, Any]
    ) -> bool:
        """``INSERT ... ON CONFLICT (key) DO NOTHING``; False when the key was there.

        Told by ``RETURNING`` rather than the row count, which the psycopg dialect
        does not report for an INSERT (-1).
        """
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        statement = (
            dialect.insert(table)
            .values(**row)
            .on_conflict_do_nothing(index_elements=key)
            .returning(table.c[key[0]])
        )
        return connection.execute(statement).first() is not None


def _is_newer_health(state: DeviceState, record: HealthRecord, now: datetime) -> bool:
    """Whether ``record`` should replace the stored health.

    Two collectors write the same health messages, one possibly a little behind
    the other: an older ``at`` must not overwrite a newer one. But a device whose
    clock was set back must not be ignored until its clock catches up, so a
    stored health older than :data:`HEALTH_ORDER_WINDOW` is always replaced.
    """
    if record.at is None or state.health_at is None or record.at >= state.health_at:
        return True
    received = state.health_received_at
    return received is None or now - received > HEALTH_ORDER_WINDOW


def _by_device(records: Iterable[Record]) -> Iterable[tuple[Device, list[DeviceRecord]]]:
    """Device records grouped per device, devices in a fixed order, arrival order kept."""
    kept: list[DeviceRecord] = [r for r in records if not isinstance(r, Rejected)]
    kept.sort(key=lambda record: (record.site, record.device))  # stable: arrival order kept
    for device, group in groupby(kept, key=lambda record: (record.site, record.device)):
        yield device, list(group)


def _result_row(record: ResultRecord, epoch: int, now: datetime) -> dict[str, Any]:
    return {
        "id": record.id,
        "site": record.site,
        "device": record.device,
        "epoch": epoch,
        "seq": record.seq,
        "study_uid": record.study_uid,
        "accession": record.accession,
        "score": record.score,
        "suspicious": record.suspicious,
        "threshold": record.threshold,
        "closed_by": record.closed_by,
        "model_name": record.model_name,
        "model_version": record.model_version,
        "model_sha256": record.model_sha256,
        "model_backend": record.model_backend,
        "timings_ms": record.timings_ms,
        "document": record.document,
        "created_at": record.created_at,
        "received_at": now,
        "deliveries": 1,
        "last_delivery_at": now,
    }


def _as_text(payload: bytes) -> str | None:
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return None if "\x00" in text else text  # PostgreSQL text holds no NUL
