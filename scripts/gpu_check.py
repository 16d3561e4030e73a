"""The prepared GPU check behind ``scripts/gpu-check`` (see that script and the README).

``fetch`` (here, with PyPI): the wheels a GPU machine without internet lacks, into
``.whl/``, and two real views of both breasts as JPEG 2000 Lossless (written the way
the bench writes them) into ``.gpu-check/studies/``.

``run`` (there): every ``gpu``-marked test, then JPEG 2000 decoding on the GPU against
the CPU on the real views, and one JSON report. Each step has its own time limit so
that the whole stays under 8 minutes.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
WHEELS = ROOT / ".whl"
STUDIES = ROOT / ".gpu-check" / "studies"
#: what the GPU machine's image lacks (its package list: numpy, OpenCV, PyYAML,
#: ONNX Runtime, cuda-bindings, PyTorch... are there); pip resolves their needs.
#: Not glymur: it needs the system's libopenjp2, which that image is not known to
#: have; openjpeg comes through pylibjpeg-openjpeg there. Wheels and studies must
#: stay under the 64 MiB a call may carry to the GPU machine (with the source tree).
WANTED = [
    "nvidia-nvimgcodec-cu13",
    "nvidia-nvjpeg2k-cu13",
    "pydicom>=3.0,<4",
    "pylibjpeg>=2.0",
    "pylibjpeg-openjpeg>=2.3",
    "pydantic>=2.6,<3",
    "paho-mqtt>=2.0,<3",
    "watchdog>=4.0",
    "cryptography>=42",
    "jsonschema>=4.20",
]
#: needs that the machine already has: their wheels are dropped, never shadowing its own
PRESENT = {
    "numpy",
    "packaging",
    "typing_extensions",
    "attrs",
    "pyyaml",
    "setuptools",
    "pillow",
    "lxml",
}
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"]
GPU_TESTS = ["tests/test_cuda.py", "tests/test_decode_gpu.py", "tests/test_tensorrt.py"]


def fetch(python: str) -> None:
    WHEELS.mkdir(exist_ok=True)
    platforms = [arg for name in PLATFORMS for arg in ("--platform", name)]
    command = [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:"]
    command += ["--python-version", python, "--implementation", "cp", *platforms]
    subprocess.run([*command, "-d", str(WHEELS), *WANTED], check=True)
    for wheel in WHEELS.glob("*.whl"):
        if wheel.name.split("-")[0].lower() in PRESENT:
            wheel.unlink()
    _write_studies()
    size = sum(p.stat().st_size for p in [*WHEELS.glob("*.whl"), *STUDIES.glob("*.dcm")])
    print(f"gpu-check: {size / 2**20:.0f} MiB in .whl/ and .gpu-check/studies/")


def _write_studies() -> None:
    from edge.tools.bench.corpus import default_cache_dir, templates

    STUDIES.mkdir(parents=True, exist_ok=True)
    case = templates(default_cache_dir(), ["jpeg2000"], cases=1, workers=1)["jpeg2000"][0]
    for view in ("rcc", "lcc"):
        shutil.copyfile(case[view], STUDIES / f"{view}.dcm")


def run(report_path: Path) -> int:
    report: dict[str, Any] = {"schema": "edge.gpu-check/1", "started": time.time()}
    report["machine"] = _machine()
    report["tests"] = _gpu_tests(timeout_s=300)
    report["decode_bench"] = _decode_bench(deadline=time.monotonic() + 120)
    report["seconds"] = round(time.time() - report["started"], 1)
    failed = report["tests"].get("failed", 1) or "error" in report["decode_bench"]
    # a box where nothing ran on the GPU has checked nothing: not ok, whatever passed
    report["ok"] = not failed and bool(report["machine"]["gpu_decoder"][0])
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(json.dumps(report, indent=1))
    print(json.dumps({k: report[k] for k in ("ok", "seconds", "machine")}, indent=1))
    print(f"gpu-check: report in {report_path}")
    return 0 if report["ok"] else 1


def _machine() -> dict[str, Any]:
    from edge.pipeline import gpudecode
    from edge.runtimes import cuda

    smi = shutil.which("nvidia-smi")
    gpus = subprocess.run([smi, "-L"], capture_output=True, text=True).stdout if smi else ""
    return {
        "python": platform.python_version(),
        "gpus": gpus.strip().splitlines(),
        "cuda": cuda.is_available(),
        "gpu_decoder": gpudecode.is_available(),
        "cpus": os.cpu_count(),
    }


def _gpu_tests(timeout_s: float) -> dict[str, Any]:
    junit = ROOT / ".gpu-check" / "junit.xml"
    junit.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider"]
    try:
        done = subprocess.run(
            [*command, f"--junitxml={junit}", *GPU_TESTS],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired:
        return {"failed": 1, "error": f"the gpu tests ran past {timeout_s:.0f} s"}
    outcome = _read_junit(junit) if junit.exists() else {"failed": 1}
    outcome["exit_status"] = done.returncode
    outcome["tail"] = (done.stdout + done.stderr)[-3000:]
    return outcome


def _read_junit(path: Path) -> dict[str, Any]:
    cases = []
    for case in ElementTree.parse(path).getroot().iter("testcase"):
        result = next(iter(case), None)
        status = "passed" if result is None else result.tag
        message = "" if result is None else (result.get("message") or "")[:300]
        cases.append({"test": f"{case.get('classname')}::{case.get('name')}", status: message})
    counts = {s: sum(1 for c in cases if s in c) for s in ("passed", "skipped", "failure", "error")}
    return {
        "passed": counts["passed"],
        "skipped": counts["skipped"],
        "failed": counts["failure"] + counts["error"],
        "cases": cases,
    }


def _decode_bench(deadline: float, repeats: int = 5) -> dict[str, Any]:
    """Median decode time of each real view: GPU, CPU at the chosen level, CPU full size."""
    from edge.pipeline.decode import decode, load_model_input
    from edge.pipeline.ingest import read_header
    from edge.types import IncomingFile

    files = sorted(STUDIES.glob("*.dcm"))
    if not files:
        return {"error": "no real views in .gpu-check/studies (scripts/gpu-check --fetch)"}
    target, views = (1024, 832), {}
    for path in files:
        info = path.stat()
        incoming = IncomingFile(path, info.st_size, info.st_mtime_ns, time.monotonic(), "scan")
        image = read_header(incoming, max_pixels=120_000_000)
        ways = {
            "gpu": functools.partial(decode, image, target=target, gpu=True),
            "cpu_chosen_level": functools.partial(decode, image, target=target),
            "cpu_full": functools.partial(decode, image, target=target, tolerance=0.0),
        }
        views[path.stem] = {name: _timed(way, repeats, deadline) for name, way in ways.items()}
        views[path.stem]["gpu_decoder"] = decode(image, gpu=True).decoder
        views[path.stem]["max_input_difference_gpu_vs_cpu_full"] = _input_difference(
            image, load_model_input
        )
    return {"target": list(target), "repeats": repeats, "views": views}


def _timed(call: Any, repeats: int, deadline: float) -> dict[str, float]:
    call()  # warm-up: the GPU decoder's first call makes its resources
    times = []
    for _ in range(repeats):
        if time.monotonic() > deadline:
            break
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return {"median_ms": round(statistics.median(times), 1) if times else -1.0, "n": len(times)}


def _input_difference(image: Any, load_model_input: Any) -> float:
    from edge.bundle.manifest import Preprocessing

    spec = Preprocessing(height=1024, width=832)
    gpu = load_model_input(image, spec, gpu=True).tensor
    cpu = load_model_input(image, spec, tolerance=0.0).tensor
    return float(abs(gpu - cpu).max())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    fetching = commands.add_parser("fetch", help="download the wheels and write the studies")
    fetching.add_argument("--python", default="3.12", help="the GPU machine's Python")
    running = commands.add_parser("run", help="on the GPU machine")
    out = Path(os.environ["OUT"]) / "gpu-check.json" if os.environ.get("OUT") else None
    default = out or ROOT / ".gpu-check" / "report.json"
    running.add_argument("--report", type=Path, default=default)
    args = parser.parse_args()
    if args.command == "fetch":
        fetch(args.python)
        return 0
    return run(args.report)


if __name__ == "__main__":
    sys.exit(main())
