"""CUDA for the TensorRT backend: pinned host buffers, device buffers, streams and events.

Through cuda-python's runtime bindings (``cuda.bindings.runtime``; ``cuda.cudart``
in cuda-python releases before 12.6), which NVIDIA's TensorRT samples use since
10.14, install from wheels on x86 and aarch64, and share the device's primary
context with TensorRT in every thread. pycuda is the fallback only where
cuda-python is absent; it needs the primary context pushed in each thread that
calls it, which :class:`_PyCuda` does once per thread.

Every call returns ``(error, value...)`` in cuda-python; :func:`_CudaPython._check`
turns an error into a :class:`CudaError` naming the call and CUDA's error name.
With :mod:`edge.runtimes.tensorrt`, the only module that imports CUDA.
"""

from __future__ import annotations

import ctypes
import importlib.util
import threading
from dataclasses import dataclass
from functools import cache
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from edge.errors import EngineError


class CudaError(EngineError):
    """A CUDA call failed, or no CUDA binding or device is present."""


@dataclass(frozen=True)
class DeviceIdentity:
    name: str
    #: "8.7" for an Orin, "9.0" for an H100
    compute_capability: str


class _Api(Protocol):
    name: str

    def device_count(self) -> int: ...
    def identity(self, device: int) -> DeviceIdentity: ...
    def host_alloc(self, nbytes: int) -> int: ...
    def host_free(self, ptr: int) -> None: ...
    def device_alloc(self, nbytes: int) -> int: ...
    def device_free(self, ptr: int) -> None: ...
    def stream_create(self) -> Any: ...
    def stream_handle(self, stream: Any) -> int: ...
    def stream_sync(self, stream: Any) -> None: ...
    def stream_destroy(self, stream: Any) -> None: ...
    def event_create(self) -> Any: ...
    def event_record(self, event: Any, stream: Any) -> None: ...
    def event_elapsed_ms(self, start: Any, end: Any) -> float: ...
    def event_destroy(self, event: Any) -> None: ...
    def copy_h2d(self, dst: int, src: int, nbytes: int, stream: Any) -> None: ...
    def copy_d2h(self, dst: int, src: int, nbytes: int, stream: Any) -> None: ...


class _CudaPython:
    name = "cuda-python"

    def __init__(self) -> None:
        try:
            from cuda.bindings import runtime
        except ImportError:  # cuda-python before 12.6 kept the module at cuda.cudart
            from cuda import cudart as runtime
        self.rt: Any = runtime

    def _check(self, what: str, result: Any) -> Any:
        error, *values = result if isinstance(result, tuple) else (result,)
        if error != self.rt.cudaError_t.cudaSuccess:
            _, name = self.rt.cudaGetErrorName(error)
            raise CudaError(f"{what} failed: {name.decode() if isinstance(name, bytes) else name}")
        return values[0] if len(values) == 1 else None

    def device_count(self) -> int:
        return int(self._check("cudaGetDeviceCount", self.rt.cudaGetDeviceCount()))

    def identity(self, device: int) -> DeviceIdentity:
        prop = self._check("cudaGetDeviceProperties", self.rt.cudaGetDeviceProperties(device))
        raw = prop.name
        name = raw.split(b"\0", 1)[0].decode() if isinstance(raw, bytes) else str(raw)
        return DeviceIdentity(name.strip(), f"{prop.major}.{prop.minor}")

    def host_alloc(self, nbytes: int) -> int:
        flags = self.rt.cudaHostAllocDefault
        return int(self._check("cudaHostAlloc", self.rt.cudaHostAlloc(nbytes, flags)))

    def host_free(self, ptr: int) -> None:
        self._check("cudaFreeHost", self.rt.cudaFreeHost(ptr))

    def device_alloc(self, nbytes: int) -> int:
        return int(self._check("cudaMalloc", self.rt.cudaMalloc(nbytes)))

    def device_free(self, ptr: int) -> None:
        self._check("cudaFree", self.rt.cudaFree(ptr))

    def stream_create(self) -> Any:
        # Non-blocking: no implicit synchronisation with the legacy default stream, so
        # two workers' copies and kernels overlap instead of queueing behind each other.
        flags = self.rt.cudaStreamNonBlocking
        return self._check("cudaStreamCreateWithFlags", self.rt.cudaStreamCreateWithFlags(flags))

    def stream_handle(self, stream: Any) -> int:
        return int(stream)

    def stream_sync(self, stream: Any) -> None:
        self._check("cudaStreamSynchronize", self.rt.cudaStreamSynchronize(stream))

    def stream_destroy(self, stream: Any) -> None:
        self._check("cudaStreamDestroy", self.rt.cudaStreamDestroy(stream))

    def event_create(self) -> Any:
        return self._check("cudaEventCreate", self.rt.cudaEventCreate())

    def event_record(self, event: Any, stream: Any) -> None:
        self._check("cudaEventRecord", self.rt.cudaEventRecord(event, stream))

    def event_elapsed_ms(self, start: Any, end: Any) -> float:
        self._check("cudaEventSynchronize", self.rt.cudaEventSynchronize(end))
        return float(self._check("cudaEventElapsedTime", self.rt.cudaEventElapsedTime(start, end)))

    def event_destroy(self, event: Any) -> None:
        self._check("cudaEventDestroy", self.rt.cudaEventDestroy(event))

    def copy_h2d(self, dst: int, src: int, nbytes: int, stream: Any) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._check("cudaMemcpyAsync", self.rt.cudaMemcpyAsync(dst, src, nbytes, kind, stream))

    def copy_d2h(self, dst: int, src: int, nbytes: int, stream: Any) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._check("cudaMemcpyAsync", self.rt.cudaMemcpyAsync(dst, src, nbytes, kind, stream))


