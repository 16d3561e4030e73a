"""The programme's monitoring, per site and engine version, from the aggregates alone.

Technical monitoring: volume, suspicious rate, latency and defects by reason
per day. Drift: each (site, engine)'s score histogram in the period against its
reference (its first ``monitoring.reference_days`` days at that site, or the
reference period asked for), as PSI and KS with an alarm level. Clinical
monitoring: sensitivity, specificity and AUC against the outcomes recorded for
the period's results, with an alarm when the AUC's lower bound is below
``monitoring.auc_floor``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, func, or_, select, tuple_

from edge.hub.aggregates import LATENCY_BINS, SCORE_BINS, latency_upper_ms
from edge.hub.config import MonitoringConfig
from edge.hub.console import stats
from edge.hub.console.stats import Interval
from edge.hub.tables import defect_hours, outcome_bins, result_bins, result_days

Group = tuple[str, str]  # (site, engine)


@dataclass(frozen=True)
class Selection:
    since: date
    #: exclusive
    until: date
    site: str | None = None
    engine: str | None = None
    reference: tuple[date, date] | None = None

    @property
    def last_day(self) -> date:
        return self.until - timedelta(days=1)


@dataclass(frozen=True)
class DayPoint:
    day: date
    results: int
    suspicious_rate: float | None
    latency_p95_ms: float | None
    defect_rate: float | None


@dataclass(frozen=True)
class Accuracy:
    positives: int
    negatives: int
    sensitivity: Interval | None
    specificity: Interval | None
    auc: Interval | None
    #: ``alarm`` when the AUC's lower bound is below the floor, ``ok``, or ``unknown``
    level: str


@dataclass(frozen=True)
class GroupRow:
    site: str
    engine: str
    results: int
    suspicious_rate: float | None
    psi: float | None
    ks: float | None
    drift: str
    accuracy: Accuracy


@dataclass(frozen=True)
class Monitoring:
    selection: Selection
    days: list[DayPoint]
    groups: list[GroupRow]
    reference_histogram: list[int]
    current_histogram: list[int]
    psi: float | None
    ks: float | None
    drift: str
    defects_by_reason: dict[str, int]
    received: int
    accuracy: Accuracy


def monitoring(connection: Connection, chosen: Selection, config: MonitoringConfig) -> Monitoring:
    current = _score_bins(connection, chosen, chosen.since, chosen.until)
    reference = _reference_bins(connection, chosen, config.reference_days)
    outcomes_by_group = _outcomes(connection, chosen)
    groups = _groups(connection, chosen, config, current, reference, outcomes_by_group)
    ref_total, cur_total = _sum_histograms(reference.values()), _sum_histograms(current.values())
    defects, received, defect_days = _defects(connection, chosen)
    psi = stats.psi(ref_total, cur_total)
    return Monitoring(
        selection=chosen,
        days=_days(connection, chosen, defect_days),
        groups=groups,
        reference_histogram=ref_total,
        current_histogram=cur_total,
        psi=psi,
        ks=stats.ks_distance(ref_total, cur_total),
        drift=stats.drift_level(psi, config.psi_warn, config.psi_alarm),
        defects_by_reason=defects,
        received=received,
        accuracy=_accuracy(outcomes_by_group.values(), config.auc_floor),
    )


def _where(table: Any, chosen: Selection, since: date, until: date) -> list[Any]:
    clauses = [table.c.day >= since, table.c.day < until]
    if chosen.site:
        clauses.append(table.c.site == chosen.site)
    if chosen.engine:
        clauses.append(table.c.engine == chosen.engine)
    return clauses


def _score_bins(
    connection: Connection, chosen: Selection, since: date, until: date
) -> dict[Group, list[int]]:
    query = (
        select(result_bins.c.site, result_bins.c.engine, result_bins.c.bin,
               func.sum(result_bins.c.count))
        .where(result_bins.c.kind == "score", *_where(result_bins, chosen, since, until))
        .group_by(result_bins.c.site, result_bins.c.engine, result_bins.c.bin)
    )  # fmt: skip
    found: dict[Group, list[int]] = defaultdict(lambda: [0] * SCORE_BINS)
    for site, engine, bin_index, count in connection.execute(query):
        found[(site, engine)][bin_index] += int(count)
    return dict(found)


def _reference_bins(
    connection: Connection, chosen: Selection, reference_days: int
) -> dict[Group, list[int]]:
    """Each group's reference histogram: the period asked for, or its first days."""
    if chosen.reference is not None:
        return _score_bins(connection, chosen, *chosen.reference)
    firsts = _first_days(connection, chosen)
    if not firsts:
        return {}
    span = timedelta(days=reference_days)
    # Each group's own first days, in the query (only the sums per bin come back), one
    # condition per distinct first day: most groups of a programme begin together.
    starting: dict[date, list[Group]] = defaultdict(list)
    for group, first in sorted(firsts.items()):
        starting[first].append(group)
    periods = [
        and_(result_bins.c.day >= first, result_bins.c.day < first + span,
             tuple_(result_bins.c.site, result_bins.c.engine).in_(groups))
        for first, groups in sorted(starting.items())
    ]  # fmt: skip
    query = (
        select(result_bins.c.site, result_bins.c.engine, result_bins.c.bin,
               func.sum(result_bins.c.count))
        .where(result_bins.c.kind == "score", or_(*periods))
        .group_by(result_bins.c.site, result_bins.c.engine, result_bins.c.bin)
    )  # fmt: skip
    found: dict[Group, list[int]] = defaultdict(lambda: [0] * SCORE_BINS)
    for site, engine, bin_index, count in connection.execute(query):
        found[(site, engine)][bin_index] += int(count)
    return dict(found)


