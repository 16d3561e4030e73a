"""A study as the shadow engine saw it: the same per-breast and per-study rules as the
serving result (:mod:`edge.pipeline.study`), at the shadow engine's own threshold.

Only the scores of one shadow engine make a study's shadow result: should the shadow
engine change while a study is open, the engine that scored most of its images is
taken and the others' images count as skipped, so that no shadow result mixes engines.
"""

from __future__ import annotations

from collections import Counter

from edge.types import BreastScore, ImageScore, ShadowResult


def shadow_result(images: tuple[ImageScore, ...]) -> ShadowResult | None:
    """The shadow engine's result for a study's ``images`` (None: none was shadowed)."""
    engines = Counter(image.shadow.engine for image in images if image.shadow is not None)
    if not engines:
        return None
    engine = engines.most_common(1)[0][0]
    scored = [
        (image, image.shadow)
        for image in images
        if image.shadow is not None and image.shadow.engine == engine
    ]
    threshold = scored[0][1].threshold
    breasts = {}
    for side in ("L", "R"):
        side_scores = [
            shadow.score
            for image, shadow in scored
            if image.header.screening and image.header.laterality == side
        ]
        if side_scores:
            top = max(side_scores)
            breasts[side] = BreastScore(top, top >= threshold)
    score = max((breast.score for breast in breasts.values()), default=0.0)
    return ShadowResult(
        engine=engine,
        score=score,
        suspicious=score >= threshold,
        threshold=threshold,
        breasts=breasts,
        images=tuple((image.header.sop_uid, shadow.score) for image, shadow in scored),
        skipped=len(images) - len(scored),
    )