class _PyCuda:
    """The fallback where cuda-python is absent: pycuda on the device's primary context."""

    name = "pycuda"

    def __init__(self) -> None:
        import pycuda.driver as driver

        try:
            driver.init()
            self._context = driver.Device(0).retain_primary_context()
        except driver.Error as exc:
            raise CudaError(f"pycuda cannot open the GPU: {exc}") from exc
        self.drv: Any = driver
        self._local = threading.local()
        # pycuda copies between Python buffers, so the arrays behind our pointers are kept.
        self._host: dict[int, Any] = {}
        self._device: dict[int, Any] = {}

    def _enter(self) -> None:
        if not getattr(self._local, "pushed", False):
            self._context.push()
            self._local.pushed = True

    def device_count(self) -> int:
        return int(self.drv.Device.count())

    def identity(self, device: int) -> DeviceIdentity:
        gpu = self.drv.Device(device)
        major, minor = gpu.compute_capability()
        return DeviceIdentity(str(gpu.name()), f"{major}.{minor}")

    def host_alloc(self, nbytes: int) -> int:
        self._enter()
        try:
            array = self.drv.pagelocked_empty(nbytes, np.uint8)
        except self.drv.Error as exc:
            raise CudaError(f"pagelocked_empty failed: {exc}") from exc
        self._host[array.ctypes.data] = array
        return int(array.ctypes.data)

    def host_free(self, ptr: int) -> None:
        self._host.pop(ptr).base.free()

    def device_alloc(self, nbytes: int) -> int:
        self._enter()
        try:
            allocation = self.drv.mem_alloc(nbytes)
        except self.drv.Error as exc:
            raise CudaError(f"mem_alloc failed: {exc}") from exc
        self._device[int(allocation)] = allocation
        return int(allocation)

    def device_free(self, ptr: int) -> None:
        self._device.pop(ptr).free()

    def stream_create(self) -> Any:
        self._enter()
        return self.drv.Stream()

    def stream_handle(self, stream: Any) -> int:
        return int(stream.handle)

    def stream_sync(self, stream: Any) -> None:
        stream.synchronize()

    def stream_destroy(self, stream: Any) -> None:
        del stream  # pycuda destroys it with the object

    def event_create(self) -> Any:
        self._enter()
        return self.drv.Event()

    def event_record(self, event: Any, stream: Any) -> None:
        event.record(stream)

    def event_elapsed_ms(self, start: Any, end: Any) -> float:
        end.synchronize()
        return float(end.time_since(start))

    def event_destroy(self, event: Any) -> None:
        del event

    def copy_h2d(self, dst: int, src: int, nbytes: int, stream: Any) -> None:
        self._enter()
        self.drv.memcpy_htod_async(dst, self._host[src][:nbytes], stream)

    def copy_d2h(self, dst: int, src: int, nbytes: int, stream: Any) -> None:
        self._enter()
        self.drv.memcpy_dtoh_async(self._host[dst][:nbytes], src, stream)


