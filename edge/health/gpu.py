"""GPU telemetry for the health message: NVML on x86, jetson-stats on a Jetson.

Both sources are optional extras (``pip install 'edge[nvml]'``, ``'edge[jetson]'``)
and imported only here, only when the daemon starts. Without either, or without
a GPU, :func:`open_gpu_telemetry` returns None and the health message carries no
``gpu`` field at all: an absent field means "not measured", never "zero".

A reading that one device does not support (NVML's ``NotSupported``, common on
Jetson and in MIG mode) is null in its field; the other fields still go out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import ModuleType
from typing import Any, Protocol

log = logging.getLogger(__name__)

#: NVML clock event ("throttle") reason bits, as nvml.h defines them
THROTTLE_REASONS: dict[int, str] = {
    0x001: "gpu_idle",
    0x002: "applications_clocks_setting",
    0x004: "sw_power_cap",
    0x008: "hw_slowdown",
    0x010: "sync_boost",
    0x020: "sw_thermal_slowdown",
    0x040: "hw_thermal_slowdown",
    0x080: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}


class GpuTelemetry(Protocol):
    """A source of per-GPU readings."""

    source: str

    def snapshot(self) -> list[dict[str, Any]]: ...

    def close(self) -> None: ...


def open_gpu_telemetry() -> GpuTelemetry | None:
    """NVML where it finds a GPU, else jetson-stats where its service runs, else None."""
    nvml = NvmlTelemetry.open()
    if nvml is not None:
        return nvml
    return JetsonTelemetry.open()


def throttle_reason_names(mask: int) -> list[str]:
    """The names of the clock event reasons set in an NVML bit mask."""
    names = [name for bit, name in THROTTLE_REASONS.items() if mask & bit]
    unknown = mask & ~sum(THROTTLE_REASONS)
    if unknown:
        names.append(f"other_0x{unknown:x}")
    return names


class NvmlTelemetry:
    """Readings from NVML (the ``nvidia-ml-py`` package, module ``pynvml``)."""

    source = "nvml"

    def __init__(self, nvml: ModuleType, handles: list[Any]) -> None:
        self._nvml = nvml
        self._handles = handles

    @classmethod
    def open(cls) -> NvmlTelemetry | None:
        try:
            import pynvml
        except ImportError:
            return None
        try:
            pynvml.nvmlInit()
            count = int(pynvml.nvmlDeviceGetCount())
            handles = [pynvml.nvmlDeviceGetHandleByIndex(index) for index in range(count)]
        except pynvml.NVMLError as exc:
            log.info("no GPU telemetry from NVML: %s", exc)
            return None
        if not handles:
            pynvml.nvmlShutdown()
            return None
        log.info("GPU telemetry from NVML: %d device(s)", len(handles))
        return cls(pynvml, handles)

    def snapshot(self) -> list[dict[str, Any]]:
        return [self._device(index, handle) for index, handle in enumerate(self._handles)]

    def close(self) -> None:
        try:
            self._nvml.nvmlShutdown()
        except self._nvml.NVMLError as exc:
            log.debug("nvmlShutdown: %s", exc)

    def _device(self, index: int, handle: Any) -> dict[str, Any]:
        nvml = self._nvml
        memory = self._read(lambda: nvml.nvmlDeviceGetMemoryInfo(handle))
        # Renamed "event reasons" in recent NVML; older bindings only have the old name.
        reasons = (
            getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None)
            or nvml.nvmlDeviceGetCurrentClocksThrottleReasons
        )
        mask = self._read(lambda: int(reasons(handle)))
        return {
            "index": index,
            "name": self._read(lambda: _text(nvml.nvmlDeviceGetName(handle))),
            "temperature_c": self._read(
                lambda: int(nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU))
            ),
            "utilization_percent": self._read(
                lambda: int(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
            ),
            "memory_used_mb": None if memory is None else int(memory.used) >> 20,
            "memory_total_mb": None if memory is None else int(memory.total) >> 20,
            "throttle_reasons": None if mask is None else throttle_reason_names(mask),
        }

    def _read(self, reading: Callable[[], Any]) -> Any:
        try:
            return reading()
        except self._nvml.NVMLError as exc:
            log.debug("NVML reading unavailable: %s", exc)
            return None


class JetsonTelemetry:
    """Readings from jetson-stats (module ``jtop``), whose service must be running."""

    source = "jetson-stats"

    def __init__(self, jetson: Any) -> None:
        self._jetson = jetson

    @classmethod
    def open(cls) -> JetsonTelemetry | None:
        try:
            from jtop import JtopException, jtop
        except ImportError:
            return None
        jetson = jtop()
        try:
            jetson.start()
        except (JtopException, OSError) as exc:  # no jtop service, or no access to it
            log.info("no GPU telemetry from jetson-stats: %s", exc)
            return None
        log.info("GPU telemetry from jetson-stats")
        return cls(jetson)

    def snapshot(self) -> list[dict[str, Any]]:
        stats: dict[str, Any] = dict(_lookup(lambda: self._jetson.stats) or {})
        memory = _lookup(lambda: self._jetson.memory["RAM"])
        return [
            {
                "index": 0,
                "name": _lookup(lambda: str(self._jetson.board["hardware"]["Module"])),
                "temperature_c": _first_number(stats, ("Temp gpu", "Temp GPU", "GPU Temp")),
                "utilization_percent": _first_number(stats, ("GPU",)),
                # A Jetson's GPU shares the system memory; jtop reports, in kB, the
                # pool's size and what the GPU holds of it ("shared").
                "memory_used_mb": _kb_to_mb(_lookup(lambda: memory["shared"])),
                "memory_total_mb": _kb_to_mb(_lookup(lambda: memory["tot"])),
                # jetson-stats does not report clock throttling reasons.
                "throttle_reasons": None,
            }
        ]

    def close(self) -> None:
        self._jetson.close()


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _lookup(reading: Callable[[], Any]) -> Any:
    try:
        return reading()
    except (KeyError, TypeError, AttributeError):
        return None


def _first_number(stats: dict[str, Any], keys: tuple[str, ...]) -> float | None:
    for key in keys:
        value = stats.get(key)
        if isinstance(value, int | float):
            return round(float(value), 1)
    return None


def _kb_to_mb(value: Any) -> int | None:
    return int(value) // 1024 if isinstance(value, int | float) else None
