"""The store's statements for a whole batch: a few round trips, whatever its boxes.

With 200 boxes sending in turn, nearly every result of a batch belongs to another
box, so one statement per result (or per box) costs a database round trip each.
Here a batch's results are looked up, inserted and re-counted with one statement
each, its devices inserted, locked and saved with one each:

    lock every device of the batch, in key order      one SELECT ... FOR UPDATE
    (insert the new devices, lock them)               (only when the batch has new ones)
    which ids are stored already                      one SELECT ... WHERE id IN
    insert the new results (ON CONFLICT DO NOTHING)   one INSERT ... RETURNING id
    count the re-deliveries                           one executemany UPDATE (if any)
    save the devices                                  one UPDATE (PostgreSQL) or executemany

The rows are locked in key order (``ORDER BY site, device`` under ``FOR UPDATE``),
so two collectors of one group wait for each other instead of deadlocking.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy import Connection, RowMapping, Table, bindparam, select, text, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite

from edge.hub.messages import ResultRecord
from edge.hub.tables import devices, results

Device = tuple[str, str]
#: ids per ``IN (...)`` list: well inside every driver's limit on parameters
IN_CHUNK = 900


def insert_ignoring(connection: Connection, table: Table, key: tuple[str, ...]) -> Any:
    """``INSERT ... ON CONFLICT (key) DO NOTHING`` in the connection's dialect."""
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    return dialect.insert(table).on_conflict_do_nothing(index_elements=key)


def lock_devices(
    connection: Connection, keys: list[Device], now: datetime
) -> dict[Device, RowMapping]:
    """Every device of ``keys`` (inserted if new), its row locked until the commit."""
    found = _locked(connection, keys)
    missing = [key for key in keys if key not in found]
    if missing:
        new = [{"site": site, "device": name, "first_seen": now, "epoch": 1, "max_seq": 0}
               for site, name in missing]  # fmt: skip
        connection.execute(insert_ignoring(connection, devices, ("site", "device")), new)
        found.update(_locked(connection, missing))
    return found


def _locked(connection: Connection, keys: list[Device]) -> dict[Device, RowMapping]:
    found: dict[Device, RowMapping] = {}
    for part in _chunks(sorted(keys)):
        query = (
            select(devices)
            .where(tuple_(devices.c.site, devices.c.device).in_(part))
            .order_by(devices.c.site, devices.c.device)
            .with_for_update()
        )
        for row in connection.execute(query).mappings():
            found[(row["site"], row["device"])] = row
    return found


def save_devices(connection: Connection, rows: list[dict[str, Any]]) -> None:
    """Write each device's new values (``rows`` carry ``site`` and ``device``) at once."""
    if not rows:
        return
    names = [name for name in rows[0] if name not in ("site", "device")]
    if connection.dialect.name == "postgresql":
        assignments = ", ".join(f'"{name}" = new."{name}"' for name in names)
        connection.execute(
            text(f"UPDATE devices SET {assignments} FROM {_recordset('devices')} AS new "
                 "WHERE devices.site = new.site AND devices.device = new.device"),
            {"rows": _as_json(rows)},
        )  # fmt: skip
        return
    statement = (
        update(devices)
        .where(devices.c.site == bindparam("key_site"), devices.c.device == bindparam("key_device"))
        .values({name: bindparam(f"new_{name}") for name in names})
    )
    params = [{"key_site": row["site"], "key_device": row["device"],
               **{f"new_{name}": row[name] for name in names}} for row in rows]  # fmt: skip
    connection.execute(statement, params)


def insert_results(connection: Connection, rows: list[dict[str, Any]]) -> set[str]:
    """Insert ``rows`` into ``results`` where their id is new; the ids inserted.

    On PostgreSQL the rows travel as one JSON parameter unpacked by the server
    (``json_populate_recordset``): a multi-row VALUES list of 20 parameters a row
    costs the driver more time to prepare than the server to insert.
    """
    if connection.dialect.name == "postgresql":
        names = ", ".join(f'"{column.name}"' for column in results.columns)
        statement = text(
            f"INSERT INTO results ({names}) SELECT {names} FROM {_recordset('results')} "
            "ON CONFLICT (id) DO NOTHING RETURNING id"
        )
        return set(connection.execute(statement, {"rows": _as_json(rows)}).scalars())
    statement = insert_ignoring(connection, results, ("id",)).returning(results.c.id)
    return set(connection.execute(statement, rows).scalars())


