"""The TensorRT backend on a real GPU: plan build and cache, inference, self-test, threads.

Skipped, with the reason, where TensorRT or an NVIDIA GPU is absent.
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from engine_bundles import make_bundle

from edge.bundle.manifest import load_bundle
from edge.engines.selftest import run_selftest
from edge.errors import EngineError
from edge.runtimes import cuda
from edge.runtimes.plans import PlanCache


def _skip_reason() -> str | None:
    if importlib.util.find_spec("tensorrt") is None:
        return "TensorRT not installed"
    ok, why = cuda.is_available()
    return None if ok else why


pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or ""),
]

SIZE = 128


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("bundle") / "b", version="1.0", size=SIZE)


@pytest.fixture(scope="module")
def plans(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("plans")


def reference(bundle_dir: Path, batch: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(
        str(bundle_dir / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    return np.asarray(session.run(["score"], {"image": batch})[0])


def backend(bundle_dir: Path, plans: Path):  # type: ignore[no-untyped-def]
    from edge.runtimes.tensorrt import TensorRTBackend

    return TensorRTBackend(load_bundle(bundle_dir), plan_cache=plans)


def test_builds_the_plan_and_matches_onnxruntime(bundle_dir: Path, plans: Path) -> None:
    trt = backend(bundle_dir, plans)
    try:
        assert trt.max_batch == 8
        batch = np.random.default_rng(1).random((4, 1, SIZE, SIZE), dtype=np.float32)
        np.testing.assert_allclose(trt.infer(batch)[0], reference(bundle_dir, batch), atol=1e-4)
        timings = trt.last_timings_ms()
        assert set(timings) == {"h2d", "compute", "d2h"}
        assert all(value >= 0 for value in timings.values())
        # More images than the profile allows are split into calls the profile allows.
        big = np.random.default_rng(2).random((11, 1, SIZE, SIZE), dtype=np.float32)
        np.testing.assert_allclose(trt.infer(big)[0], reference(bundle_dir, big), atol=1e-4)
        assert run_selftest(load_bundle(bundle_dir), trt).max_abs_diff <= 1e-4
    finally:
        trt.close()
    (entry,) = PlanCache(plans).entries()
    assert entry.key.tensorrt_version and entry.key.device_name


def test_a_cached_plan_is_reused(bundle_dir: Path, plans: Path) -> None:
    backend(bundle_dir, plans).close()
    before = {p.name: p.stat().st_mtime_ns for p in plans.glob("*.plan")}
    backend(bundle_dir, plans).close()
    assert {p.name: p.stat().st_mtime_ns for p in plans.glob("*.plan")} == before


def test_each_thread_gets_its_own_context(bundle_dir: Path, plans: Path) -> None:
    trt = backend(bundle_dir, plans)
    batches = {i: np.full((2, 1, SIZE, SIZE), i / 10, dtype=np.float32) for i in range(4)}
    outputs: dict[int, np.ndarray] = {}

    def work(index: int) -> None:
        for _ in range(20):
            outputs[index] = trt.infer(batches[index])[0]

    threads = [threading.Thread(target=work, args=(i,)) for i in batches]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        for index, batch in batches.items():
            np.testing.assert_allclose(outputs[index], reference(bundle_dir, batch), atol=1e-4)
    finally:
        trt.close()


def test_a_suspicion_map_comes_back_beside_the_score(tmp_path: Path) -> None:
    bundle_dir = make_bundle(tmp_path / "map", version="1.0", size=SIZE, map_cell=16)
    trt = backend(bundle_dir, tmp_path / "plans")
    try:
        batch = np.random.default_rng(4).random((5, 1, SIZE, SIZE), dtype=np.float32)
        score, suspicion = trt.infer(batch)
        session = ort.InferenceSession(
            str(bundle_dir / "model.onnx"), providers=["CPUExecutionProvider"]
        )
        expected_score, expected_map = session.run(["score", "suspicion"], {"image": batch})
        np.testing.assert_allclose(score, expected_score, atol=1e-4)
        np.testing.assert_allclose(suspicion, expected_map, atol=1e-4)
        assert run_selftest(load_bundle(bundle_dir), trt).max_abs_diff <= 1e-4
    finally:
        trt.close()


def test_a_model_tensorrt_cannot_parse_reports_tensorrts_error(tmp_path: Path) -> None:
    bundle_dir = make_bundle(tmp_path / "b", version="1.0", size=SIZE)
    key = _key(bundle_dir)
    onnx = bundle_dir / "model.onnx"
    onnx.write_bytes(onnx.read_bytes()[:200])  # truncated: no valid graph
    cache = PlanCache(tmp_path / "plans")
    with pytest.raises(EngineError, match="failed at parse"):
        cache.build(key, onnx, input_name="image", sample_shape=(1, SIZE, SIZE))
    assert cache.entries() == []


def _key(bundle_dir: Path):  # type: ignore[no-untyped-def]
    from edge.runtimes.tensorrt import plan_key_for

    return plan_key_for(load_bundle(bundle_dir))
