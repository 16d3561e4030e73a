"""A manifest's outputs: the score, then optionally a suspicion map, checked strictly at load.

A bundle whose map is declared wrongly, or whose self-test set does not hold the map the
model gives, is refused before it serves, with the key that is wrong.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from engine_bundles import make_bundle, sha256

from edge.bundle.manifest import load_bundle, read_manifest
from edge.engines.engine import Engine
from edge.errors import EngineError

Change = Callable[[dict[str, Any]], object]


@pytest.fixture
def mapped(tmp_path: Path) -> Path:
    """A 64 x 64 test bundle with an 8 x 8 suspicion map."""
    return make_bundle(tmp_path / "bundle", version="1.0", map_cell=8)


def rewrite(bundle: Path, change: Change) -> None:
    path = bundle / "manifest.yaml"
    manifest = yaml.safe_load(path.read_text())
    change(manifest)
    path.write_text(yaml.safe_dump(manifest, sort_keys=False))


def the_map(manifest: dict[str, Any]) -> dict[str, Any]:
    return manifest["outputs"][1]  # type: ignore[no-any-return]


def test_a_declared_map_parses_and_a_bundle_without_one_has_none(
    mapped: Path, tmp_path: Path
) -> None:
    spec = read_manifest(mapped).suspicion_map
    assert spec is not None
    assert (spec.name, spec.shape, spec.meaning) == (
        "suspicion",
        ("batch", 1, 8, 8),
        "suspicion_map",
    )
    assert (spec.threshold, spec.max_findings) == (0.5, 4)
    plain = read_manifest(make_bundle(tmp_path / "plain", version="1.0"))
    assert plain.suspicion_map is None
    assert plain.outputs[0].meaning == "score"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda m: the_map(m).pop("meaning"), "outputs.1.meaning: a second output must be"),
        (lambda m: the_map(m).pop("threshold"), "outputs.1: a suspicion map needs its threshold"),
        (lambda m: the_map(m).pop("max_findings"), "needs its threshold and max_findings"),
        (lambda m: the_map(m).update(threshold=0), "outputs.1.threshold"),
        (lambda m: the_map(m).update(threshold=1.5), "outputs.1.threshold"),
        (lambda m: the_map(m).update(max_findings=0), "outputs.1.max_findings"),
        (lambda m: the_map(m).update(meaning="heatmap"), "outputs.1.meaning"),
        (lambda m: the_map(m).update(colour="red"), "outputs.1.colour: Extra inputs"),
        (lambda m: the_map(m).update(shape=["batch", 8, 8]), "outputs.1.shape: expected"),
        (lambda m: the_map(m).update(shape=[4, 1, 8, 8]), "outputs.1.shape: expected [batch"),
        (lambda m: the_map(m).update(shape=["batch", 2, 8, 8]), "outputs.1.shape"),
        (lambda m: the_map(m).update(shape=["batch", 1, "h", 8]), "must be numbers"),
        (lambda m: the_map(m).update(shape=["batch", 1, 65, 8]), "does not fit over the 64 x 64"),
        (lambda m: the_map(m).update(name="score"), "outputs.1.name: 'score'"),
        (lambda m: the_map(m).update(name="image"), "outputs.1.name: 'image'"),
        (lambda m: the_map(m).update(name="inputs"), "outputs.1.name: 'inputs'"),
        (lambda m: m["outputs"][0].update(meaning="suspicion_map"), "outputs.0.meaning"),
        (lambda m: m["outputs"][0].update(threshold=0.5), "belong to a suspicion map"),
        (lambda m: m["outputs"].append(the_map(m)), "outputs: Tuple should have at most 2"),
    ],
)
def test_a_wrongly_declared_map_is_refused_with_its_key(
    mapped: Path, change: Change, expected: str
) -> None:
    rewrite(mapped, change)
    with pytest.raises(EngineError, match="invalid manifest") as error:
        read_manifest(mapped)
    assert expected in str(error.value)


def test_a_self_test_set_without_the_map_is_refused(mapped: Path) -> None:
    with np.load(mapped / "selftest.npz") as data:
        np.savez(mapped / "selftest.npz", inputs=data["inputs"], outputs=data["outputs"])
    rewrite(mapped, lambda m: m["files"].update({"selftest.npz": sha256(mapped / "selftest.npz")}))
    with pytest.raises(EngineError, match="cannot read the self-test set"):
        Engine.load(load_bundle(mapped), backend="onnxruntime", threads=1)


def test_a_map_that_differs_from_its_self_test_fails_the_self_test(mapped: Path) -> None:
    with np.load(mapped / "selftest.npz") as data:
        arrays = {key: data[key] for key in data.files}
    arrays["suspicion"] = arrays["suspicion"] + 0.01
    np.savez(mapped / "selftest.npz", **arrays)
    rewrite(mapped, lambda m: m["files"].update({"selftest.npz": sha256(mapped / "selftest.npz")}))
    with pytest.raises(EngineError, match="self-test on onnxruntime failed"):
        Engine.load(load_bundle(mapped), backend="onnxruntime", threads=1)


def test_the_backend_returns_the_score_and_the_map_in_the_manifests_order(mapped: Path) -> None:
    engine = Engine.load(load_bundle(mapped), backend="onnxruntime", threads=1)
    try:
        batch = np.random.default_rng(5).random((3, 1, 64, 64), dtype=np.float32)
        score, suspicion = engine.backend.infer(batch)
        assert score.shape == (3, 1) and suspicion.shape == (3, 1, 8, 8)
        expected = batch.reshape(3, 1, 8, 8, 8, 8).mean(axis=(3, 5))
        np.testing.assert_allclose(suspicion, expected, atol=1e-6)
    finally:
        engine.close()