def _recordset(table: str) -> str:
    return f"json_populate_recordset(NULL::{table}, CAST(:rows AS json))"


def _as_json(rows: list[dict[str, Any]]) -> str:
    return json.dumps(rows, default=_json_value)


def _json_value(value: Any) -> str:
    if isinstance(value, datetime | date):
        return value.isoformat()
    raise TypeError(f"cannot send a {type(value).__name__} as JSON")


def stored_ids(connection: Connection, ids: Iterable[str]) -> set[str]:
    """Which of ``ids`` the results table holds already."""
    found: set[str] = set()
    for part in _chunks(sorted(set(ids))):
        query = select(results.c.id).where(results.c.id.in_(part))
        found.update(connection.execute(query).scalars())
    return found


@dataclass
class Pending:
    """A new result of the batch, waiting for the batch's insert."""

    record: ResultRecord
    row: dict[str, Any]
    #: the change of its device's count of missing seq numbers, once it is stored
    missing: int


@dataclass
class ResultBatch:
    """The batch's results: new ones to insert, re-deliveries to count."""

    known: set[str]
    pending: dict[str, Pending] = field(default_factory=dict)
    redelivered: Counter[str] = field(default_factory=Counter)
    #: (site, device, epoch, seq) of the pending results, for the seq checks
    taken: set[tuple[str, str, int, int]] = field(default_factory=set)
    #: the seq numbers the insert stored, and their ids, per device and epoch
    stored: dict[tuple[Device, int], dict[int, str]] = field(default_factory=dict)

    def is_redelivery(self, result_id: str) -> bool:
        return result_id in self.known or result_id in self.pending

    def add(self, record: ResultRecord, row: dict[str, Any], missing: int) -> None:
        self.pending[record.id] = Pending(record, row, missing)
        self.taken.add((record.site, record.device, row["epoch"], record.seq))

    def insert(self, connection: Connection) -> list[Pending]:
        """Insert the pending results; those stored (another writer may have been first)."""
        if not self.pending:
            return []
        inserted = insert_results(connection, [pending.row for pending in self.pending.values()])
        for result_id in set(self.pending) - inserted:
            self.redelivered[result_id] += 1  # stored in between by another collector
        stored = [pending for key, pending in self.pending.items() if key in inserted]
        for pending in stored:
            record = pending.record
            numbering = ((record.site, record.device), pending.row["epoch"])
            self.stored.setdefault(numbering, {})[record.seq] = record.id
        return stored

    def confirmable(self, device: Device, epoch: int, confirmed: int) -> tuple[int, str] | None:
        """``(seq, id)`` up to which this batch's stored results continue ``confirmed``
        without a gap, for a device whose results above ``confirmed`` are all in this
        batch; None when they do not continue it."""
        seqs = self.stored.get((device, epoch), {})
        last = None
        while confirmed + 1 in seqs:
            confirmed += 1
            last = (confirmed, seqs[confirmed])
        return last

    def count_redeliveries(self, connection: Connection, now: datetime) -> None:
        if not self.redelivered:
            return
        statement = (
            update(results)
            .where(results.c.id == bindparam("key_id"))
            .values(deliveries=results.c.deliveries + bindparam("times"), last_delivery_at=now)
        )
        params = [{"key_id": key, "times": n} for key, n in sorted(self.redelivered.items())]
        connection.execute(statement, params)


def result_row(record: ResultRecord, epoch: int, now: datetime) -> dict[str, Any]:
    """The ``results`` row of ``record``, first delivered ``now``."""
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


def _chunks(items: list[Any]) -> Iterable[list[Any]]:
    for start in range(0, len(items), IN_CHUNK):
        yield items[start : start + IN_CHUNK]
