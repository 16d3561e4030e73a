"""Small real engine bundles for the service tests, made with the onnx helper API.

``make_bundle`` scores an image as sigmoid(mean(image)) and carries a self-test
set computed by ONNX Runtime (``engine_bundles.make_bundle`` with unit weights).
``make_hanging_bundle`` is a hostile engine: its
model spins in a ``Loop`` whose trip count is the image's brightest pixel times
10^15, so the daemon's blank warm-up image passes in no time while any real
mammogram keeps the inference call busy for good, a stage stuck for real.
"""

from __future__ import annotations

from pathlib import Path

import engine_bundles
import numpy as np
import onnx
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


def _mean_score_nodes(extra: str) -> list[onnx.NodeProto]:
    """sigmoid(mean(image) + extra)."""
    return [
        helper.make_node("GlobalAveragePool", ["image"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("Add", ["flat", extra], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["score"]),
    ]


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


def make_bundle(folder: Path) -> Path:
    """A working bundle scoring sigmoid(mean(image)), with a self-test set."""
    return engine_bundles.make_bundle(
        folder, name="test-mean", version="1.0.0", threshold=0.6, size=SIZE, scale=1.0, bias=0.0
    )


def make_hanging_bundle(folder: Path) -> Path:
    """A bundle whose model never returns on a real image (see the module docstring)."""
    folder.mkdir(parents=True)
    write_spinning_model(folder / "model.onnx")
    engine_bundles.write_manifest(
        folder, name="test-spin", version="1.0.0", threshold=0.6, size=SIZE, selftest=False
    )
    return folder
