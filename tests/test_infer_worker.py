"""The inference worker outlives a fault in handling a score: only that image fails."""

from __future__ import annotations

import dataclasses
import queue
from pathlib import Path

import numpy as np
import pytest
from engine_bundles import image_header, make_bundle

from edge.bundle.manifest import load_bundle
from edge.engines.engine import Engine
from edge.pipeline.findings import locate
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


def test_an_engine_with_a_suspicion_map_gives_findings_in_source_pixels(tmp_path: Path) -> None:
    """A bright square on the input is found where it lies on the source (a right breast,
    so the input was mirrored), on an image twice the input's size; an engine without a
    map gives none."""
    bundle = make_bundle(tmp_path / "map", version="1", map_cell=8, map_threshold=0.4)
    engine = Engine.load(load_bundle(bundle), backend="onnxruntime", threads=1)
    plain_bundle = load_bundle(make_bundle(tmp_path / "plain", version="1"))
    plain = Engine.load(plain_bundle, backend="onnxruntime", threads=1)
    tensor = np.zeros((1, SIZE, SIZE), dtype=np.float32)
    tensor[0, 16:24, 40:48] = 1.0  # map cell (2, 5): input centre (20, 44)
    header = dataclasses.replace(image_header("r"), laterality="R", rows=128, columns=128)
    try:
        _, maps = engine.evaluate(tensor[np.newaxis])
        assert maps is not None and maps.shape == (1, 8, 8)
        assert engine.suspicion_map is not None
        (finding,) = locate(engine.suspicion_map, maps[0], header, engine.preprocessing)
        # Mirrored back: input column 44 is source column (64 - 44) * 2; row 20 is row 40.
        assert (finding.row, finding.column) == pytest.approx((40.0, 40.0))
        assert finding.score == pytest.approx(1.0)
        assert plain.evaluate(tensor[np.newaxis])[1] is None
        assert plain.suspicion_map is None
    finally:
        engine.close()
        plain.close()


def test_the_worker_hands_on_each_images_own_findings(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "map", version="1", map_cell=8, map_threshold=0.4)
    engine = Engine.load(load_bundle(bundle), backend="onnxruntime", threads=1)
    scored: queue.Queue[ImageScore] = queue.Queue()
    worker = InferenceWorker(engine, scored.put, lambda item, reason, error: None)
    worker.start()
    blank = np.zeros((1, SIZE, SIZE), dtype=np.float32)
    spot = blank.copy()
    spot[0, 0:8, 0:8] = 1.0
    try:
        worker.submit(ModelInput(image_header("blank"), blank, engine=engine.info))
        worker.submit(ModelInput(image_header("spot"), spot, engine=engine.info))
        got = {s.header.sop_uid: s for s in (scored.get(timeout=30) for _ in range(2))}
        assert got["blank"].findings == ()
        (finding,) = got["spot"].findings
        assert (finding.row, finding.column) == pytest.approx((4.0, 4.0))
    finally:
        worker.stop(timeout=10)
        worker.close_engines()
