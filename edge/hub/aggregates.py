"""The console's aggregates, counted as results and health arrive.

The store hands each newly stored result, each newer health and each change of
a device's missing-``seq`` count to a :class:`Tally`; at the end of the batch's
transaction the tally adds its sums to the aggregate tables, one upsert per
key, keys in a fixed order (two collectors adding to the same rows serialise
instead of deadlocking). Re-deliveries are never counted.

Technical defects come from the boxes' health counters (``received``,
``quarantined_by_reason``, ``skipped_by_reason``): the difference between a
device's health and its previous one is added to that hour; counters that went
down (the daemon restarted) count from zero.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

from sqlalchemy import Connection, Table
from sqlalchemy.dialects import postgresql, sqlite

from edge.hub.messages import ResultRecord
from edge.hub.tables import defect_hours, device_gaps, outcome_bins, result_bins, result_days

#: score histogram: bins of 1/SCORE_BINS over [0, 1]
SCORE_BINS = 20
#: latency histogram: LATENCY_STEPS bins per doubling, from 1 ms
LATENCY_STEPS = 4
LATENCY_BINS = 80
STANDARD_VIEWS = 4

Key = tuple[Any, ...]


def engine_label(name: str, version: str) -> str:
    """The engine as the aggregates and pages name it: model name and version."""
    return f"{name} {version}"


def score_bin(score: float, bins: int = SCORE_BINS) -> int:
    return min(max(int(score * bins), 0), bins - 1)


def latency_bin(milliseconds: float) -> int:
    if milliseconds <= 1:
        return 0
    return min(int(math.log2(milliseconds) * LATENCY_STEPS), LATENCY_BINS - 1)


def latency_upper_ms(bin_index: int) -> float:
    """The upper edge of a latency bin: a percentile read from bins errs upwards."""
    return float(2 ** ((bin_index + 1) / LATENCY_STEPS))


class Tally:
    """Sums of one batch, added to the aggregate tables by :meth:`flush`."""

    def __init__(self) -> None:
        self.days: dict[Key, list[float]] = defaultdict(lambda: [0, 0, 0, 0.0, 0])
        self.bins: dict[Key, int] = defaultdict(int)
        self.defects: dict[Key, int] = defaultdict(int)
        self.gaps: dict[Key, int] = defaultdict(int)

    def result(self, record: ResultRecord) -> None:
        day = record.created_at.date()
        engine = engine_label(record.model_name, record.model_version)
        sums = self.days[(day, record.site, engine)]
        sums[0] += 1
        sums[1] += int(record.suspicious)
        missing = record.document.get("missing_views") or []
        sums[2] += int(bool(missing))
        self.bins[(day, record.site, engine, "score", score_bin(record.score))] += 1
        total = record.timings_ms.get("total")
        if total is not None:
            sums[3] += total
            sums[4] += 1
            self.bins[(day, record.site, engine, "latency", latency_bin(total))] += 1

    def missing(self, site: str, device: str, change: int) -> None:
        if change:
            self.gaps[(site, device)] += change

    def health(
        self,
        site: str,
        device: str,
        previous: Mapping[str, Any] | None,
        current: Mapping[str, Any],
        at: datetime,
    ) -> None:
        """Add what the box counted since its previous health to the hour of ``at``."""
        hour = at.replace(minute=0, second=0, microsecond=0)
        engine = _health_engine(current)
        for (kind, reason), count in counter_changes(previous, current).items():
            self.defects[(hour, site, device, engine, kind, reason)] += count

    def flush(self, connection: Connection) -> None:
        """Add every sum to its row, keys in order; called inside the batch's transaction."""
        day_rows = [
            {"day": k[0], "site": k[1], "engine": k[2], "results": v[0], "suspicious": v[1],
             "incomplete": v[2], "latency_ms_sum": v[3], "latency_n": v[4]}
            for k, v in sorted(self.days.items())
        ]  # fmt: skip
        add_counts(connection, result_days, day_rows)
        bin_names = ("day", "site", "engine", "kind", "bin")
        add_counts(connection, result_bins, _rows(bin_names, "count", self.bins))
        defect_names = ("hour", "site", "device", "engine", "kind", "reason")
        add_counts(connection, defect_hours, _rows(defect_names, "count", self.defects))
        add_counts(connection, device_gaps, _rows(("site", "device"), "missing", self.gaps))


def _rows(names: tuple[str, ...], column: str, sums: Mapping[Key, int]) -> list[dict[str, Any]]:
    return [{**dict(zip(names, key, strict=True)), column: n} for key, n in sorted(sums.items())]


def add_counts(connection: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    """``INSERT ... ON CONFLICT (primary key) DO UPDATE SET n = n + excluded.n`` per row."""
    if not rows:
        return
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    keys = [column.name for column in table.primary_key.columns]
    counts = [name for name in rows[0] if name not in keys]
    statement = dialect.insert(table)
    statement = statement.on_conflict_do_update(
        index_elements=keys,
        set_={name: table.c[name] + statement.excluded[name] for name in counts},
    )
    connection.execute(statement, rows)


def add_outcome(
    connection: Connection,
    key: tuple[date, str, str, int, bool],
    label: str,
    sign: int,
) -> None:
    """Count (``sign`` 1) or uncount (-1) one outcome of a result in ``outcome_bins``."""
    if label not in ("positive", "negative"):
        return
    day, site, engine, bin_index, suspicious = key
    row = {"day": day, "site": site, "engine": engine, "bin": bin_index,
           "suspicious": suspicious, "positives": sign * (label == "positive"),
           "negatives": sign * (label == "negative")}  # fmt: skip
    add_counts(connection, outcome_bins, [row])


def counter_changes(
    previous: Mapping[str, Any] | None, current: Mapping[str, Any]
) -> dict[tuple[str, str], int]:
    """``(kind, reason) -> count`` the box added between two health documents."""
    now, before = _counters(current), _counters(previous or {})
    if any(now.get(key, 0) < count for key, count in before.items()):
        before = {}  # the daemon restarted: its counters began again at zero
    changes = {key: count - before.get(key, 0) for key, count in now.items()}
    return {key: change for key, change in changes.items() if change > 0}


def _counters(health: Mapping[str, Any]) -> dict[tuple[str, str], int]:
    counters = health.get("counters")
    if not isinstance(counters, dict):
        return {}
    found: dict[tuple[str, str], int] = {}
    if _count(counters.get("received")) is not None:
        found[("received", "")] = _count(counters.get("received")) or 0
    for kind in ("quarantined", "skipped"):
        by_reason = counters.get(f"{kind}_by_reason")
        if isinstance(by_reason, dict):
            for reason, value in by_reason.items():
                count = _count(value)
                if count is not None:
                    found[(kind, str(reason)[:64])] = count
    return found


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _health_engine(health: Mapping[str, Any]) -> str:
    engine = health.get("engine")
    if not isinstance(engine, dict):
        return "-"
    return engine_label(str(engine.get("name", "-")), str(engine.get("version", "-")))[:200]
