"""The protocol every inference backend implements.

A backend runs one engine bundle's model: it takes a batch in the manifest's input
layout (N, C, H, W) as float32 and returns every output the manifest declares, in
its order (the score, then any suspicion map), each with one row per image.
Backends are created through :mod:`edge.runtimes.registry`, never imported for
their side effects.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

from edge.bundle.manifest import Bundle


class Backend(Protocol):
    #: registry name: ``onnxruntime`` or ``tensorrt``
    name: str
    #: the largest batch the model runs in one pass (the inference worker gathers
    #: no more); :meth:`infer` splits a larger one
    max_batch: int

    def infer(self, batch: npt.NDArray[np.float32]) -> tuple[npt.NDArray[np.float32], ...]:
        """Run the model on ``batch`` (N, C, H, W), in passes of at most ``max_batch``;
        return its outputs in the manifest's order, each (N, ...)."""
        ...

    def last_timings_ms(self) -> dict[str, float]:
        """Device timings of the last call (``h2d``, ``compute``, ``d2h``), if measured."""
        ...

    def close(self) -> None:
        """Release the session and any device memory."""
        ...


class BackendFactory(Protocol):
    def __call__(self, bundle: Bundle, *, threads: int, plan_cache: Path | None) -> Backend:
        """Load ``bundle``; ``plan_cache`` is where compiled plans live (TensorRT only)."""
        ...
