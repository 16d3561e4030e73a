"""The monitoring's statistics, computed from binned counts (the aggregates keep no scores).

- Drift: the population stability index (PSI) and the Kolmogorov–Smirnov
  distance between a reference and a current score histogram.
- Accuracy against outcomes: sensitivity and specificity at the engine's
  threshold with Wilson 95 % intervals; the AUC from binned scores (a tie within
  a bin counts one half, the Mann–Whitney way) with the Hanley–McNeil (1982)
  standard error and a 95 % interval.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

Z95 = 1.959963984540054
#: a bin empty on one side counts as this share, so PSI stays finite
_PSI_FLOOR = 1e-4


@dataclass(frozen=True)
class Interval:
    value: float
    low: float
    high: float


def psi(reference: Sequence[int], current: Sequence[int]) -> float | None:
    """Population stability index of ``current`` against ``reference``; None if either is empty."""
    ref_total, cur_total = sum(reference), sum(current)
    if not ref_total or not cur_total:
        return None
    total = 0.0
    for ref_count, cur_count in zip(reference, current, strict=True):
        expected = max(ref_count / ref_total, _PSI_FLOOR)
        actual = max(cur_count / cur_total, _PSI_FLOOR)
        total += (actual - expected) * math.log(actual / expected)
    return total


def ks_distance(reference: Sequence[int], current: Sequence[int]) -> float | None:
    """The largest gap between the two cumulative distributions (at the bins' edges)."""
    ref_total, cur_total = sum(reference), sum(current)
    if not ref_total or not cur_total:
        return None
    largest = ref_cum = cur_cum = 0.0
    for ref_count, cur_count in zip(reference, current, strict=True):
        ref_cum += ref_count / ref_total
        cur_cum += cur_count / cur_total
        largest = max(largest, abs(ref_cum - cur_cum))
    return largest


def wilson(successes: int, trials: int) -> Interval | None:
    """A proportion with its Wilson score 95 % interval; None without trials."""
    if trials <= 0:
        return None
    share = successes / trials
    denominator = 1 + Z95**2 / trials
    centre = (share + Z95**2 / (2 * trials)) / denominator
    half = Z95 * math.sqrt(share * (1 - share) / trials + Z95**2 / (4 * trials**2)) / denominator
    return Interval(share, max(0.0, centre - half), min(1.0, centre + half))


def auc(positives: Sequence[int], negatives: Sequence[int]) -> Interval | None:
    """The AUC of scores binned in ascending order, with a Hanley–McNeil 95 % interval.

    ``positives[i]`` and ``negatives[i]`` count the cases of each kind in bin i.
    None unless there is at least one case of each kind. At an AUC of 0 or 1 the
    Hanley–McNeil variance is zero, and four cases would claim certainty: the
    variance is taken with the AUC held ``0.5 / sqrt(n_pos * n_neg)`` away from them.
    """
    n_pos, n_neg = sum(positives), sum(negatives)
    if not n_pos or not n_neg:
        return None
    below = 0
    wins = 0.0
    for pos, neg in zip(positives, negatives, strict=True):
        wins += pos * (below + neg / 2)
        below += neg
    area = wins / (n_pos * n_neg)
    edge = 0.5 / math.sqrt(n_pos * n_neg)
    held = min(max(area, edge), 1 - edge)
    q1, q2 = held / (2 - held), 2 * held**2 / (1 + held)
    spread = held * (1 - held) + (n_pos - 1) * (q1 - held**2) + (n_neg - 1) * (q2 - held**2)
    half = Z95 * math.sqrt(max(spread / (n_pos * n_neg), 0.0))
    return Interval(area, max(0.0, area - half), min(1.0, area + half))


def percentile_from_bins(
    counts: Sequence[int], upper_edges: Sequence[float], q: float
) -> float | None:
    """The upper edge of the bin holding the ``q`` quantile (0..1); None without counts."""
    total = sum(counts)
    if not total:
        return None
    target = q * total
    running = 0
    for count, edge in zip(counts, upper_edges, strict=True):
        running += count
        if running >= target:
            return edge
    return upper_edges[-1]


def drift_level(value: float | None, warn: float, alarm: float) -> str:
    """``ok``, ``warn``, ``alarm``, or ``unknown`` without a value."""
    if value is None:
        return "unknown"
    return "alarm" if value >= alarm else "warn" if value >= warn else "ok"
