"""The self-test: a bundle's own inputs through the backend that will serve them.

A bundle carries a few inputs and the outputs its trainer expected
(``selftest.npz`` with arrays ``inputs`` (N, C, H, W) and ``outputs`` (N, ...), and for
a model with a suspicion map an array named after that output, (N, 1, rows, columns)).
Running them through the very backend that is about to score patients catches a
plan built for another GPU, a wrong FP16 conversion or a broken runtime before
the first study, not after.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from edge.bundle.manifest import Bundle
from edge.errors import EngineError
from edge.runtimes.base import Backend


@dataclass(frozen=True)
class SelfTestResult:
    count: int
    max_abs_diff: float
    tolerance: float
    backend: str


def load_selftest(
    bundle: Bundle,
) -> tuple[npt.NDArray[np.float32], tuple[npt.NDArray[np.float32], ...]]:
    """The bundle's self-test ``inputs`` and expected outputs, in the manifest's order."""
    spec = bundle.manifest.selftest
    if spec is None:
        raise EngineError(f"{bundle.path}: the manifest names no self-test set (selftest.file)")
    path = bundle.path / spec.file
    keys = ["outputs", *(output.name for output in bundle.manifest.outputs[1:])]
    try:
        with np.load(path, allow_pickle=False) as data:
            inputs = np.asarray(data["inputs"], dtype=np.float32)
            outputs = tuple(np.asarray(data[key], dtype=np.float32) for key in keys)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise EngineError(f"{path}: cannot read the self-test set: {exc}") from exc
    if inputs.ndim != 4 or len(inputs) == 0 or any(len(inputs) != len(o) for o in outputs):
        raise EngineError(
            f"{path}: expected inputs (N, C, H, W) and {', '.join(keys)} (N, ...) with N > 0, "
            f"got {inputs.shape} and {', '.join(str(o.shape) for o in outputs)}"
        )
    return inputs, outputs


def run_selftest(bundle: Bundle, backend: Backend) -> SelfTestResult:
    """Run the self-test set through ``backend`` and compare within the manifest's tolerance.

    Raises
    ------
    EngineError
        With the largest absolute difference when any output is off by more than
        the tolerance, or the output's shape differs from the expected one.
    """
    inputs, expected_outputs = load_selftest(bundle)
    spec = bundle.manifest.selftest
    assert spec is not None  # load_selftest refuses a bundle without one
    tolerance = spec.tolerance
    actual_outputs = backend.infer(np.ascontiguousarray(inputs))
    if len(actual_outputs) != len(expected_outputs):
        raise EngineError(
            f"self-test on {backend.name}: {len(actual_outputs)} outputs, expected "
            f"{len(expected_outputs)}"
        )
    actual = _side_by_side(actual_outputs)
    expected = _side_by_side(expected_outputs)
    if actual.shape != expected.shape:
        raise EngineError(
            f"self-test on {backend.name}: output shapes {[a.shape for a in actual_outputs]} "
            f"differ from the expected {[e.shape for e in expected_outputs]}"
        )
    diff = np.abs(actual - expected)
    max_diff = float(np.max(diff)) if np.all(np.isfinite(diff)) else float("inf")
    if not max_diff <= tolerance:
        worst = int(np.argmax(np.max(np.nan_to_num(diff, nan=np.inf), axis=1)))
        raise EngineError(
            f"self-test on {backend.name} failed: max |difference| {max_diff:.6g} exceeds the "
            f"tolerance {tolerance:g} (worst on self-test input {worst} of {len(inputs)})"
        )
    return SelfTestResult(len(inputs), max_diff, tolerance, backend.name)


def _side_by_side(outputs: tuple[npt.NDArray[np.float32], ...]) -> npt.NDArray[np.float32]:
    """Every output of an image in one row, so one tolerance and one worst row cover all."""
    return np.concatenate([output.reshape(len(output), -1) for output in outputs], axis=1)
