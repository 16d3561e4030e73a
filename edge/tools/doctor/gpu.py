"""Whether a GPU, its driver and TensorRT are there, or the CPU will serve.

Only looks: the NVIDIA tool ``nvidia-smi`` on x86, the driver's device nodes,
and the L4T release file of a Jetson. TensorRT is judged by the registry's own
``availability`` of the ``tensorrt`` backend, the same answer ``auto`` gets.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from edge.runtimes import registry
from edge.tools.doctor.check import Check

JETSON_RELEASE = Path("/etc/nv_tegra_release")
DRIVER_VERSION = Path("/proc/driver/nvidia/version")
DEVICE_NODES = (Path("/dev/nvidiactl"), Path("/dev/nvidia0"), Path("/dev/nvhost-ctrl-gpu"))
INSTALL_TENSORRT = (
    "install TensorRT (x86: scripts/install.sh --extras tensorrt; Jetson: apt install "
    "python3-libnvinfer), or set engine.backend: onnxruntime"
)


def check_gpu(backend: str) -> Check:
    """OK with what serves; FAIL when the configured backend cannot, or a GPU idles."""
    gpu = describe_gpu()
    if gpu is None:
        if backend == "tensorrt":
            return Check(
                "gpu",
                False,
                "no NVIDIA GPU seen, but engine.backend is tensorrt",
                "install the NVIDIA driver, or set engine.backend: auto to serve on the CPU",
            )
        return Check("gpu", True, "CPU only: ONNX Runtime will serve")
    usable, why = registry.availability("tensorrt")
    if usable:
        return Check("gpu", True, f"{gpu}; TensorRT: {why}")
    if backend == "onnxruntime":
        return Check("gpu", True, f"{gpu}; engine.backend is onnxruntime: the CPU will serve")
    return Check("gpu", False, f"{gpu}, but TensorRT cannot serve: {why}", INSTALL_TENSORRT)


def describe_gpu() -> str | None:
    """A line naming the GPU and its driver, or None when there is none."""
    if JETSON_RELEASE.exists():
        release = JETSON_RELEASE.read_text(errors="replace").splitlines()[:1]
        return "Jetson GPU, " + (release[0].lstrip("# ").strip() if release else "L4T")
    smi = shutil.which("nvidia-smi")
    if smi is not None:
        described = _ask_nvidia_smi(smi)
        if described:
            return described
    if any(node.exists() for node in DEVICE_NODES):
        driver = _driver_version()
        return f"NVIDIA device nodes present, {driver or 'driver version unknown'}"
    return None


def _ask_nvidia_smi(smi: str) -> str | None:
    try:
        answer = subprocess.run(
            [smi, "--query-gpu=name,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    rows = [line.split(",") for line in answer.stdout.splitlines() if line.strip()]
    if answer.returncode != 0 or not rows:
        return None
    names = sorted({row[0].strip() for row in rows})
    drivers = sorted({row[-1].strip() for row in rows})
    return f"{len(rows)} x {', '.join(names)}, driver {', '.join(drivers)}"


def _driver_version() -> str | None:
    try:
        first = DRIVER_VERSION.read_text(errors="replace").splitlines()[:1]
    except OSError:
        return None
    return first[0].strip() if first else None
