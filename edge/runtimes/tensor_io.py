"""The tensors a compiled plan takes and gives, matched to the manifest: pure logic.

TensorRT lists a plan's tensors in its own order and by name. The backend must bind
one device buffer per output and return the outputs in the manifest's order (the
score, then any suspicion map), so the matching, the shapes and the buffer sizes are
worked out here, from plain names and shapes, where the CPU tests can reach them;
:mod:`edge.runtimes.tensorrt` only reads them off the engine.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge.bundle.manifest import Manifest
from edge.errors import EngineError


@dataclass(frozen=True)
class TensorIo:
    """One input or output tensor of a plan."""

    name: str
    dtype: np.dtype[Any]
    #: one image's shape, without the batch dimension
    sample: tuple[int, ...]

    def items(self, batch: int) -> int:
        return batch * math.prod(self.sample)

    def nbytes(self, batch: int) -> int:
        return self.items(batch) * self.dtype.itemsize


@dataclass(frozen=True)
class PlanIo:
    input: TensorIo
    #: in the manifest's order: the score first, then any suspicion map
    outputs: tuple[TensorIo, ...]
    max_batch: int
    #: a plan exported with a fixed batch runs only that batch: smaller ones are padded
    static_batch: bool


#: a tensor as the plan describes it: name, full shape (-1 for a dynamic dimension), dtype
PlanTensor = tuple[str, tuple[int, ...], np.dtype[Any]]


def match_io(
    inputs: Sequence[PlanTensor],
    outputs: Sequence[PlanTensor],
    manifest: Manifest,
    profile_max_batch: int | None,
) -> PlanIo:
    """The plan's tensors, checked against the manifest and put in its order.

    ``profile_max_batch`` is the largest batch of the plan's optimisation profile (for a
    dynamic batch). Raises EngineError when the names differ from the manifest's or a
    dimension other than the batch is dynamic.
    """
    wanted_in = [manifest.inputs[0].name]
    wanted_out = [output.name for output in manifest.outputs]
    by_name = {name: (name, shape, dtype) for name, shape, dtype in outputs}
    if [name for name, _, _ in inputs] != wanted_in or sorted(by_name) != sorted(wanted_out):
        raise EngineError(
            f"plan tensors {[t[0] for t in inputs]} -> {[t[0] for t in outputs]} differ from "
            f"the manifest's {wanted_in} -> {wanted_out}"
        )
    ordered = [by_name[name] for name in wanted_out]
    shapes = [inputs[0][1], *(shape for _, shape, _ in ordered)]
    if any(d < 0 for shape in shapes for d in shape[1:]):
        raise EngineError(f"only the batch dimension may be dynamic: {shapes}")
    static = inputs[0][1][0] >= 0
    if not static and profile_max_batch is None:
        raise EngineError("a plan with a dynamic batch needs an optimisation profile")
    return PlanIo(
        input=_tensor(inputs[0]),
        outputs=tuple(_tensor(tensor) for tensor in ordered),
        max_batch=int(inputs[0][1][0]) if static else int(profile_max_batch or 0),
        static_batch=static,
    )


def _tensor(tensor: PlanTensor) -> TensorIo:
    name, shape, dtype = tensor
    return TensorIo(name=name, dtype=np.dtype(dtype), sample=tuple(int(d) for d in shape[1:]))
