"""Two engines compared on the studies both scored: one serving, one in shadow.

``edge hub compare --site S --engine A --with B`` (and any page of the console) calls
:func:`compare_engines`: from the stored ``results`` and ``shadow_scores`` rows it
pairs each study's two scores, in either direction (A serving with B in shadow, or
B serving with A in shadow, as after a switch), and reports what a programme's
quality lead weighs before an upgrade: how often the two agree on the suspicious
call, each at its own threshold; how the suspicious (recall) rate would move; how
closely the scores follow each other; and, where outcomes are known, both engines'
sensitivity, specificity and AUC with 95 % confidence intervals. The outcomes are the
hub's own (the ``outcomes`` table the console records: ``positive`` or ``negative``;
``pending`` is not counted), unless the caller gives another source.

A study whose shadow skipped some of its images (the shadow's budget) is left out,
and counted: its shadow score is not comparable.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import Connection, select

from edge.hub.messages import ShadowRecord
from edge.hub.store_batch import insert_ignoring
from edge.hub.tables import outcomes as outcome_rows
from edge.hub.tables import results, shadow_scores

#: the normal quantile of a two-sided 95 % interval
Z95 = 1.959964

#: results created from the first time until the second (exclusive)
Period = tuple[datetime, datetime]


@dataclass(frozen=True)
class Pair:
    """One study scored by both engines: (score, suspicious) of each."""

    study_uid: str
    accession: str
    score_a: float
    suspicious_a: bool
    score_b: float
    suspicious_b: bool


@dataclass(frozen=True)
class Interval:
    value: float
    low: float
    high: float


@dataclass(frozen=True)
class Accuracy:
    """One engine against known outcomes (cancer or not), each at its own threshold."""

    sensitivity: Interval | None
    specificity: Interval | None
    auc: Interval | None


@dataclass(frozen=True)
class Comparison:
    site: str
    engine: str
    other: str
    #: studies scored by both (shadow complete), and those left out (shadow partial)
    studies: int
    partial: int
    #: suspicious calls: both, engine only, other only, neither
    both: int
    engine_only: int
    other_only: int
    neither: int
    agreement: float | None
    kappa: float | None
    suspicious_rate: float | None
    other_suspicious_rate: float | None
    #: other's suspicious rate minus engine's, in percentage points
    rate_change_pp: float | None
    pearson: float | None
    spearman: float | None
    #: studies with a known outcome, and of them cancers
    with_outcome: int = 0
    cancers: int = 0
    accuracy: Accuracy | None = None
    other_accuracy: Accuracy | None = None


def store_shadow(connection: Connection, record: ShadowRecord) -> bool:
    """Keep a result's companion as its ``shadow_scores`` row; False: it was there
    already (a re-delivery)."""
    statement = insert_ignoring(connection, shadow_scores, ("result_id",))
    inserted = connection.execute(
        statement.values(**_shadow_row(record)).returning(shadow_scores.c.result_id)
    ).first()
    return inserted is not None


def _shadow_row(record: ShadowRecord) -> dict[str, Any]:
    """The companion ``edge.shadow/1`` as a ``shadow_scores`` row."""
    shadow = record.document
    model, study = shadow["model"], shadow["study"]
    return {
        "result_id": record.result_id,
        "site": record.site,
        "device": record.device,
        "model_name": model["name"],
        "model_version": model["version"],
        "model_sha256": model["sha256"],
        "score": study["score"],
        "suspicious": study["suspicious"],
        "threshold": study["threshold"],
        "skipped": shadow["skipped"],
        "breasts": shadow["breasts"],
        "images": shadow["images"],
    }


def compare_engines(
    connection: Connection,
    *,
    site: str,
    engine: str,
    other: str,
    outcomes: Mapping[str, bool] | None = None,
    period: Period | None = None,
) -> Comparison:
    """Compare engine versions ``engine`` and ``other`` at ``site`` from the stored rows.

    ``outcomes`` maps a study's accession number or Study Instance UID to whether a
    cancer was found; by default the hub's ``outcomes`` table. Without any known
    outcome the accuracy fields stay None. ``period`` (from, until exclusive) keeps the
    results created in it.
    """
    return compare_with_pairs(
        connection, site=site, engine=engine, other=other, outcomes=outcomes, period=period
    )[0]


def compare_with_pairs(
    connection: Connection,
    *,
    site: str,
    engine: str,
    other: str,
    outcomes: Mapping[str, bool] | None = None,
    period: Period | None = None,
) -> tuple[Comparison, list[Pair]]:
    """:func:`compare_engines` and the pairs it counted (the console plots them)."""
    pairs, partial = study_pairs(connection, site=site, engine=engine, other=other, period=period)
    comparison = summarise(pairs, partial, site=site, engine=engine, other=other)
    known = stored_outcomes(connection, site) if outcomes is None else outcomes
    if not known:
        return comparison, pairs
    return with_accuracy(comparison, pairs, known), pairs


def stored_outcomes(connection: Connection, site: str) -> dict[str, bool]:
    """The hub's recorded outcomes at ``site``: Study Instance UID -> cancer (pending
    outcomes, still waiting for pathology, are left out)."""
    query = select(outcome_rows.c.study_uid, outcome_rows.c.label).where(
        outcome_rows.c.site == site, outcome_rows.c.label.in_(("positive", "negative"))
    )
    return {row.study_uid: row.label == "positive" for row in connection.execute(query)}


def study_pairs(
    connection: Connection, *, site: str, engine: str, other: str, period: Period | None = None
) -> tuple[list[Pair], int]:
    """The studies scored by both, in either direction; and how many were partial.

    The query starts from the site's shadow rows of the two versions (their index), so
    that a site without a trial costs nothing however many results it holds.
    """
    versions = (engine, other)
    query = (
        select(
            results.c.study_uid,
            results.c.accession,
            results.c.model_version,
            results.c.score,
            results.c.suspicious,
            shadow_scores.c.model_version.label("shadow_version"),
            shadow_scores.c.score.label("shadow_score"),
            shadow_scores.c.suspicious.label("shadow_suspicious"),
            shadow_scores.c.skipped,
        )
        .join(shadow_scores, shadow_scores.c.result_id == results.c.id)
        .where(
            shadow_scores.c.site == site,
            shadow_scores.c.model_version.in_(versions),
            results.c.site == site,
            results.c.model_version.in_(versions),
            *_created_in(period),
        )
        .order_by(results.c.created_at)
    )
    pairs: dict[str, Pair] = {}
    partial = 0
    for row in connection.execute(query).mappings():
        found = (row["model_version"], row["shadow_version"])
        if found not in (versions, versions[::-1]):
            continue
        if row["skipped"]:
            partial += 1
            continue
        served = (float(row["score"]), bool(row["suspicious"]))
        shadowed = (float(row["shadow_score"]), bool(row["shadow_suspicious"]))
        a, b = (served, shadowed) if found[0] == engine else (shadowed, served)
        # a study sent again keeps its latest pair
        pairs[row["study_uid"]] = Pair(row["study_uid"], row["accession"], *a, *b)
    return list(pairs.values()), partial


def _created_in(period: Period | None) -> list[Any]:
    if period is None:
        return []
    return [results.c.created_at >= period[0], results.c.created_at < period[1]]


def summarise(pairs: list[Pair], partial: int, *, site: str, engine: str, other: str) -> Comparison:
    """Agreement, rates and correlations of ``pairs``."""
    n = len(pairs)
    both = sum(p.suspicious_a and p.suspicious_b for p in pairs)
    engine_only = sum(p.suspicious_a and not p.suspicious_b for p in pairs)
    other_only = sum(p.suspicious_b and not p.suspicious_a for p in pairs)
    neither = n - both - engine_only - other_only
    rate_a = (both + engine_only) / n if n else None
    rate_b = (both + other_only) / n if n else None
    a = np.array([p.score_a for p in pairs], dtype=float)
    b = np.array([p.score_b for p in pairs], dtype=float)
    return Comparison(
        site=site,
        engine=engine,
        other=other,
        studies=n,
        partial=partial,
        both=both,
        engine_only=engine_only,
        other_only=other_only,
        neither=neither,
        agreement=(both + neither) / n if n else None,
        kappa=_kappa(both, engine_only, other_only, neither),
        suspicious_rate=rate_a,
        other_suspicious_rate=rate_b,
        rate_change_pp=None if rate_a is None or rate_b is None else 100 * (rate_b - rate_a),
        pearson=_correlation(a, b),
        spearman=_correlation(_ranks(a), _ranks(b)),
    )


def with_accuracy(
    comparison: Comparison, pairs: list[Pair], outcomes: Mapping[str, bool]
) -> Comparison:
    """``comparison`` with both engines' accuracy on the studies whose outcome is known."""
    known = [(p, _outcome(p, outcomes)) for p in pairs]
    known_pairs = [(p, cancer) for p, cancer in known if cancer is not None]
    truth = [bool(cancer) for _, cancer in known_pairs]
    return Comparison(
        **{
            **comparison.__dict__,
            "with_outcome": len(known_pairs),
            "cancers": sum(truth),
            "accuracy": accuracy(
                [p.score_a for p, _ in known_pairs], [p.suspicious_a for p, _ in known_pairs], truth
            ),
            "other_accuracy": accuracy(
                [p.score_b for p, _ in known_pairs], [p.suspicious_b for p, _ in known_pairs], truth
            ),
        }
    )


