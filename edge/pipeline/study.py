"""Assemble scored views into studies and decide when a study is done.

A study is closed, and its result goes out, as soon as its four standard views
(L and R, CC and MLO) are scored and nothing else of it is still being
processed; otherwise ``quiet_s`` after its last image arrived, with the views it
lacks listed. Scores: per image the engine's; per breast the maximum over its
screening views; per study the maximum over breasts.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone

from edge.common.privacy import study_hash
from edge.types import (
    STANDARD_VIEWS,
    BreastScore,
    EngineInfo,
    ImageHeader,
    ImageScore,
    StudyResult,
)

log = logging.getLogger(__name__)

ResultCallback = Callable[[StudyResult], None]


def _kept(score: ImageScore) -> None:
    """No journal (the tests' own assemblers)."""


@dataclass
class _OpenStudy:
    study_uid: str
    accession: str
    last_arrival: float
    in_flight: int = 0
    scores: list[ImageScore] = field(default_factory=list)
    #: the engine bound at the study's first arrival: every image of it is scored by it
    engine: EngineInfo | None = None

    def views(self) -> set[tuple[str, str]]:
        return {(s.header.laterality, s.header.view) for s in self.scores if s.header.screening}

    def complete(self) -> bool:
        return self.in_flight == 0 and set(STANDARD_VIEWS) <= self.views()


class StudyAssembler:
    """Thread-safe: ingest workers report arrivals, the inference worker reports scores."""

    def __init__(self, quiet_s: float, threshold: Callable[[EngineInfo], float]) -> None:
        self._quiet_s = quiet_s
        self._threshold = threshold
        self._lock = threading.Lock()
        self._open: dict[str, _OpenStudy] = {}
        self._serving: EngineInfo | None = None

    @property
    def open_studies(self) -> int:
        with self._lock:
            return len(self._open)

    def serve(self, engine: EngineInfo) -> None:
        """Bind studies that start from now on to ``engine`` (open ones keep theirs)."""
        with self._lock:
            self._serving = engine

    def engines_in_use(self) -> set[EngineInfo]:
        """The engines bound to open studies: none of them may be closed yet."""
        with self._lock:
            return {s.engine for s in self._open.values() if s.engine is not None}

    def arrived(self, header: ImageHeader) -> EngineInfo | None:
        """An image of a study was accepted and is on its way to be scored.

        Returns the engine that must score it: the one its study was bound to at the
        study's first arrival, so that one study is never scored by two engines.
        """
        with self._lock:
            study = self._open.get(header.study_uid)
            if study is None:
                study = _OpenStudy(header.study_uid, header.accession, header.source.detected_at)
                study.engine = self._serving
                self._open[header.study_uid] = study
            study.in_flight += 1
            study.last_arrival = max(study.last_arrival, header.source.detected_at)
            return study.engine

    def dropped(self, header: ImageHeader) -> None:
        """An accepted image could not be scored (quarantined after its header passed)."""
        with self._lock:
            study = self._open.get(header.study_uid)
            if study is not None:
                study.in_flight -= 1

    def scored(
        self, score: ImageScore, keep: Callable[[ImageScore], None] = _kept
    ) -> StudyResult | None:
        """Add a score; return the study's result when this completes it.

        ``keep`` (the journal's) is called, under the assembler's lock, with a score
        that does not complete its study, before the study holds it: when it raises,
        the study is as it was.
        The score that completes a study is not given to it: it goes with the result
        (:meth:`~edge.journal.Journal.record_result`'s ``completing``).
        """
        header = score.header
        with self._lock:
            study = self._open.get(header.study_uid)
            if study is None:  # scored without arrival: a late image of a closed study
                study = _OpenStudy(header.study_uid, header.accession, time.monotonic())
                study.in_flight = 1
                study.engine = score.engine
            study.in_flight -= 1
            study.scores.append(score)
            if not study.complete():
                try:
                    keep(score)
                except BaseException:
                    study.scores.pop()
                    study.in_flight += 1
                    raise
                self._open[study.study_uid] = study
                self._log_waiting(study)
                return None
            self._open.pop(study.study_uid, None)
        return self._result(study, "complete")

    def _log_waiting(self, study: _OpenStudy) -> None:
        """Say which views a study has, which it lacks, and when it closes without them."""
        present = study.views()
        has = [f"{lat}{view}" for lat, view in sorted(present)]
        missing = [f"{lat}{view}" for lat, view in STANDARD_VIEWS if (lat, view) not in present]
        closes_in = max(self._quiet_s - (time.monotonic() - study.last_arrival), 0.0)
        log.info(
            "study %s waiting: has %s; missing %s; %s",
            study_hash(study.study_uid),
            ", ".join(has) or "no screening view",
            ", ".join(missing) or "none (images still in hand)",
            f"closes in {closes_in:.0f} s (study.quiet_s) unless they arrive"
            if missing
            else "closes when the images in hand are scored",
        )

    def restore(self, scores: list[ImageScore]) -> list[StudyResult]:
        """Reopen studies from journalled scores after a restart; return those to close now.

        A restored study's quiet period starts again now (the scores' arrival
        time) and it stays bound to the engine that scored it. Closed at once:
        a study whose four views were all scored (the daemon stopped between its
        last score and journalling its result), and a study whose engine no
        longer serves (a study is never scored by two engines): it goes out with
        the views it has, and views arriving later make a result of their own.
        Call after :meth:`serve`, before any arrival.
        """
        with self._lock:
            for score in scores:
                header = score.header
                study = self._open.get(header.study_uid)
                if study is None:
                    arrived = header.source.detected_at
                    study = _OpenStudy(header.study_uid, header.accession, arrived)
                    study.engine = score.engine
                    self._open[header.study_uid] = study
                study.scores.append(score)
            complete = [study for study in self._open.values() if study.complete()]
            orphaned = [
                study
                for study in self._open.values()
                if not study.complete() and study.engine != self._serving
            ]
            for study in (*complete, *orphaned):
                del self._open[study.study_uid]
        for study in orphaned:
            log.warning(
                "study %s was scored by engine %s, no longer serving: closed with its %d images",
                study_hash(study.study_uid),
                study.engine.version if study.engine else "?",
                len(study.scores),
            )
        return [self._result(study, "complete") for study in complete] + [
            self._result(study, "quiet") for study in orphaned
        ]

    def due(self, now: float | None = None) -> list[StudyResult]:
        """Close the studies that have been quiet for ``quiet_s``."""
        now = time.monotonic() if now is None else now
        closed = []
        with self._lock:
            for uid, study in list(self._open.items()):
                if study.in_flight <= 0 and now - study.last_arrival >= self._quiet_s:
                    del self._open[uid]
                    if study.scores:
                        closed.append(study)
        return [self._result(study, "quiet") for study in closed]

    def _result(self, study: _OpenStudy, closed_by: str) -> StudyResult:
        started = time.perf_counter()
        images = _in_view_order(study.scores)
        engine = images[-1].engine
        threshold = self._threshold(engine)
        breasts = {}
        for side in ("L", "R"):
            side_scores = [
                s.score for s in images if s.header.screening and s.header.laterality == side
            ]
            if side_scores:
                top = max(side_scores)
                breasts[side] = BreastScore(top, top >= threshold)
        study_score = max((b.score for b in breasts.values()), default=0.0)
        present = study.views()
        missing = tuple(
            f"{lat}{view}" for lat, view in STANDARD_VIEWS if (lat, view) not in present
        )
        last = max(images, key=lambda s: s.header.source.detected_at)
        timings = dict(last.timings_ms)
        timings["assemble"] = (time.perf_counter() - started) * 1000
        timings["total"] = (time.monotonic() - last.header.source.detected_at) * 1000
        result = StudyResult(
            study_uid=study.study_uid,
            accession=study.accession,
            engine=engine,
            score=study_score,
            suspicious=study_score >= threshold,
            threshold=threshold,
            breasts=breasts,
            images=images,
            missing_views=missing,
            closed_by=closed_by,
            timings_ms=timings,
            created_at=datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
        )
        log.info(
            "study %s closed (%s): %d images, score %.3f%s%s",
            study_hash(study.study_uid),
            closed_by,
            len(images),
            study_score,
            " SUSPICIOUS" if result.suspicious else "",
            f", missing {','.join(missing)}" if missing else "",
        )
        return result


def _in_view_order(scores: list[ImageScore]) -> tuple[ImageScore, ...]:
    return tuple(
        sorted(scores, key=lambda s: (s.header.laterality, s.header.view, s.header.sop_uid))
    )
