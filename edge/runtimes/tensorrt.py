"""TensorRT on an NVIDIA GPU: one code path for TensorRT 10.x (JetPack 6) and 11.x.

Loading a bundle finds (or builds, in a child process: :mod:`edge.runtimes.plans`)
the plan for this box, deserializes it, and reads the I/O tensors by name. Each
thread that calls :meth:`TensorRTBackend.infer` gets its own execution context,
non-blocking stream, pinned host buffers, device buffers and timing events, so
two workers never share mutable state. A call: set the input shape, copy the
batch into pinned memory, H2D copy, ``execute_async_v3``, D2H copy, all on that
stream, with CUDA events between the steps for the H2D, compute and D2H times.

Only strongly typed networks are built (TensorRT 11 has nothing else, and 10.x
accepts the flag): precision comes from the ONNX itself, so a bundle that ships
``model_fp16`` runs in FP16 and one that does not runs in FP32. With
:mod:`edge.runtimes.cuda`, the only module that imports TensorRT; it imports it
lazily so that this module loads, and says why it cannot serve, without it.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import threading
import time
from collections import deque
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edge.bundle.manifest import Bundle
from edge.errors import EngineError
from edge.runtimes import cuda
from edge.runtimes.plans import BuildRequest, PlanCache, PlanKey
from edge.runtimes.tensor_io import PlanIo, PlanTensor, match_io
from edge.runtimes.trt_build import (
    add_profile,
    load_timing_cache,
    parser_error,
    progress_monitor,
    save_timing_cache,
    strongly_typed_flags,
)

log = logging.getLogger(__name__)

NAME = "tensorrt"
SUPPORTED_MAJOR = (10, 11)
#: the optimisation profile: batches of 1 to this many images, tuned for a four-view study
BUILD_MAX_BATCH = 8


def is_available() -> tuple[bool, str]:
    if importlib.util.find_spec("tensorrt") is None:
        return False, "TensorRT not installed"
    ok, why = cuda.is_available()
    if not ok:
        return False, why
    version = _trt().__version__
    if int(version.split(".")[0]) not in SUPPORTED_MAJOR:
        return False, f"TensorRT {version} is not supported (10.x or 11.x)"
    return True, f"TensorRT {version} on {why}"


def _trt() -> Any:
    import tensorrt

    return tensorrt


# -- TensorRT's own messages --------------------------------------------------------------


@cache
def capturing_logger() -> Any:
    """The process's TensorRT logger: forwards to :mod:`logging` and keeps recent problems.

    TensorRT wants one logger that outlives every object created with it, so there
    is one per process; :meth:`problems_since` gives the errors of one operation.
    """
    trt = _trt()

    class CapturingLogger(trt.ILogger):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self._lock = threading.Lock()
            self._seen = 0
            self._problems: deque[tuple[int, str]] = deque(maxlen=200)

        def log(self, severity: Any, msg: str) -> None:
            if severity == trt.ILogger.VERBOSE:
                return
            if severity in (trt.ILogger.INTERNAL_ERROR, trt.ILogger.ERROR):
                log.error("TensorRT: %s", msg)
            elif severity == trt.ILogger.WARNING:
                log.warning("TensorRT: %s", msg)
            else:
                log.debug("TensorRT: %s", msg)
                return
            with self._lock:
                self._seen += 1
                self._problems.append((self._seen, f"{severity.name}: {msg}"))

        def mark(self) -> int:
            with self._lock:
                return self._seen

        def problems_since(self, mark: int) -> list[str]:
            with self._lock:
                return [text for number, text in self._problems if number > mark]

    return CapturingLogger()


def _failure(what: str, mark: int) -> EngineError:
    problems = capturing_logger().problems_since(mark)
    detail = " | ".join(problems[-10:]) if problems else "TensorRT gave no message"
    return EngineError(f"{what}: {detail}")


# -- the backend ------------------------------------------------------------------------------


class TensorRTBackend:
    name = NAME

    def __init__(self, bundle: Bundle, *, threads: int = 0, plan_cache: Path | None = None) -> None:
        # threads is ONNX Runtime's knob; TensorRT's parallelism is the GPU's.
        if plan_cache is None:
            raise EngineError("the TensorRT backend needs a plan cache folder")
        trt = _trt()
        self._runtime = trt.Runtime(capturing_logger())
        plans = PlanCache(plan_cache)
        plan = ensure_plan(bundle, plans)
        try:
            self._engine = self._deserialize(plan)
        except EngineError as exc:
            # A cached plan that matches the key yet fails (a truncated file, a driver
            # that changed under the same TensorRT version) is rebuilt once.
            log.warning("cached plan %s unusable (%s); rebuilding it", plan.name, exc)
            plans.discard(plan)
            self._engine = self._deserialize(ensure_plan(bundle, plans))
        self._io = _read_io(self._engine, bundle)
        self.max_batch = self._io.max_batch
        self._local = threading.local()
        self._lock = threading.Lock()
        self._contexts: list[_ThreadContext] = []

    def _deserialize(self, plan: Path) -> Any:
        mark = capturing_logger().mark()
        try:
            engine = self._runtime.deserialize_cuda_engine(plan.read_bytes())
        except RuntimeError:
            engine = None
        if engine is None:
            raise _failure(f"{plan.name}: TensorRT cannot deserialize the plan", mark)
        return engine

    def infer(self, batch: npt.NDArray[np.float32]) -> tuple[npt.NDArray[np.float32], ...]:
        context = self._thread_context()
        passes, timings = [], {"h2d": 0.0, "compute": 0.0, "d2h": 0.0}
        for start in range(0, len(batch), self.max_batch):
            outputs, step = context.run(batch[start : start + self.max_batch])
            passes.append(outputs)
            timings = {k: timings[k] + step[k] for k in timings}
        self._local.timings = timings
        return tuple(np.concatenate(output, axis=0) for output in zip(*passes, strict=True))

    def last_timings_ms(self) -> dict[str, float]:
        return dict(getattr(self._local, "timings", {}))

    def close(self) -> None:
        with self._lock:
            contexts, self._contexts = self._contexts, []
        for context in contexts:
            context.close()
        # Engine before runtime: TensorRT requires the runtime to outlive its engines.
        self._engine = None
        self._runtime = None

    def _thread_context(self) -> _ThreadContext:
        context: _ThreadContext | None = getattr(self._local, "context", None)
        if context is None:
            context = _ThreadContext(self._engine, self._io)
            self._local.context = context
            with self._lock:
                self._contexts.append(context)
        return context


class _ThreadContext:
    """One thread's execution context with its stream, buffers and events."""

    def __init__(self, engine: Any, io: PlanIo) -> None:
        mark = capturing_logger().mark()
        self.context = engine.create_execution_context()
        if self.context is None:
            raise _failure("TensorRT cannot create an execution context", mark)
        self.io = io
        self.stream = cuda.Stream()
        in_bytes = io.input.nbytes(io.max_batch)
        self.host_in, self.device_in = cuda.PinnedBuffer(in_bytes), cuda.DeviceBuffer(in_bytes)
        out_bytes = [output.nbytes(io.max_batch) for output in io.outputs]
        self.host_out = [cuda.PinnedBuffer(size) for size in out_bytes]
        self.device_out = [cuda.DeviceBuffer(size) for size in out_bytes]
        self.events = [cuda.Event() for _ in range(4)]
        # The buffers never move, so their addresses are bound once.
        self.context.set_tensor_address(io.input.name, self.device_in.ptr)
        for output, device in zip(io.outputs, self.device_out, strict=True):
            self.context.set_tensor_address(output.name, device.ptr)

    def run(
        self, batch: npt.NDArray[np.float32]
    ) -> tuple[tuple[npt.NDArray[np.float32], ...], dict[str, float]]:
        io, wanted = self.io, len(batch)
        count = io.max_batch if io.static_batch else wanted
        mark = capturing_logger().mark()
        shape = (count, *io.input.sample)
        if not self.context.set_input_shape(io.input.name, shape):
            raise _failure(f"TensorRT refused the input shape {shape}", mark)
        host_in = self.host_in.view(io.input.dtype, io.input.items(count)).reshape(shape)
        np.copyto(host_in[:wanted], batch, casting="same_kind")
        host_in[wanted:] = 0
        start, copied_in, computed, copied_out = self.events
        start.record(self.stream)
        cuda.copy_to_device(self.device_in, self.host_in, host_in.nbytes, self.stream)
        copied_in.record(self.stream)
        if not self.context.execute_async_v3(self.stream.handle):
            raise _failure("TensorRT execute_async_v3 failed", mark)
        computed.record(self.stream)
        for output, host, device in zip(io.outputs, self.host_out, self.device_out, strict=True):
            cuda.copy_to_host(host, device, output.nbytes(count), self.stream)
        copied_out.record(self.stream)
        self.stream.synchronize()
        timings = {
            "h2d": copied_in.elapsed_ms(start),
            "compute": computed.elapsed_ms(copied_in),
            "d2h": copied_out.elapsed_ms(computed),
        }
        outputs = tuple(
            host.view(output.dtype, output.items(count))
            .reshape(count, *output.sample)[:wanted]
            .astype(np.float32, copy=True)
            for output, host in zip(io.outputs, self.host_out, strict=True)
        )
        return outputs, timings

    def close(self) -> None:
        self.stream.synchronize()
        for event in self.events:
            event.close()
        for pinned in (self.host_in, *self.host_out):
            pinned.free()
        for device in (self.device_in, *self.device_out):
            device.free()
        self.stream.close()
        self.context = None


