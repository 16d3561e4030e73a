"""The parts of a TensorRT plan build that only handle what TensorRT hands them.

Run in the build's child process (:func:`edge.runtimes.tensorrt.build_from_request`):
the optimisation profile, the timing cache kept between builds, the parser's errors
and the progress display. The TensorRT module itself is passed in, never imported:
only :mod:`edge.runtimes.tensorrt` and :mod:`edge.runtimes.cuda` import TensorRT/CUDA.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from pathlib import Path
from typing import Any

from edge.runtimes.plans import BuildRequest

log = logging.getLogger(__name__)

#: the batch TensorRT tunes its kernels for, within the profile's 1..max_batch
BUILD_OPT_BATCH = 4


def parser_error(error: Any) -> str:
    describe = getattr(error, "desc", None)
    if not callable(describe):
        return str(error)
    return f"ONNX parser: {describe()} (node {error.node()}, code {error.code()})"


def strongly_typed_flags(trt: Any) -> int:
    # 10.x: opt in; 11.x: every network is strongly typed and the flag is accepted.
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    return 0 if flag is None else 1 << int(flag)


def add_profile(builder: Any, network: Any, config: Any, request: BuildRequest) -> None:
    tensor = network.get_input(0)
    if tensor.shape[0] >= 0:
        return  # a static batch needs no profile
    sample = tuple(request.sample_shape)
    profile = builder.create_optimization_profile()
    opt = min(BUILD_OPT_BATCH, request.max_batch)
    profile.set_shape(tensor.name, (1, *sample), (opt, *sample), (request.max_batch, *sample))
    config.add_optimization_profile(profile)


def load_timing_cache(config: Any, path: Path) -> Any:
    data = path.read_bytes() if path.is_file() else b""
    cache_ = config.create_timing_cache(data)
    if cache_ is None and data:
        log.warning("timing cache %s unusable; starting an empty one", path.name)
        cache_ = config.create_timing_cache(b"")
    return cache_


def save_timing_cache(config: Any, path: Path) -> None:
    serialized = config.get_timing_cache().serialize()
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_bytes(bytes(memoryview(serialized)))
    os.replace(temporary, path)


def progress_monitor(trt: Any) -> Any:
    """A progress display on the terminal (a plain line per phase when not a terminal)."""
    if not hasattr(trt, "IProgressMonitor"):
        return None

    class TerminalProgress(trt.IProgressMonitor):  # type: ignore[misc]
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self._lock = threading.Lock()
            self._phases: dict[str, tuple[int, int]] = {}
            self._tty = sys.stderr.isatty()

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            with self._lock:
                self._phases[phase_name] = (0, num_steps)
                if not self._tty and parent_phase is None:
                    print(f"TensorRT build: {phase_name} ({num_steps} steps)", file=sys.stderr)
                self._draw()

        def step_complete(self, phase_name: str, step: int) -> bool:
            with self._lock:
                _, total = self._phases.get(phase_name, (0, 0))
                self._phases[phase_name] = (step + 1, total)
                self._draw()
            return True  # never cancel

        def phase_finish(self, phase_name: str) -> None:
            with self._lock:
                self._phases.pop(phase_name, None)
                self._draw()

        def _draw(self) -> None:
            if not self._tty:
                return
            line = "  ".join(
                f"{name} {done}/{total}" for name, (done, total) in self._phases.items()
            )
            sys.stderr.write("\r\x1b[2K" + line[-200:])
            sys.stderr.flush()

    return TerminalProgress()