def _outcome(pair: Pair, outcomes: Mapping[str, bool]) -> bool | None:
    if pair.accession in outcomes:
        return outcomes[pair.accession]
    return outcomes.get(pair.study_uid)


def accuracy(scores: list[float], calls: list[bool], cancer: list[bool]) -> Accuracy:
    """Sensitivity and specificity of the suspicious calls (Wilson intervals) and the
    AUC of the scores (Hanley and McNeil's interval), against ``cancer``."""
    positives = [call for call, truth in zip(calls, cancer, strict=True) if truth]
    negatives = [not call for call, truth in zip(calls, cancer, strict=True) if not truth]
    return Accuracy(
        sensitivity=wilson(sum(positives), len(positives)),
        specificity=wilson(sum(negatives), len(negatives)),
        auc=auc_interval(scores, cancer),
    )


def wilson(successes: int, n: int) -> Interval | None:
    """A proportion with its Wilson score 95 % interval (None without cases)."""
    if n == 0:
        return None
    p = successes / n
    centre = (p + Z95**2 / (2 * n)) / (1 + Z95**2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / (1 + Z95**2 / n)
    return Interval(p, max(0.0, centre - half), min(1.0, centre + half))


def auc_interval(scores: list[float], cancer: list[bool]) -> Interval | None:
    """The ROC AUC (Mann-Whitney, ties counting half) with Hanley-McNeil's 95 % interval;
    None unless there are both cancers and non-cancers."""
    pos = np.array([s for s, c in zip(scores, cancer, strict=True) if c], dtype=float)
    neg = np.array([s for s, c in zip(scores, cancer, strict=True) if not c], dtype=float)
    if len(pos) == 0 or len(neg) == 0:
        return None
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    auc = float(greater / (len(pos) * len(neg)))
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    variance = (
        auc * (1 - auc) + (len(pos) - 1) * (q1 - auc * auc) + (len(neg) - 1) * (q2 - auc * auc)
    ) / (len(pos) * len(neg))
    half = Z95 * math.sqrt(max(variance, 0.0))
    return Interval(auc, max(0.0, auc - half), min(1.0, auc + half))


def _kappa(both: int, a_only: int, b_only: int, neither: int) -> float | None:
    """Cohen's kappa of the two suspicious calls (None when chance agreement is total)."""
    n = both + a_only + b_only + neither
    if n == 0:
        return None
    observed = (both + neither) / n
    rate_a, rate_b = (both + a_only) / n, (both + b_only) / n
    chance = rate_a * rate_b + (1 - rate_a) * (1 - rate_b)
    return None if chance >= 1 else (observed - chance) / (1 - chance)


def _correlation(a: np.ndarray, b: np.ndarray) -> float | None:
    if len(a) < 2 or np.std(a) == 0 or np.std(b) == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks with ties given their mean rank (for Spearman's correlation)."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values), dtype=float)
    ranks[order] = np.arange(len(values), dtype=float)
    for value in np.unique(values):
        tied = values == value
        ranks[tied] = ranks[tied].mean()
    return ranks
