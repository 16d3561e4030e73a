"""Inference: the loaded engine, and the worker that feeds it batches.

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
from pathlib import Path

import numpy as np

from edge.engines.bundle import Bundle
from edge.engines.selftest import run_selftest
from edge.errors import EngineError
from edge.runtimes import registry
from edge.runtimes.base import Backend
from edge.types import EngineInfo, ImageScore, ModelInput

log = logging.getLogger(__name__)

#: how often an idle worker checks whether a retired engine can be closed
RETIRE_CHECK_S = 0.5


class Engine:
    """A verified bundle loaded into a backend, warmed up and ready to score."""

    def __init__(self, bundle: Bundle, backend: Backend) -> None:
        self.bundle = bundle
        self.backend = backend
        manifest = bundle.manifest
        self.info = EngineInfo(
            name=manifest.name,
            version=manifest.version,
            sha256=bundle.model_sha256,
            backend=backend.name,
        )
        self.threshold = manifest.threshold
        self.preprocessing = manifest.preprocessing
        #: why this backend serves (``auto``'s choice, said in the log and in health)
        self.backend_reason = ""

    @classmethod
    def load(
        cls, bundle: Bundle, *, backend: str, threads: int, plan_cache: Path | None = None
    ) -> Engine:
        """Load ``bundle`` on ``backend``, warm it up and run its self-test there.

        Raises
        ------
        EngineError
            When no backend can load it, or the self-test's outputs differ from the
            expected ones by more than the manifest's tolerance.
        """
        name = registry.choose(backend)
        engine = cls(bundle, registry.create(name, bundle, threads=threads, plan_cache=plan_cache))
        engine.backend_reason = registry.availability(name)[1]
        try:
            engine.warm_up()
            if bundle.manifest.selftest is not None:
                result = run_selftest(bundle, engine.backend)
                log.info(
                    "engine %s self-test passed: max |difference| %.3g <= %g",
                    engine.info.version,
                    result.max_abs_diff,
                    result.tolerance,
                )
        except BaseException:
            engine.close()
            raise
        log.info(
            "engine %s %s loaded on %s (backend %s: %s; model sha256 %s…)",
            engine.info.name,
            engine.info.version,
            engine.info.backend,
            backend,
            engine.backend_reason,
            engine.info.sha256[:12],
        )
        return engine

    def warm_up(self) -> None:
        """Run a full batch of blank images before serving, so that the first patient
        does not pay for lazy set-up and the backend's memory is at its peak from the
        start (ONNX Runtime's arena grows to the largest batch it has run)."""
        spec = self.preprocessing
        size = self.backend.max_batch
        self.score(np.zeros((size, 1, spec.height, spec.width), dtype=np.float32))

    def score(self, batch: np.ndarray) -> list[float]:
        output = self.backend.infer(np.ascontiguousarray(batch, dtype=np.float32))
        if output.shape[0] != batch.shape[0]:
            raise EngineError(f"engine returned {output.shape[0]} rows for {batch.shape[0]} images")
        flat = output.reshape(output.shape[0], -1)
        scores = [float(row[0]) for row in flat]
        if not all(np.isfinite(scores)):
            raise EngineError("engine returned a non-finite score")
        return scores

    def close(self) -> None:
        self.backend.close()


ScoreCallback = Callable[[ImageScore], None]
#: called with the image, the reason (``infer_failed``: the engine failed on its
#: batch; ``internal_error``: handling its score failed) and the exception
FailureCallback = Callable[[ModelInput, str, Exception], None]


class InferenceWorker:
    """The thread that owns the engines and scores images in arrival order."""

    def __init__(
        self,
        engine: Engine,
        on_score: ScoreCallback,
        on_failure: FailureCallback,
        in_use: Callable[[], set[EngineInfo]] = set,
    ) -> None:
        self._engines: dict[EngineInfo, Engine] = {engine.info: engine}
        self._current = engine.info
        self._engines_lock = threading.Lock()
        self._in_use = in_use
        self._on_score = on_score
        self._on_failure = on_failure
        self._queue: queue.Queue[ModelInput | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="infer", daemon=True)
        #: monotonic start of the call in progress, for the stuck-stage check
        self.busy_since: float | None = None

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

    def close_engines(self) -> None:
        """Close every engine (after :meth:`stop`)."""
        with self._engines_lock:
            engines, self._engines = list(self._engines.values()), {}
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
        started = time.perf_counter()
        self.busy_since = time.monotonic()
        try:
            scores = engine.score(_stacked(batch))
        except Exception as exc:  # any backend failure fails its images
            log.exception("inference failed for a batch of %d", len(batch))
            for item in batch:
                self._fail(item, "infer_failed", exc)
            return
        finally:
            self.busy_since = None
        elapsed_ms = (time.perf_counter() - started) * 1000
        device = engine.backend.last_timings_ms()
        for item, score in zip(batch, scores, strict=True):
            timings = {**item.header.timings_ms, **item.timings_ms, "infer": elapsed_ms, **device}
            try:
                self._on_score(ImageScore(item.header, score, engine.info, timings))
            except Exception as exc:  # a fault past scoring fails this image, not the worker
                log.exception("handling an image's score failed")
                self._fail(item, "internal_error", exc)

    def _fail(self, item: ModelInput, reason: str, error: Exception) -> None:
        """Report ``item`` as failed; the worker thread outlives any fault in doing so."""
        try:
            self._on_failure(item, reason, error)
        except Exception:  # the daemon's health reports the error count and last error
            log.exception("reporting a failed image failed as well (%s)", reason)


def _stacked(batch: list[ModelInput]) -> np.ndarray:
    """The batch as one (N, C, H, W) array; a single image without a copy."""
    if len(batch) == 1:
        return batch[0].tensor[np.newaxis]
    return np.stack([item.tensor for item in batch])
