"""The inference worker outlives a fault in handling a score: only that image fails."""

from __future__ import annotations

import queue
from pathlib import Path

import numpy as np
import pytest
from engine_bundles import image_header, make_bundle

from edge.bundle.manifest import load_bundle
from edge.engines.engine import Engine
from edge.pipeline.infer import InferenceWorker
from edge.types import ImageScore, ModelInput

SIZE = 64  # the side of make_bundle's test models


def test_a_failing_score_handler_fails_only_its_image(tmp_path: Path) -> None:
    engine = Engine.load(
        load_bundle(make_bundle(tmp_path / "a", version="1")), backend="onnxruntime", threads=1
    )
    scored: queue.Queue[ImageScore] = queue.Queue()
    failed: queue.Queue[tuple[str, str, Exception]] = queue.Queue()

    def on_score(score: ImageScore) -> None:
        if score.header.sop_uid == "bad":
            raise RuntimeError("the journal refused the row")
        scored.put(score)

    def on_failure(item: ModelInput, reason: str, error: Exception) -> None:
        failed.put((item.header.sop_uid, reason, error))
        if item.header.sop_uid == "bad":
            raise OSError("the quarantine folder is gone too")

    worker = InferenceWorker(engine, on_score, on_failure)
    worker.start()
    tensor = np.full((1, SIZE, SIZE), 0.5, dtype=np.float32)
    try:
        for sop in ("bad", "good", "after"):
            worker.submit(ModelInput(image_header(sop), tensor, engine=engine.info))
        got = {scored.get(timeout=30).header.sop_uid for _ in range(2)}
        assert got == {"good", "after"}
        sop, reason, error = failed.get(timeout=5)
        assert (sop, reason) == ("bad", "internal_error")
        assert "journal refused" in str(error)
        assert failed.empty()
        assert worker.is_alive()
    finally:
        worker.stop(timeout=10)
        worker.close_engines()


def test_a_model_exported_for_a_fixed_batch_scores_any_number_of_images(tmp_path: Path) -> None:
    """Self-test (three inputs), one image and five: padded to the model's batch of 4."""
    fixed = Engine.load(
        load_bundle(make_bundle(tmp_path / "fixed", version="1", batch=4)),
        backend="onnxruntime",
        threads=1,
    )
    dynamic = Engine.load(
        load_bundle(make_bundle(tmp_path / "dynamic", version="1")),
        backend="onnxruntime",
        threads=1,
    )
    try:
        images = np.random.default_rng(3).random((5, 1, SIZE, SIZE), dtype=np.float32)
        for count in (1, 4, 5):
            assert fixed.score(images[:count]) == pytest.approx(dynamic.score(images[:count]))
    finally:
        fixed.close()
        dynamic.close()
