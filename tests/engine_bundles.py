"""Real engine bundles for the tests: a small ONNX model made with the onnx helper API.

The model scores an image as sigmoid(scale * mean(image + pad) + bias). ``pad`` is a
real (zero) constant of the image's size, so the model file is as large as the
test needs (the interrupted-install tests copy a file bigger than a size limit).
With ``map_cell`` it also gives a suspicion map: the mean of each ``map_cell`` square
of the input (an average pool), so a bright spot is a peak exactly where it was drawn.
The self-test outputs are what ONNX Runtime computes for the self-test inputs.
"""

from __future__ import annotations

import functools
import hashlib
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import yaml
from onnx import TensorProto, helper, numpy_helper

from edge.engines.signing import generate_key, sign_bundle
from edge.types import ImageHeader, IncomingFile

ROOT = Path(__file__).resolve().parents[1]


def make_model(
    path: Path,
    *,
    size: int,
    scale: float,
    bias: float,
    batch: int | str = "batch",
    map_cell: int | None = None,
) -> None:
    pad = numpy_helper.from_array(np.zeros((1, 1, size, size), dtype=np.float32), "pad")
    weights = [
        numpy_helper.from_array(np.array([[scale]], dtype=np.float32), "scale"),
        numpy_helper.from_array(np.array([[bias]], dtype=np.float32), "bias"),
    ]
    nodes = [
        helper.make_node("Add", ["image", "pad"], ["padded"]),
        helper.make_node("GlobalAveragePool", ["padded"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("Mul", ["flat", "scale"], ["scaled"]),
        helper.make_node("Add", ["scaled", "bias"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["score"]),
    ]
    outputs = [helper.make_tensor_value_info("score", TensorProto.FLOAT, [batch, 1])]
    if map_cell is not None:
        cells = size // map_cell
        pool = {"kernel_shape": [map_cell, map_cell], "strides": [map_cell, map_cell]}
        nodes.append(helper.make_node("AveragePool", ["padded"], ["suspicion"], **pool))
        outputs.append(
            helper.make_tensor_value_info("suspicion", TensorProto.FLOAT, [batch, 1, cells, cells])
        )
    graph = helper.make_graph(
        nodes,
        "edge-test-model",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch, 1, size, size])],
        outputs,
        initializer=[pad, *weights],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_bundle(
    folder: Path,
    *,
    version: str,
    name: str = "test-engine",
    threshold: float = 0.5,
    size: int = 64,
    scale: float = 4.0,
    bias: float = -1.0,
    selftest_offset: float = 0.0,
    batch: int | str = "batch",
    map_cell: int | None = None,
    map_threshold: float = 0.5,
) -> Path:
    """Write a complete bundle; ``selftest_offset`` shifts the expected outputs, and
    ``batch`` (a number) exports the model with a fixed batch; ``map_cell`` adds a
    suspicion map whose findings start at ``map_threshold``."""
    folder.mkdir(parents=True, exist_ok=True)
    model = functools.partial(make_model, size=size, scale=scale, bias=bias, map_cell=map_cell)
    model(folder / "model.onnx")
    inputs = np.random.default_rng(7).random((3, 1, size, size), dtype=np.float32)
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    outputs, *maps = session.run(None, {"image": inputs})
    if batch != "batch":  # the bundle's model: the same weights, exported for one batch size
        model(folder / "model.onnx", batch=batch)
    expected = {"outputs": outputs + selftest_offset}
    if maps:
        expected["suspicion"] = maps[0]
    np.savez(folder / "selftest.npz", inputs=inputs, **expected)
    write_manifest(
        folder,
        name=name,
        version=version,
        threshold=threshold,
        size=size,
        batch=batch,
        map_cells=None if map_cell is None else size // map_cell,
        map_threshold=map_threshold,
    )
    return folder


def write_manifest(
    folder: Path,
    *,
    name: str,
    version: str,
    threshold: float,
    size: int,
    batch: int | str = "batch",
    selftest: bool = True,
    map_cells: int | None = None,
    map_threshold: float = 0.5,
) -> None:
    """The manifest of the bundle in ``folder`` (``selftest``: with selftest.npz;
    ``map_cells``: with a suspicion map of that many cells a side)."""
    files = ["model.onnx", *(["selftest.npz"] if selftest else [])]
    manifest: dict[str, Any] = {
        "schema": "edge.engine/1",
        "name": name,
        "version": version,
        "description": "test model made by tests/engine_bundles.py",
        "model": "model.onnx",
        "inputs": [{"name": "image", "shape": [batch, 1, size, size], "dtype": "float32"}],
        "outputs": [{"name": "score", "shape": [batch, 1], "dtype": "float32"}],
        "preprocessing": {"height": size, "width": size},
        "threshold": threshold,
        "files": {n: sha256(folder / n) for n in files},
    }
    if selftest:
        manifest["selftest"] = {"file": "selftest.npz", "tolerance": 1e-4}
    if map_cells is not None:
        manifest["outputs"].append(
            {
                "name": "suspicion",
                "shape": [batch, 1, map_cells, map_cells],
                "dtype": "float32",
                "meaning": "suspicion_map",
                "threshold": map_threshold,
                "max_findings": 4,
            }
        )
    (folder / "manifest.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))


def make_key(folder: Path, stem: str = "signing") -> tuple[Path, Path]:
    private, public = folder / f"{stem}.key", folder / f"{stem}.pub"
    folder.mkdir(parents=True, exist_ok=True)
    generate_key(private, public)
    return private, public


def make_signed_bundle(folder: Path, key: Path, **options: Any) -> Path:
    make_bundle(folder, **options)
    sign_bundle(folder, key)
    return folder


def flip_byte(path: Path, offset: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    where = len(data) // 2 if offset is None else offset
    data[where] ^= 0x01
    path.write_bytes(bytes(data))


def edge_cli(*args: str | Path, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """``python -m edge ARGS`` in a child process, as a technician runs it."""
    return subprocess.run(
        [sys.executable, "-m", "edge", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
        check=False,
        **kwargs,
    )


def image_header(sop: str, study: str = "study", *, size: int = 64) -> ImageHeader:
    """The header of a left CC image of ``size`` x ``size``, as ingest hands it on,
    for feeding a bundle's engine directly."""
    return ImageHeader(
        source=IncomingFile(Path(sop), 1, 1, time.monotonic(), "scan"),
        sop_uid=sop,
        study_uid=study,
        accession="A1",
        laterality="L",
        view="CC",
        rows=size,
        columns=size,
        transfer_syntax="",
        row_direction=None,
    )
