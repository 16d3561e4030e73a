"""Writing what the collector received: one transaction per batch, idempotent.

A result is stored once per ``id``; a re-delivery only raises its ``deliveries``
count. Every device of the batch is locked first, with one statement, in a fixed
order (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite's write lock covers the
whole file), so that two collectors writing into one database serialise per
device instead of deadlocking. The messages are then applied device by device
in memory, and the batch's results are inserted and its devices saved with a
few statements for the whole batch (:mod:`edge.hub.store_batch`): a round trip
per result would cap the ingest at about a thousand a second on a quiet server.

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

from sqlalchemy import Connection, Engine, select, update

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
    ShadowRecord,
    StatusRecord,
)
from edge.hub.store_batch import (
    ResultBatch,
    insert_ignoring,
    lock_devices,
    result_row,
    save_devices,
    stored_ids,
)
from edge.hub.tables import events, rejects, results, seq_resets

log = logging.getLogger(__name__)

#: how far behind another collector's write of the same device's health may be
HEALTH_ORDER_WINDOW = timedelta(seconds=60)

Device = tuple[str, str]
DeviceRecord = ResultRecord | ShadowRecord | HealthRecord | StatusRecord | EventRecord | HelloRecord


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

    def write(self, records: Sequence[Record], now: datetime) -> WriteReport:
        """Apply ``records`` in one transaction; committed when this returns.

        Raises
        ------
        sqlalchemy.exc.SQLAlchemyError
            Nothing was committed: the caller retries, or writes the records one
            by one to find one the database refuses.
        """
        report, tally = WriteReport(), Tally()
        with self.engine.begin() as connection:
            self._reject_all(connection, [r for r in records if isinstance(r, Rejected)], now)
            report.rejected = sum(isinstance(record, Rejected) for record in records)
            groups = list(_by_device(records))
            rows = lock_devices(connection, [device for device, _ in groups], now)
            ids = [record.id for record in records if isinstance(record, ResultRecord)]
            batch = ResultBatch(known=stored_ids(connection, ids))
            states = []
            for device, group in groups:
                state = DeviceState(**{key: rows[device][key] for key in _STATE_FIELDS})
                for record in group:
                    self._apply(connection, state, record, now, report, tally, batch)
                states.append(state)
            self._store_results(connection, batch, now, report, tally)
            for (device, group), state in zip(groups, states, strict=True):
                if any(isinstance(r, ResultRecord | HelloRecord) for r in group):
                    self._confirm(connection, state, rows[device], batch, report)
            save_devices(connection, [_device_values(state) for state in states])
            tally.flush(connection)
        return report

    def _store_results(
        self,
        connection: Connection,
        batch: ResultBatch,
        now: datetime,
        report: WriteReport,
        tally: Tally,
    ) -> None:
        """Insert the batch's new results, count its re-deliveries, tally what was stored."""
        stored = batch.insert(connection)
        report.duplicates += len(batch.pending) - len(stored)
        report.stored = len(stored)
        for pending in stored:
            tally.result(pending.record)
            tally.missing(pending.record.site, pending.record.device, pending.missing)
        batch.count_redeliveries(connection, now)

    def _confirm(
        self,
        connection: Connection,
        state: DeviceState,
        start: Any,
        batch: ResultBatch,
        report: WriteReport,
    ) -> None:
        """Move the device's confirmation up over what is now stored (results committed
        with this transaction only: the collector publishes it after the commit).

        When everything up to the device's highest seq was confirmed before this batch,
        the batch's own results are all there is to count, and no query is needed.
        """
        device = (state.site, state.device)
        confirmed = state.confirmed_seq or 0
        if start["epoch"] == state.epoch and confirmed == start["max_seq"]:
            moved = batch.confirmable(device, state.epoch, confirmed)
            if moved is not None:
                state.confirmed_seq, result_id = moved
                report.confirms[device] = Confirmation(
                    state.site, state.device, moved[0], result_id, state.epoch
                )
                return
        state.confirmed_seq, report.confirms[device] = advance(
            connection, *device, state.epoch, confirmed
        )

    # -- devices ----------------------------------------------------------------------------

    def _apply(
        self,
        connection: Connection,
        state: DeviceState,
        record: DeviceRecord,
        now: datetime,
        report: WriteReport,
        tally: Tally,
        batch: ResultBatch,
    ) -> None:
        if isinstance(record, ResultRecord):
            self._result(connection, state, record, now, report, batch)
            return
        report.updates += 1
        if isinstance(record, ShadowRecord):
            store_shadow(connection, record)
        elif isinstance(record, HelloRecord):
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
        statement = insert_ignoring(connection, events, ("digest",)).returning(events.c.digest)
        if connection.execute(statement, row).first() is None:
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
        batch: ResultBatch,
    ) -> None:
        """Place a new result in its device's numbering; it is inserted with the batch."""
        if batch.is_redelivery(record.id):
            batch.redelivered[record.id] += 1
            report.duplicates += 1
            return
        missing = self._place_in_sequence(connection, state, record, now, report, batch)
        batch.add(record, result_row(record, state.epoch, now), missing)
        state.max_seq = max(state.max_seq, record.seq)
        if state.last_result_at is None or record.created_at > state.last_result_at:
            state.last_result_at = record.created_at

    def _place_in_sequence(
        self,
        connection: Connection,
        state: DeviceState,
        record: ResultRecord,
        now: datetime,
        report: WriteReport,
        batch: ResultBatch,
    ) -> int:
        """Assign the result's epoch and note the gap it opens or closes.

        Returns the change of the device's count of missing seq numbers.
        """
        seq = record.seq
        if seq <= state.max_seq and (
            (state.site, state.device, state.epoch, seq) in batch.taken
            or self._seq_taken(connection, state, seq)
        ):
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

    def _reject_all(self, connection: Connection, records: list[Rejected], now: datetime) -> None:
        if not records:
            return
        rows = [{"topic": record.topic, "payload": record.payload, "text": _as_text(record.payload),
                 "reason": record.reason, "detail": record.detail, "received_at": now}
                for record in records]  # fmt: skip
        connection.execute(rejects.insert(), rows)


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


_STATE_FIELDS = tuple(DeviceState.__dataclass_fields__)


def _device_values(state: DeviceState) -> dict[str, Any]:
    """The device row's columns as ``state`` holds them."""
    return {key: getattr(state, key) for key in _STATE_FIELDS}


def _by_device(records: Iterable[Record]) -> Iterable[tuple[Device, list[DeviceRecord]]]:
    """Device records grouped per device, devices in a fixed order, arrival order kept."""
    kept: list[DeviceRecord] = [r for r in records if not isinstance(r, Rejected)]
    kept.sort(key=lambda record: (record.site, record.device))  # stable: arrival order kept
    for device, group in groupby(kept, key=lambda record: (record.site, record.device)):
        yield device, list(group)


def _as_text(payload: bytes) -> str | None:
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return None if "\x00" in text else text  # PostgreSQL text holds no NUL
