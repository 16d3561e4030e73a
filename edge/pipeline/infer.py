"""Inference: the worker that feeds the loaded engine (:mod:`edge.engines.engine`) batches.

One worker thread owns the backends. It takes whatever images are waiting, up to
the backend's batch limit, so a burst of views is scored in one call while a
single image is never held back waiting for company.

During a hot swap the worker holds two engines: each image is scored by the
engine its study was bound to at the study's first image (``ModelInput.engine``),
so a study is never scored half by one model and half by another, and no study
waits for the switch. An engine that is no longer current is closed as soon as
no open study is bound to it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Protocol

import numpy as np

from edge.engines.engine import Engine
from edge.engines.shadow import ShadowBudget
from edge.errors import EngineError
from edge.pipeline import findings
from edge.types import EngineInfo, Finding, ImageScore, ModelInput, ShadowScore

log = logging.getLogger(__name__)

#: how often an idle worker checks whether a retired engine can be closed
RETIRE_CHECK_S = 0.5


ScoreCallback = Callable[[ImageScore], None]
#: called with the image, the reason (``infer_failed``: the engine failed on its
#: batch; ``internal_error``: handling its score failed) and the exception
FailureCallback = Callable[[ModelInput, str, Exception], None]
#: a health counter: name and amount (``shadow_scored``, ``shadow_skipped``, ``shadow_failed``)
CountCallback = Callable[[str, int], None]


def _no_count(name: str, amount: int) -> None:
    """Counters dropped: for a worker built without health (the tests' own)."""


class ShadowSink(Protocol):
    """Where the shadow's scores go (:class:`~edge.pipeline.shadow_study.ShadowCompanions`)."""

    def expect(self, sop_uid: str) -> None:
        """Called before the image's serving score is handed on: a shadow score follows."""

    def shadowed(self, sop_uid: str, score: ShadowScore | None) -> None:
        """The shadow's score of an expected image (None: the shadow engine failed)."""


class InferenceWorker:
    """The thread that owns the engines and scores images in arrival order."""

    def __init__(
        self,
        engine: Engine,
        on_score: ScoreCallback,
        on_failure: FailureCallback,
        in_use: Callable[[], set[EngineInfo]] = set,
        *,
        budget: ShadowBudget | None = None,
        count: CountCallback = _no_count,
        shadow_sink: ShadowSink | None = None,
    ) -> None:
        self._engines: dict[EngineInfo, Engine] = {engine.info: engine}
        self._shadow: Engine | None = None
        #: shadow engines replaced or dropped, closed by the worker thread between batches
        self._unshadowed: list[Engine] = []
        self._budget = budget
        self._count = count
        self._sink = shadow_sink
        self._current = engine.info
        self._engines_lock = threading.Lock()
        self._in_use = in_use
        self._on_score = on_score
        self._on_failure = on_failure
        self._queue: queue.Queue[ModelInput | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="infer", daemon=True)
        #: monotonic start of the call in progress, for the stuck-stage check
        self.busy_since: float | None = None
        #: images of the batch in hand, from its call to its scores handed on (health)
        self.scoring = 0

    # -- the engines ------------------------------------------------------------------

    @property
    def engine(self) -> Engine:
        """The current engine: the one new studies are bound to."""
        with self._engines_lock:
            return self._engines[self._current]

    def engine_for(self, info: EngineInfo | None) -> Engine:
        """The engine an image bound to ``info`` is prepared for and scored by."""
        with self._engines_lock:
            current = self._engines[self._current]
            return current if info is None else self._engines.get(info, current)

    def retiring(self) -> list[EngineInfo]:
        """Engines no longer current that still finish the studies bound to them."""
        with self._engines_lock:
            return [info for info in self._engines if info != self._current]

    def add(self, engine: Engine) -> Engine:
        """Make ``engine`` available for scoring; return the one kept for its identity.

        When an engine with the same identity is still loaded (a rollback while it
        finishes its studies), that one is kept and ``engine`` is closed.
        """
        with self._engines_lock:
            kept = self._engines.setdefault(engine.info, engine)
        if kept is not engine:
            engine.close()
        return kept

    def make_current(self, info: EngineInfo) -> None:
        """Score new studies with ``info``; the previous engine closes once its studies end."""
        with self._engines_lock:
            if info not in self._engines:
                raise EngineError(f"engine {info.version} is not loaded")
            self._current = info

    def shadow_to(self, sink: ShadowSink) -> None:
        """Hand the shadow's scores to ``sink`` (nothing is shadowed without one)."""
        self._sink = sink

    def use_budget(self, budget: ShadowBudget, count: CountCallback) -> None:
        """Score in shadow within ``budget``, counting with ``count`` (health's counters)."""
        self._budget, self._count = budget, count

    @property
    def shadow(self) -> Engine | None:
        """The engine scoring in shadow, if any."""
        with self._engines_lock:
            return self._shadow

    def set_shadow(self, engine: Engine | None) -> None:
        """Shadow with ``engine`` from the next batch (None: stop); the one it replaces
        closes on the worker thread, never under a batch."""
        with self._engines_lock:
            previous, self._shadow = self._shadow, engine
            if previous is not None and previous is not engine:
                self._unshadowed.append(previous)

    def take_shadow(self, info: EngineInfo) -> Engine | None:
        """Stop shadowing and hand over the shadow engine, still loaded and warm, when it
        is ``info`` (an activation of the shadow engine: no reload)."""
        with self._engines_lock:
            shadow = self._shadow
            if shadow is None or (shadow.info.name, shadow.info.version, shadow.info.sha256) != (
                info.name,
                info.version,
                info.sha256,
            ):
                return None
            self._shadow = None
            return shadow

    def close_engines(self) -> None:
        """Close every engine (after :meth:`stop`)."""
        with self._engines_lock:
            engines, self._engines = list(self._engines.values()), {}
            engines += self._unshadowed + ([self._shadow] if self._shadow else [])
            self._shadow, self._unshadowed = None, []
        for engine in engines:
            engine.close()

    # -- the thread ---------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def submit(self, item: ModelInput) -> None:
        self._queue.put(item)

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    def stop(self, timeout: float) -> None:
        """Score what is queued, then stop."""
        self._queue.put(None)
        self._thread.join(timeout)

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=RETIRE_CHECK_S)
            except queue.Empty:
                self._close_retired()
                continue
            if first is None:
                return
            batch, stop = self._gather(first)
            for engine, items in self._by_engine(batch):
                self._score(engine, items)
            self._close_retired()
            if stop:
                return

    def _gather(self, first: ModelInput) -> tuple[list[ModelInput], bool]:
        batch = [first]
        while len(batch) < self.engine.backend.max_batch:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                return batch, True
            batch.append(item)
        return batch, False

    def _by_engine(self, batch: list[ModelInput]) -> list[tuple[Engine, list[ModelInput]]]:
        groups: dict[EngineInfo, tuple[Engine, list[ModelInput]]] = {}
        for item in batch:
            engine = self.engine_for(item.engine)
            groups.setdefault(engine.info, (engine, []))[1].append(item)
        return list(groups.values())

    def _close_retired(self) -> None:
        # Runs on the worker thread only, so no batch is ever scored by a closing engine.
        with self._engines_lock:
            unshadowed, self._unshadowed = self._unshadowed, []
        for engine in unshadowed:
            engine.close()
            log.info("engine %s no longer scores in shadow: closed", engine.info.version)
        with self._engines_lock:
            if len(self._engines) == 1:  # only the current one: nothing to retire
                return
        in_use = self._in_use()
        with self._engines_lock:
            done = [i for i in self._engines if i != self._current and i not in in_use]
            closing = [self._engines.pop(info) for info in done]
        for engine in closing:
            engine.close()
            log.info(
                "engine %s %s closed: its last study is done", engine.info.name, engine.info.version
            )

    def _score(self, engine: Engine, batch: list[ModelInput]) -> None:
        self.scoring = len(batch)
        try:
            self._score_batch(engine, batch)
        finally:
            self.scoring = 0

    def _score_batch(self, engine: Engine, batch: list[ModelInput]) -> None:
        started = time.perf_counter()
        self.busy_since = time.monotonic()
        tensors = _stacked(batch)
        try:
            scores, maps = engine.evaluate(tensors)
        except Exception as exc:  # any backend failure fails its images
            log.exception("inference failed for a batch of %d", len(batch))
            for item in batch:
                self._fail(item, "infer_failed", exc)
            return
        finally:
            self.busy_since = None
        elapsed_ms = (time.perf_counter() - started) * 1000
        device = engine.backend.last_timings_ms()
        # The serving scores go on first; the shadow scores the same batch after them.
        shadow, chosen = self._shadow_admitted(engine, batch, elapsed_ms)
        for index, (item, score) in enumerate(zip(batch, scores, strict=True)):
            timings = {**item.header.timings_ms, **item.timings_ms, "infer": elapsed_ms, **device}
            try:
                located = _findings(engine, None if maps is None else maps[index], item)
                self._on_score(ImageScore(item.header, score, engine.info, timings, located))
            except Exception as exc:  # a fault past scoring fails this image, not the worker
                log.exception("handling an image's score failed")
                self._fail(item, "internal_error", exc)
        if shadow is not None:
            self._score_shadow(shadow, [batch[i] for i in chosen], tensors[chosen], elapsed_ms)

    def _shadow_admitted(
        self, engine: Engine, batch: list[ModelInput], serving_ms: float
    ) -> tuple[Engine | None, list[int]]:
        """The shadow engine and the batch's images its budget admits (told to the sink
        before their serving scores go on); (None, []) when nothing is shadowed."""
        shadow, budget, sink = self.shadow, self._budget, self._sink
        if shadow is None or shadow.info == engine.info or budget is None or sink is None:
            return None, []
        chosen = [
            index
            for index, item in enumerate(batch)
            if shadow.preprocessing == engine.preprocessing
            and budget.admit_study(item.header.study_uid, self.depth)
        ]
        if len(chosen) < len(batch):
            self._count("shadow_skipped", len(batch) - len(chosen))
        if not chosen:
            budget.record(serving_ms, 0.0)
            return None, []
        for index in chosen:
            sink.expect(batch[index].header.sop_uid)
        return shadow, chosen

    def _score_shadow(
        self, shadow: Engine, items: list[ModelInput], tensors: np.ndarray, serving_ms: float
    ) -> None:
        """Score ``items`` in shadow and hand each score to the sink; a failure of the
        shadow is counted and logged, and never fails an image."""
        budget, sink = self._budget, self._sink
        assert budget is not None and sink is not None  # admitted only with both
        started = time.perf_counter()
        try:
            values: list[float | None] = list(_in_batches(shadow, tensors))
        except Exception:  # a candidate's fault must never touch the serving path
            log.exception("shadow engine %s failed on %d images", shadow.info.version, len(items))
            values = [None] * len(items)
            self._count("shadow_failed", len(items))
        else:
            self._count("shadow_scored", len(items))
        budget.record(serving_ms, (time.perf_counter() - started) * 1000)
        for item, value in zip(items, values, strict=True):
            score = None if value is None else ShadowScore(shadow.info, value, shadow.threshold)
            try:
                sink.shadowed(item.header.sop_uid, score)
            except Exception:  # the shadow's bookkeeping must never stop the worker
                log.exception("handling a shadow score failed")

    def _fail(self, item: ModelInput, reason: str, error: Exception) -> None:
        """Report ``item`` as failed; the worker thread outlives any fault in doing so."""
        try:
            self._on_failure(item, reason, error)
        except Exception:  # the daemon's health reports the error count and last error
            log.exception("reporting a failed image failed as well (%s)", reason)


def _findings(
    engine: Engine, suspicion: np.ndarray | None, item: ModelInput
) -> tuple[Finding, ...]:
    """The image's findings from its suspicion map (none for an engine without one)."""
    if engine.suspicion_map is None or suspicion is None:
        return ()
    return findings.locate(engine.suspicion_map, suspicion, item.header, engine.preprocessing)


def _in_batches(engine: Engine, tensors: np.ndarray) -> list[float]:
    """Score ``tensors`` on ``engine`` in batches it accepts (its limit may be lower)."""
    size = engine.backend.max_batch
    return [
        score
        for at in range(0, len(tensors), size)
        for score in engine.score(tensors[at : at + size])
    ]


def _stacked(batch: list[ModelInput]) -> np.ndarray:
    """The batch as one (N, C, H, W) array; a single image without a copy."""
    if len(batch) == 1:
        return batch[0].tensor[np.newaxis]
    return np.stack([item.tensor for item in batch])
