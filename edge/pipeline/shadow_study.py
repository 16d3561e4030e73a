"""A study as the shadow engine saw it, gathered beside the serving result.

The serving result never waits for the shadow. The inference worker hands each
image's serving score on first and scores it in shadow after
(:mod:`edge.pipeline.infer`), so a study closes, and its result is journalled and
sent, on its serving scores alone. :class:`ShadowCompanions` collects the shadow's
scores meanwhile; once a result is journalled and every image of it that the
budget admitted is scored (or failed) in shadow, the study's :class:`ShadowResult`
goes to be journalled as that result's companion message (``edge.shadow/1``).

The same per-breast and per-study rules make it as make the serving result
(:mod:`edge.pipeline.study`), at the shadow engine's own threshold. Only the scores
of one shadow engine make a study's shadow result: should the shadow engine change
while a study is open, the engine that scored most of its images is taken and the
others' images count as skipped, so that no shadow result mixes engines.
"""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from edge.types import (
    BreastScore,
    EngineInfo,
    ImageScore,
    ShadowResult,
    ShadowScore,
    StudyResult,
)

#: shadow scores kept for results not yet journalled (far more than are ever open)
SCORES_KEPT = 10_000


@dataclass(frozen=True)
class JournalledResult:
    """A result as the journal numbered it: what its companion names and is made of."""

    seq: int
    id: str
    study_uid: str
    #: the serving engine
    engine: EngineInfo
    images: tuple[ImageScore, ...]

    @classmethod
    def of(cls, result: StudyResult, seq: int, result_id: str) -> JournalledResult:
        return cls(seq, result_id, result.study_uid, result.engine, result.images)


#: journals a result's companion (:meth:`edge.pipeline.results.ResultJournal.shadowed`)
CompanionCallback = Callable[[ShadowResult, JournalledResult], None]


class ShadowCompanions:
    """Thread-safe: the inference worker reports shadow scores, the result journal
    reports results; either may complete a companion."""

    def __init__(self, on_companion: CompanionCallback) -> None:
        self._on_companion = on_companion
        self._lock = threading.Lock()
        #: images admitted to the shadow whose shadow score is not in yet
        self._expected: set[str] = set()
        self._scores: OrderedDict[str, ShadowScore] = OrderedDict()
        #: journalled results waiting for their images' shadow scores, by result id
        self._waiting: dict[str, JournalledResult] = {}

    def expect(self, sop_uid: str) -> None:
        """The image is admitted to the shadow: its score follows its serving score."""
        with self._lock:
            self._expected.add(sop_uid)

    def shadowed(self, sop_uid: str, score: ShadowScore | None) -> None:
        """The shadow's score of an admitted image (None: the shadow engine failed)."""
        with self._lock:
            self._expected.discard(sop_uid)
            if score is not None:
                self._keep(sop_uid, score)
        self._settle()

    def restore(self, scores: Mapping[str, ShadowScore]) -> None:
        """Shadow scores journalled for the studies reopened after a restart."""
        with self._lock:
            for sop_uid, score in scores.items():
                self._keep(sop_uid, score)

    def follows(self, result: StudyResult) -> bool:
        """Whether a companion will follow ``result`` (any of its images shadowed)."""
        with self._lock:
            return any(self._shadowing(image.header.sop_uid) for image in result.images)

    def journalled(self, journalled: JournalledResult) -> None:
        """``journalled`` has its seq and id: its companion goes once its scores are in."""
        with self._lock:
            images = journalled.images
            if not any(self._shadowing(image.header.sop_uid) for image in images):
                return
            self._waiting[journalled.id] = journalled
        self._settle()

    @property
    def waiting(self) -> int:
        """Results whose companion waits for shadow scores."""
        with self._lock:
            return len(self._waiting)

    def _shadowing(self, sop_uid: str) -> bool:
        return sop_uid in self._expected or sop_uid in self._scores

    def _keep(self, sop_uid: str, score: ShadowScore) -> None:
        self._scores[sop_uid] = score
        while len(self._scores) > SCORES_KEPT:
            self._scores.popitem(last=False)

    def _settle(self) -> None:
        """Hand on every waiting result whose shadow scores are all in."""
        ready = []
        with self._lock:
            for result_id, journalled in list(self._waiting.items()):
                sops = [image.header.sop_uid for image in journalled.images]
                if any(sop in self._expected for sop in sops):
                    continue
                del self._waiting[result_id]
                scores = {sop: self._scores.pop(sop) for sop in sops if sop in self._scores}
                shadow = shadow_result(journalled.images, scores)
                if shadow is not None:
                    ready.append((shadow, journalled))
        for shadow, journalled in ready:
            self._on_companion(shadow, journalled)


def shadow_result(
    images: tuple[ImageScore, ...], shadows: Mapping[str, ShadowScore]
) -> ShadowResult | None:
    """The shadow engine's result for a study's ``images`` (None: none was shadowed)."""
    engines = Counter(shadow.engine for shadow in shadows.values())
    if not engines:
        return None
    engine = engines.most_common(1)[0][0]
    scored = [
        (image, shadows[image.header.sop_uid])
        for image in images
        if image.header.sop_uid in shadows and shadows[image.header.sop_uid].engine == engine
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