def _first_days(connection: Connection, chosen: Selection) -> dict[Group, date]:
    query = select(result_days.c.site, result_days.c.engine, func.min(result_days.c.day))
    if chosen.site:
        query = query.where(result_days.c.site == chosen.site)
    if chosen.engine:
        query = query.where(result_days.c.engine == chosen.engine)
    query = query.group_by(result_days.c.site, result_days.c.engine)
    return {(site, engine): first for site, engine, first in connection.execute(query)}


def _groups(
    connection: Connection,
    chosen: Selection,
    config: MonitoringConfig,
    current: dict[Group, list[int]],
    reference: dict[Group, list[int]],
    accuracy: dict[Group, list[list[int]]],
) -> list[GroupRow]:
    volumes = _volumes(connection, chosen)
    rows = []
    for group in sorted(set(volumes) | set(accuracy)):
        results, suspicious = volumes.get(group, (0, 0))
        ref, cur = reference.get(group, [0] * SCORE_BINS), current.get(group, [0] * SCORE_BINS)
        psi = stats.psi(ref, cur)
        rows.append(GroupRow(
            site=group[0], engine=group[1], results=results,
            suspicious_rate=suspicious / results if results else None,
            psi=psi, ks=stats.ks_distance(ref, cur),
            drift=stats.drift_level(psi, config.psi_warn, config.psi_alarm),
            accuracy=_accuracy([accuracy[group]] if group in accuracy else [], config.auc_floor),
        ))  # fmt: skip
    return rows


def _volumes(connection: Connection, chosen: Selection) -> dict[Group, tuple[int, int]]:
    query = (
        select(result_days.c.site, result_days.c.engine, func.sum(result_days.c.results),
               func.sum(result_days.c.suspicious))
        .where(*_where(result_days, chosen, chosen.since, chosen.until))
        .group_by(result_days.c.site, result_days.c.engine)
    )  # fmt: skip
    return {(s, e): (int(n), int(k)) for s, e, n, k in connection.execute(query)}


