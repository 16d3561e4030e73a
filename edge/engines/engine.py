"""The engine: a verified bundle loaded into a backend, warmed up and self-tested.

This is the engine's one home (:mod:`edge.engines`): :mod:`edge.engines.serving`
chooses which bundle serves, :mod:`edge.engines.switch` loads a new one beside the
serving one, and :class:`~edge.pipeline.infer.InferenceWorker` feeds it batches.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from edge.bundle.manifest import Bundle, OutputSpec
from edge.engines.selftest import run_selftest
from edge.errors import EngineError
from edge.runtimes import registry
from edge.runtimes.base import Backend
from edge.types import EngineInfo

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
        #: the suspicion map the model gives beside its score, if any
        self.suspicion_map = manifest.suspicion_map
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
        return self.evaluate(batch)[0]

    def evaluate(self, batch: np.ndarray) -> tuple[list[float], np.ndarray | None]:
        """Each image's score and, when the engine gives one, its suspicion map."""
        outputs = self.backend.infer(np.ascontiguousarray(batch, dtype=np.float32))
        output = outputs[0]
        if output.shape[0] != batch.shape[0]:
            raise EngineError(f"engine returned {output.shape[0]} rows for {batch.shape[0]} images")
        flat = output.reshape(output.shape[0], -1)
        scores = [float(row[0]) for row in flat]
        if not all(np.isfinite(scores)):
            raise EngineError("engine returned a non-finite score")
        spec = self.suspicion_map
        return scores, None if spec is None else checked_maps(outputs[1], spec, len(batch))

    def close(self) -> None:
        self.backend.close()


def checked_maps(output: np.ndarray, spec: OutputSpec, count: int) -> np.ndarray:
    """The batch's maps (N, rows, columns), refused unless shaped and valued as declared."""
    rows, columns = spec.shape[2], spec.shape[3]
    if output.shape != (count, 1, rows, columns):
        raise EngineError(
            f"engine's {spec.name} is {output.shape}, expected {(count, 1, rows, columns)}"
        )
    if not np.isfinite(output).all() or output.min() < 0.0 or output.max() > 1.0:
        raise EngineError(f"engine's {spec.name} has values outside [0, 1]")
    return np.asarray(output[:, 0], dtype=np.float32)