def _read_io(engine: Any, bundle: Bundle) -> PlanIo:
    """The plan's tensors, read off the engine and matched to the manifest."""
    trt = _trt()
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]

    def described(name: str) -> PlanTensor:
        dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
        return name, tuple(int(d) for d in engine.get_tensor_shape(name)), dtype

    inputs = [described(n) for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    outputs = [described(n) for n in names if engine.get_tensor_mode(n) != trt.TensorIOMode.INPUT]
    profile_max = None
    if inputs and inputs[0][1] and inputs[0][1][0] < 0:
        profile_max = int(engine.get_tensor_profile_shape(inputs[0][0], 0)[2][0])
    return match_io(inputs, outputs, bundle.manifest, profile_max)


# -- the plan for this box --------------------------------------------------------------------


def plan_key_for(bundle: Bundle) -> PlanKey:
    """The cache key of ``bundle``'s plan on this box's TensorRT and GPU."""
    manifest = bundle.manifest
    onnx = manifest.model_fp16 or manifest.model
    gpu = cuda.device_identity()
    return PlanKey(
        tensorrt_version=_trt().__version__,
        compute_capability=gpu.compute_capability,
        device_name=gpu.name,
        onnx_sha256=manifest.files[onnx],
        max_batch=BUILD_MAX_BATCH,
    )


def ensure_plan(bundle: Bundle, cache_: PlanCache) -> Path:
    """The cached plan for ``bundle`` on this box, built first when there is none."""
    key = plan_key_for(bundle)
    found = cache_.lookup(key)
    if found is not None:
        log.info("TensorRT plan %s found in the cache", found.name)
        return found
    manifest = bundle.manifest
    sample = manifest.inputs[0].shape[1:]
    if not all(isinstance(d, int) for d in sample):
        raise EngineError(f"only the batch dimension may be dynamic: {manifest.inputs[0].shape}")
    onnx = bundle.path / (manifest.model_fp16 or manifest.model)
    return cache_.build(
        key, onnx, input_name=manifest.inputs[0].name, sample_shape=tuple(int(d) for d in sample)
    )


# -- building a plan (runs in the child process) ---------------------------------------------


class _BuildFailed(Exception):
    def __init__(self, phase: str, errors: list[str]) -> None:
        super().__init__(f"{phase}: {errors}")
        self.phase = phase
        self.errors = errors


def build_from_request(path: Path) -> bool:
    """Build the plan a :class:`BuildRequest` asks for; write its report. True on success."""
    request = BuildRequest.read(path)
    started = time.monotonic()
    report: dict[str, Any] = {"ok": False, "phase": "start", "errors": []}
    try:
        plan = _build(request)
        Path(request.plan).write_bytes(plan)
        report.update(ok=True, phase="done")
    except _BuildFailed as exc:
        report.update(phase=exc.phase, errors=exc.errors)
    except ImportError as exc:
        report["errors"] = [f"TensorRT cannot be imported: {exc}"]
    except (RuntimeError, TypeError, ValueError, OSError) as exc:  # TensorRT's binding errors
        log.exception("TensorRT plan build failed")
        report["errors"] = [*capturing_logger().problems_since(0), f"{type(exc).__name__}: {exc}"]
    report["seconds"] = round(time.monotonic() - started, 1)
    Path(request.report).write_text(json.dumps(report, indent=1), encoding="utf-8")
    return bool(report["ok"])


def _build(request: BuildRequest) -> bytes:
    trt = _trt()
    logger = capturing_logger()
    builder = trt.Builder(logger)
    network = builder.create_network(strongly_typed_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(request.onnx):
        errors = [parser_error(parser.get_error(i)) for i in range(parser.num_errors)]
        raise _BuildFailed("parse", errors + logger.problems_since(0))
    config = builder.create_builder_config()
    add_profile(builder, network, config, request)
    timing_cache = load_timing_cache(config, Path(request.timing_cache))
    config.set_timing_cache(timing_cache, False)
    monitor = progress_monitor(trt)
    if monitor is not None:
        config.progress_monitor = monitor
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise _BuildFailed("build", logger.problems_since(0))
    save_timing_cache(config, Path(request.timing_cache))
    return bytes(memoryview(serialized))