def _days(
    connection: Connection, chosen: Selection, defect_days: dict[date, tuple[int, int]]
) -> list[DayPoint]:
    volume = select(result_days.c.day, func.sum(result_days.c.results),
                    func.sum(result_days.c.suspicious))  # fmt: skip
    volume = volume.where(*_where(result_days, chosen, chosen.since, chosen.until))
    counts = {d: (int(n), int(k)) for d, n, k in connection.execute(volume.group_by("day"))}
    latency: dict[date, list[int]] = defaultdict(lambda: [0] * LATENCY_BINS)
    query = (
        select(result_bins.c.day, result_bins.c.bin, func.sum(result_bins.c.count))
        .where(result_bins.c.kind == "latency",
               *_where(result_bins, chosen, chosen.since, chosen.until))
        .group_by(result_bins.c.day, result_bins.c.bin)
    )  # fmt: skip
    for day, bin_index, count in connection.execute(query):
        latency[day][bin_index] += int(count)
    edges = [latency_upper_ms(i) for i in range(LATENCY_BINS)]
    points = []
    day = chosen.since
    while day < chosen.until:
        results, suspicious = counts.get(day, (0, 0))
        received, defects = defect_days.get(day, (0, 0))
        points.append(DayPoint(
            day, results, suspicious / results if results else None,
            stats.percentile_from_bins(latency[day], edges, 0.95) if day in latency else None,
            defects / received if received else None,
        ))  # fmt: skip
        day += timedelta(days=1)
    return points


def _defects(
    connection: Connection, chosen: Selection
) -> tuple[dict[str, int], int, dict[date, tuple[int, int]]]:
    """Defects by reason, files received, and (received, defects) per day, in the period."""
    table = defect_hours
    clauses = [table.c.hour >= _midnight(chosen.since), table.c.hour < _midnight(chosen.until)]
    if chosen.site:
        clauses.append(table.c.site == chosen.site)
    if chosen.engine:
        clauses.append(table.c.engine == chosen.engine)
    query = (
        select(table.c.hour, table.c.kind, table.c.reason, func.sum(table.c.count))
        .where(and_(*clauses))
        .group_by(table.c.hour, table.c.kind, table.c.reason)
    )
    by_reason: dict[str, int] = defaultdict(int)
    per_day: dict[date, list[int]] = defaultdict(lambda: [0, 0])
    for hour, kind, reason, count in connection.execute(query):
        if kind == "received":
            per_day[hour.date()][0] += int(count)
        else:
            by_reason[f"{kind}: {reason}"] += int(count)
            per_day[hour.date()][1] += int(count)
    received = sum(pair[0] for pair in per_day.values())
    return dict(by_reason), received, {d: (p[0], p[1]) for d, p in per_day.items()}


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day)


def _outcomes(connection: Connection, chosen: Selection) -> dict[Group, list[list[int]]]:
    """Per group: [positives per bin, negatives per bin, tp, fn, tn, fp] over the period."""
    table = outcome_bins
    query = (
        select(table.c.site, table.c.engine, table.c.bin, table.c.suspicious,
               func.sum(table.c.positives), func.sum(table.c.negatives))
        .where(*_where(table, chosen, chosen.since, chosen.until))
        .group_by(table.c.site, table.c.engine, table.c.bin, table.c.suspicious)
    )  # fmt: skip
    found: dict[Group, list[list[int]]] = {}
    for site, engine, bin_index, suspicious, pos, neg in connection.execute(query):
        sums = found.setdefault((site, engine), [[0] * SCORE_BINS, [0] * SCORE_BINS, [0, 0, 0, 0]])
        sums[0][bin_index] += int(pos)
        sums[1][bin_index] += int(neg)
        confusion = sums[2]
        confusion[0 if suspicious else 1] += int(pos)
        confusion[3 if suspicious else 2] += int(neg)
    return found


def _accuracy(parts: Any, floor: float) -> Accuracy:
    positives, negatives, confusion = [0] * SCORE_BINS, [0] * SCORE_BINS, [0, 0, 0, 0]
    for pos, neg, counts in parts:
        positives = [a + b for a, b in zip(positives, pos, strict=True)]
        negatives = [a + b for a, b in zip(negatives, neg, strict=True)]
        confusion = [a + b for a, b in zip(confusion, counts, strict=True)]
    tp, fn, tn, fp = confusion
    area = stats.auc(positives, negatives)
    level = "unknown" if area is None else "alarm" if area.low < floor else "ok"
    return Accuracy(sum(positives), sum(negatives), stats.wilson(tp, tp + fn),
                    stats.wilson(tn, tn + fp), area, level)  # fmt: skip


def _sum_histograms(histograms: Any) -> list[int]:
    total = [0] * SCORE_BINS
    for histogram in histograms:
        total = [a + b for a, b in zip(total, histogram, strict=True)]
    return total