@cache
def api() -> _Api:
    """The CUDA binding in use: cuda-python where installed, else pycuda."""
    if importlib.util.find_spec("cuda") is not None:
        try:
            return _CudaPython()
        except ImportError:
            pass  # a namespace "cuda" package without the runtime bindings: try pycuda
    if importlib.util.find_spec("pycuda") is not None:
        return _PyCuda()
    raise CudaError("neither cuda-python nor pycuda is installed")


def binding_installed() -> bool:
    return (
        importlib.util.find_spec("cuda") is not None
        or importlib.util.find_spec("pycuda") is not None
    )


def is_available() -> tuple[bool, str]:
    """Whether a CUDA binding and at least one NVIDIA GPU are present, and why (not)."""
    try:
        binding = api()
        count = binding.device_count()
    except CudaError as exc:
        return False, f"no NVIDIA GPU: {exc}"
    if count == 0:
        return False, "no NVIDIA GPU: CUDA sees no device"
    gpu = binding.identity(0)
    return True, f"{gpu.name} (compute capability {gpu.compute_capability}) via {binding.name}"


def device_identity(device: int = 0) -> DeviceIdentity:
    return api().identity(device)


class PinnedBuffer:
    """Page-locked host memory, so that copies to and from the GPU run asynchronously."""

    def __init__(self, nbytes: int) -> None:
        self.nbytes = nbytes
        self.ptr = api().host_alloc(nbytes)
        raw = (ctypes.c_uint8 * nbytes).from_address(self.ptr)
        self._bytes = np.frombuffer(memoryview(raw), dtype=np.uint8)

    def view(self, dtype: npt.DTypeLike, count: int) -> npt.NDArray[Any]:
        """The first ``count`` items of the buffer as ``dtype``, without a copy."""
        items: npt.NDArray[Any] = self._bytes.view(dtype)[:count]
        return items

    def free(self) -> None:
        if self.ptr:
            api().host_free(self.ptr)
            self.ptr = 0


class DeviceBuffer:
    def __init__(self, nbytes: int) -> None:
        self.nbytes = nbytes
        self.ptr = api().device_alloc(nbytes)

    def free(self) -> None:
        if self.ptr:
            api().device_free(self.ptr)
            self.ptr = 0


class Stream:
    """A non-blocking CUDA stream."""

    def __init__(self) -> None:
        self._stream = api().stream_create()
        self.handle = api().stream_handle(self._stream)

    @property
    def raw(self) -> Any:
        return self._stream

    def synchronize(self) -> None:
        api().stream_sync(self._stream)

    def close(self) -> None:
        if self._stream is not None:
            api().stream_destroy(self._stream)
            self._stream = None


class Event:
    """A timing event, recorded on a stream."""

    def __init__(self) -> None:
        self._event = api().event_create()

    def record(self, stream: Stream) -> None:
        api().event_record(self._event, stream.raw)

    def elapsed_ms(self, since: Event) -> float:
        """GPU time from ``since`` to this event (waits for this one to complete)."""
        return api().event_elapsed_ms(since._event, self._event)

    def close(self) -> None:
        if self._event is not None:
            api().event_destroy(self._event)
            self._event = None


def copy_to_device(target: DeviceBuffer, source: PinnedBuffer, nbytes: int, stream: Stream) -> None:
    api().copy_h2d(target.ptr, source.ptr, nbytes, stream.raw)


def copy_to_host(target: PinnedBuffer, source: DeviceBuffer, nbytes: int, stream: Stream) -> None:
    api().copy_d2h(target.ptr, source.ptr, nbytes, stream.raw)
