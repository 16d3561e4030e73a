"""The TensorRT plan cache on the CPU: key logic, lookups, and a build's failure report."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import pytest

from edge.errors import EngineError
from edge.runtimes import registry
from edge.runtimes.plans import RECIPE, PlanCache, PlanKey

KEY = PlanKey(
    tensorrt_version="10.3.0",
    compute_capability="8.7",
    device_name="Orin",
    onnx_sha256="ab" * 32,
    max_batch=8,
)


def test_the_same_inputs_give_the_same_key() -> None:
    again = PlanKey("10.3.0", "8.7", "Orin", "ab" * 32, 8)
    assert again.digest() == KEY.digest()
    assert len(KEY.digest()) == 32 and int(KEY.digest(), 16) >= 0
    assert KEY.recipe == RECIPE


@pytest.mark.parametrize(
    "change",
    [
        {"tensorrt_version": "10.3.1"},  # a JetPack or pip upgrade
        {"tensorrt_version": "11.0.0"},
        {"compute_capability": "8.6"},  # another GPU generation
        {"device_name": "NVIDIA H200"},  # same generation, another board
        {"onnx_sha256": "cd" * 32},  # another model, or its FP16 variant
        {"max_batch": 4},
        {"recipe": "edge-plan/0"},
    ],
)
def test_any_change_of_what_a_plan_depends_on_changes_the_key(change: dict[str, object]) -> None:
    assert dataclasses.replace(KEY, **change).digest() != KEY.digest()  # type: ignore[arg-type]


def test_the_timing_cache_is_shared_across_models_on_one_box() -> None:
    other_model = dataclasses.replace(KEY, onnx_sha256="cd" * 32)
    assert other_model.device_digest() == KEY.device_digest()
    assert dataclasses.replace(KEY, device_name="x").device_digest() != KEY.device_digest()


def write_entry(cache: PlanCache, key: PlanKey, meta_key: PlanKey) -> Path:
    cache.root.mkdir(parents=True, exist_ok=True)
    plan = cache.plan_path(key)
    plan.write_bytes(b"plan bytes")
    meta = {"key": dataclasses.asdict(meta_key), "onnx": "model.onnx", "built_at": "now"}
    plan.with_suffix(".json").write_text(json.dumps(meta))
    return plan


def test_lookup_finds_only_a_plan_whose_recorded_key_matches(tmp_path: Path) -> None:
    cache = PlanCache(tmp_path / "plans")
    assert cache.lookup(KEY) is None
    plan = write_entry(cache, KEY, KEY)
    assert cache.lookup(KEY) == plan
    (entry,) = cache.entries()
    assert (entry.key, entry.onnx_name, entry.size) == (KEY, "model.onnx", len(b"plan bytes"))
    # A file under the right name whose metadata names another TensorRT is not used.
    write_entry(cache, KEY, dataclasses.replace(KEY, tensorrt_version="10.2.0"))
    assert cache.lookup(KEY) is None
    cache.discard(plan)
    assert cache.entries() == []


@pytest.mark.skipif(
    importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here"
)
def test_a_build_without_tensorrt_reports_why(tmp_path: Path) -> None:
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"not used")
    cache = PlanCache(tmp_path / "plans")
    with pytest.raises(EngineError, match="TensorRT cannot be imported") as error:
        cache.build(KEY, onnx, input_name="image", sample_shape=(1, 64, 64))
    assert "failed at start" in str(error.value)
    assert cache.entries() == []
    assert list(cache.root.iterdir()) == []  # the build's scratch folder is gone


@pytest.mark.skipif(
    importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here"
)
def test_auto_says_why_it_chose_onnxruntime() -> None:
    assert registry.availability("tensorrt") == (False, "TensorRT not installed")
    assert registry.choose("auto") == "onnxruntime"
    with pytest.raises(EngineError, match="backend tensorrt is not available: TensorRT not"):
        registry.choose("tensorrt")
