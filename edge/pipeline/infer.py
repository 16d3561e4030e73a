"""Inference: the loaded engine, and the worker that feeds it batches.

One worker thread owns the backend. It takes whatever images are waiting, up to
the backend's batch limit, so a burst of views is scored in one call while a
single image is never held back waiting for company.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

import numpy as np

from edge.engines.bundle import Bundle
from edge.errors import EngineError
from edge.runtimes import registry
from edge.runtimes.base import Backend
from edge.types import EngineInfo, ImageScore, ModelInput

log = logging.getLogger(__name__)


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

    @classmethod
    def load(cls, bundle: Bundle, *, backend: str, threads: int) -> Engine:
        name = registry.choose(backend)
        engine = cls(bundle, registry.create(name, bundle, threads=threads))
        engine.warm_up()
        log.info(
            "engine %s %s loaded on %s (model sha256 %s…)",
            engine.info.name,
            engine.info.version,
            engine.info.backend,
            engine.info.sha256[:12],
        )
        return engine

    def warm_up(self) -> None:
        """Run one blank image so the first patient does not pay for lazy set-up."""
        spec = self.preprocessing
        self.score(np.zeros((1, 1, spec.height, spec.width), dtype=np.float32))

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
FailureCallback = Callable[[ModelInput, Exception], None]


class InferenceWorker:
    """The thread that owns the engine and scores images in arrival order."""

    def __init__(
        self,
        engine: Engine,
        on_score: ScoreCallback,
        on_failure: FailureCallback,
    ) -> None:
        self.engine = engine
        self._on_score = on_score
        self._on_failure = on_failure
        self._queue: queue.Queue[ModelInput | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="infer", daemon=True)
        #: monotonic start of the call in progress, for the stuck-stage check
        self.busy_since: float | None = None
        self.completed = 0

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
            first = self._queue.get()
            if first is None:
                return
            batch, stop = self._gather(first)
            self._score(batch)
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

    def _score(self, batch: list[ModelInput]) -> None:
        engine = self.engine
        started = time.perf_counter()
        self.busy_since = time.monotonic()
        try:
            scores = engine.score(np.stack([item.tensor for item in batch]))
        except Exception as exc:  # any backend failure fails its images
            log.exception("inference failed for a batch of %d", len(batch))
            for item in batch:
                self._on_failure(item, exc)
            return
        finally:
            self.busy_since = None
        elapsed_ms = (time.perf_counter() - started) * 1000
        device = engine.backend.last_timings_ms()
        self.completed += len(batch)
        for item, score in zip(batch, scores, strict=True):
            timings = {**item.header.timings_ms, **item.timings_ms, "infer": elapsed_ms, **device}
            self._on_score(ImageScore(item.header, score, engine.info, timings))
