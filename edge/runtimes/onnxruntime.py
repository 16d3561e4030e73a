"""ONNX Runtime on the CPU: the backend of machines without an NVIDIA GPU."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import numpy.typing as npt

from edge.bundle.manifest import Bundle
from edge.errors import EngineError

NAME = "onnxruntime"


def is_available() -> tuple[bool, str]:
    if importlib.util.find_spec("onnxruntime") is None:
        return False, "the onnxruntime package is not installed"
    return True, "onnxruntime installed"


#: On a CPU an image takes as long alone as in a batch (demo engine, 2-core VM:
#: 2.2 ms an image alone, 2.0 in batches of 4 to 16), while ONNX Runtime's memory
#: arena grows to the largest batch it has run, about 12 MB an image for the demo
#: engine: images go one at a time, and the daemon's memory stays flat.
CPU_MAX_BATCH = 1


class OnnxRuntimeBackend:
    name = NAME

    def __init__(self, bundle: Bundle, *, threads: int = 0, plan_cache: Path | None = None) -> None:
        # plan_cache is not used: ONNX Runtime compiles nothing that outlives the session.
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or (os.cpu_count() or 1)
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle worker threads must sleep, not spin: the appliance waits for files
        # most of the time and spinning would burn a core between studies.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        try:
            self._session = ort.InferenceSession(
                str(bundle.model_path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises untyped errors
            raise EngineError(f"{bundle.model_path}: ONNX Runtime cannot load it: {exc}") from exc
        spec = bundle.manifest.inputs[0]
        self._input = spec.name
        #: every output the manifest declares (the score, then any suspicion map)
        self._outputs = [output.name for output in bundle.manifest.outputs]
        batch_dim = spec.shape[0]
        #: a model exported with a fixed batch runs only that batch: smaller ones are padded
        self._static_batch = not isinstance(batch_dim, str)
        self.max_batch = int(batch_dim) if self._static_batch else CPU_MAX_BATCH

    def infer(self, batch: npt.NDArray[np.float32]) -> tuple[npt.NDArray[np.float32], ...]:
        passes = [
            self._run(batch[start : start + self.max_batch])
            for start in range(0, len(batch), self.max_batch)
        ]
        if len(passes) == 1:
            return passes[0]
        return tuple(np.concatenate(output, axis=0) for output in zip(*passes, strict=True))

    def _run(self, batch: npt.NDArray[np.float32]) -> tuple[npt.NDArray[np.float32], ...]:
        wanted = len(batch)
        if self._static_batch and wanted < self.max_batch:
            padded = np.zeros((self.max_batch, *batch.shape[1:]), dtype=batch.dtype)
            padded[:wanted] = batch
            batch = padded
        outputs = self._session.run(self._outputs, {self._input: batch})
        return tuple(np.asarray(output, dtype=np.float32)[:wanted] for output in outputs)

    def last_timings_ms(self) -> dict[str, float]:
        return {}

    def close(self) -> None:
        del self._session
