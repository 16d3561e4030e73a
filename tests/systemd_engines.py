"""Small real engine bundles for the service tests, made with the onnx helper API.

``make_bundle`` scores an image as sigmoid(mean(image)) and carries a self-test
set computed by ONNX Runtime. ``make_hanging_bundle`` is a hostile engine: its
model spins in a ``Loop`` whose trip count is the image's brightest pixel times
10^15, so the daemon's blank warm-up image passes in no time while any real
mammogram keeps the inference call busy for good, a stage stuck for real.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import yaml
from onnx import TensorProto, helper, numpy_helper

SIZE = 64


def _image_input() -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, SIZE, SIZE])


def _score_output() -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch", 1])


def _save(graph: onnx.GraphProto, path: Path) -> None:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))


def _mean_score_nodes(extra: str | None = None) -> list[onnx.NodeProto]:
    nodes = [
        helper.make_node("GlobalAveragePool", ["image"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
    ]
    if extra is None:
        return [*nodes, helper.make_node("Sigmoid", ["flat"], ["score"])]
    return [
        *nodes,
        helper.make_node("Add", ["flat", extra], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["score"]),
    ]


def write_mean_model(path: Path) -> None:
    graph = helper.make_graph(_mean_score_nodes(), "mean", [_image_input()], [_score_output()])
    _save(graph, path)


def write_spinning_model(path: Path) -> None:
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("Identity", ["carried_in"], ["carried_out"]),
        ],
        "spin",
        [
            helper.make_tensor_value_info("iteration", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("carried_in", TensorProto.FLOAT, []),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("carried_out", TensorProto.FLOAT, []),
        ],
    )
    constants = [
        numpy_helper.from_array(np.array(1e15, dtype=np.float32), "huge"),
        numpy_helper.from_array(np.array(True), "keep_going"),
        numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero"),
    ]
    nodes = [
        helper.make_node("ReduceMax", ["image"], ["brightest"], keepdims=0),
        helper.make_node("Mul", ["brightest", "huge"], ["spins_float"]),
        helper.make_node("Cast", ["spins_float"], ["spins"], to=TensorProto.INT64),
        helper.make_node("Loop", ["spins", "keep_going", "zero"], ["carried"], body=body),
        *_mean_score_nodes(extra="carried"),
    ]
    graph = helper.make_graph(
        nodes, "spin-on-bright", [_image_input()], [_score_output()], initializer=constants
    )
    _save(graph, path)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write_manifest(folder: Path, name: str, selftest: bool) -> None:
    files = ["model.onnx", *(["selftest.npz"] if selftest else [])]
    manifest: dict[str, Any] = {
        "schema": "edge.engine/1",
        "name": name,
        "version": "1.0.0",
        "model": "model.onnx",
        "inputs": [{"name": "image", "shape": ["batch", 1, SIZE, SIZE], "dtype": "float32"}],
        "outputs": [{"name": "score", "shape": ["batch", 1], "dtype": "float32"}],
        "preprocessing": {"height": SIZE, "width": SIZE},
        "threshold": 0.6,
        "files": {file: _sha256(folder / file) for file in files},
    }
    if selftest:
        manifest["selftest"] = {"file": "selftest.npz", "tolerance": 1e-4}
    (folder / "manifest.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))


def make_bundle(folder: Path) -> Path:
    """A working bundle with a self-test set whose outputs ONNX Runtime computed."""
    folder.mkdir(parents=True)
    write_mean_model(folder / "model.onnx")
    inputs = np.random.default_rng(3).random((3, 1, SIZE, SIZE), dtype=np.float32)
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    (outputs,) = session.run(["score"], {"image": inputs})
    np.savez(folder / "selftest.npz", inputs=inputs, outputs=outputs)
    _write_manifest(folder, "test-mean", selftest=True)
    return folder


def make_hanging_bundle(folder: Path) -> Path:
    """A bundle whose model never returns on a real image (see the module docstring)."""
    folder.mkdir(parents=True)
    write_spinning_model(folder / "model.onnx")
    _write_manifest(folder, "test-spin", selftest=False)
    return folder


def flip_byte(path: Path) -> None:
    """Corrupt ``path`` the way a bad copy does: one bit in the middle changed."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
