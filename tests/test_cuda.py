"""CUDA through cuda-python: pinned buffers, async copies on a stream, timing events.

These need an NVIDIA GPU and cuda-python (or pycuda), not TensorRT:
``pytest -m gpu tests/test_cuda.py`` on a box with CUDA and cuda-bindings.
"""

from __future__ import annotations

import re
import threading

import numpy as np
import pytest

from edge.runtimes import cuda


def _skip_reason() -> str | None:
    if not cuda.binding_installed():
        return "cuda-python not installed"
    ok, why = cuda.is_available()
    return None if ok else why


pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or ""),
]


def round_trip(values: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
    """Host -> device -> host through pinned buffers on a private stream, with events."""
    nbytes = values.nbytes
    source, target = cuda.PinnedBuffer(nbytes), cuda.PinnedBuffer(nbytes)
    device = cuda.DeviceBuffer(nbytes)
    stream = cuda.Stream()
    events = [cuda.Event() for _ in range(3)]
    try:
        source.view(values.dtype, values.size)[:] = values
        target.view(values.dtype, values.size)[:] = 0
        events[0].record(stream)
        cuda.copy_to_device(device, source, nbytes, stream)
        events[1].record(stream)
        cuda.copy_to_host(target, device, nbytes, stream)
        events[2].record(stream)
        stream.synchronize()
        timings = {"h2d": events[1].elapsed_ms(events[0]), "d2h": events[2].elapsed_ms(events[1])}
        return target.view(values.dtype, values.size).copy(), timings
    finally:
        for event in events:
            event.close()
        stream.close()
        for buffer in (source, target, device):
            buffer.free()


def test_the_device_is_identified() -> None:
    gpu = cuda.device_identity()
    assert gpu.name
    assert re.fullmatch(r"\d+\.\d+", gpu.compute_capability)


def test_pinned_buffers_round_trip_through_the_device() -> None:
    values = np.arange(4 * 512 * 512, dtype=np.float32)
    back, timings = round_trip(values)
    np.testing.assert_array_equal(back, values)
    assert set(timings) == {"h2d", "d2h"}
    assert all(value >= 0 for value in timings.values())


def test_threads_with_their_own_streams_keep_their_own_data() -> None:
    results: dict[int, np.ndarray] = {}

    def work(index: int) -> None:
        results[index] = round_trip(np.full(1 << 20, index, dtype=np.float32))[0]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(results) == [0, 1, 2, 3]
    for index, values in results.items():
        assert np.all(values == index)


def test_a_cuda_error_names_the_call() -> None:
    with pytest.raises(cuda.CudaError, match=r"cudaMalloc|mem_alloc"):
        cuda.DeviceBuffer(1 << 60)  # an exabyte: no GPU has it
