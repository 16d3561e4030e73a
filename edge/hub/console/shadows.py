"""The monitoring page's engine comparison: each pair of versions that scored in shadow.

During a trial a candidate engine scores every study in shadow beside the serving one
(``shadow_scores`` rows beside their ``results``). For the page's site (or every site)
and period, each pair of versions with shadow rows is compared by
:func:`edge.hub.compare.compare_with_pairs`, the function behind ``edge hub compare``,
so the page and the command always agree.

Shadow rows exist only during a trial: the page first asks whether the period has any
(from the small ``shadow_scores`` table and the results' primary key), and reads no
result at all when there are none.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import Connection, exists, func, select

from edge.hub.compare import Comparison, Pair, Period, compare_with_pairs
from edge.hub.console.monitoring import Selection
from edge.hub.tables import results, shadow_scores

#: the scatter plots at most this many studies (an even sample of them)
SCATTER_POINTS = 2000


@dataclass(frozen=True)
class EngineComparison:
    """One site's pair of versions: ``engine`` served while ``other`` scored in shadow
    (or the other way round after a switch; both count)."""

    comparison: Comparison
    #: (score of engine, score of other, the two calls agree) per study, sampled
    points: tuple[tuple[float, float, bool], ...]


def engine_comparisons(connection: Connection, chosen: Selection) -> list[EngineComparison]:
    """Every pair of engine versions with shadow rows in ``chosen``'s site and period."""
    if not _any_shadow(connection, chosen):
        return []
    period = (_midnight(chosen.since), _midnight(chosen.until))
    return [
        _compared(connection, site, engine, other, period)
        for site, engine, other in version_pairs(connection, chosen, period)
    ]


def _any_shadow(connection: Connection, chosen: Selection) -> bool:
    """Whether ``shadow_scores`` has a row at the chosen site: one index probe."""
    rows = select(shadow_scores.c.result_id)
    if chosen.site:
        rows = rows.where(shadow_scores.c.site == chosen.site)
    return bool(connection.execute(select(exists(rows))).scalar())


def version_pairs(
    connection: Connection, chosen: Selection, period: Period
) -> list[tuple[str, str, str]]:
    """(site, engine, other) for each pair of versions with shadow rows in the period:
    ``engine`` is the version that served most of the pair's studies."""
    query = (
        select(shadow_scores.c.site, results.c.model_version,
               shadow_scores.c.model_version.label("shadow_version"), func.count())
        .join(results, results.c.id == shadow_scores.c.result_id)
        .where(results.c.created_at >= period[0], results.c.created_at < period[1])
        .group_by(shadow_scores.c.site, results.c.model_version, shadow_scores.c.model_version)
    )  # fmt: skip
    if chosen.site:
        query = query.where(shadow_scores.c.site == chosen.site)
    if chosen.engine:
        chosen_engine = (results.c.model_version == chosen.engine) | (
            shadow_scores.c.model_version == chosen.engine
        )
        query = query.where(chosen_engine)
    counts: Counter[tuple[str, str, str]] = Counter()
    for site, serving, shadow, count in connection.execute(query):
        counts[(site, serving, shadow)] += int(count)
    return _one_direction(counts)


def _one_direction(counts: Counter[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    """Each unordered pair once, oriented as it ran most (the comparison counts both)."""
    chosen: dict[tuple[str, frozenset[str]], tuple[int, tuple[str, str, str]]] = {}
    for key, count in sorted(counts.items()):
        site, serving, shadow = key
        slot = (site, frozenset((serving, shadow)))
        if slot not in chosen or count > chosen[slot][0]:
            chosen[slot] = (count, key)
    return sorted(key for _, key in chosen.values())


def _compared(
    connection: Connection, site: str, engine: str, other: str, period: Period
) -> EngineComparison:
    comparison, pairs = compare_with_pairs(
        connection, site=site, engine=engine, other=other, period=period
    )
    return EngineComparison(comparison, _sample(pairs))


def _sample(pairs: list[Pair]) -> tuple[tuple[float, float, bool], ...]:
    """At most :data:`SCATTER_POINTS` pairs, evenly spread, as plain numbers only (no
    study identifier reaches the page)."""
    step = max(1, -(-len(pairs) // SCATTER_POINTS))
    return tuple((p.score_a, p.score_b, p.suspicious_a == p.suspicious_b) for p in pairs[::step])


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day)
