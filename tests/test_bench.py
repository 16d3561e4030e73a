"""edge bench: it drives the real daemon and writes every figure the issue names.

Timings are never asserted here: the figures' presence and shape are, and the
definitions (overhead ratio, burst ideal) on figures the test makes itself.
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest

from edge.tools.bench.corpus import ENCODINGS, transcode
from edge.tools.bench.isolated import FileCost
from edge.tools.bench.phases import BurstRun, StudySample
from edge.tools.bench.report import Measured, build

PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"

#: the figures the issue's JSON must have: path -> keys under it
REQUIRED: dict[str, tuple[str, ...]] = {
    **{
        f"stages.{stage}": ("p50_ms", "p95_ms", "p99_ms")
        for stage in ("detect", "header", "decode", "preprocess", "infer", "assemble", "publish")
    },
    "e2e": ("p50_ms", "p95_ms", "p99_ms"),
    "e2e_burst": ("p50_ms", "p95_ms"),
    "burst": ("images_per_s", "ideal_images_per_s"),
    "rss_mb": ("warm", "after_soak", "decode_workers"),
    "baseline.e2e": ("p50_ms", "p95_ms"),
    "cstore.e2e": ("p50_ms", "p95_ms", "p99_ms"),
    "cstore.e2e_burst": ("p50_ms", "p95_ms"),
    "cad_sr.result_to_store_response": ("p50_ms", "p95_ms"),
    "": ("overhead_ratio", "overhead_ms", "idle_cpu_percent"),
    **{f"by_encoding.{e}": ("overhead_ratio", "overhead_ms") for e in ENCODINGS},
    # the repair phase: a real collector confirming, and lost results repaired
    "repair.to_hub": ("p50_ms", "p95_ms"),
    "repair.confirmed_after": ("p50_ms", "p95_ms"),
    "repair.gap_to_repair": ("p50_ms", "p95_ms"),
    # the score difference of the JPEG 2000 resolution level the daemon decodes at
    "by_encoding.jpeg2000.level_effect": ("max_abs_delta_score", "mean_abs_delta_score"),
}


def lookup(document: dict[str, Any], path: str) -> Any:
    node: Any = document
    for part in filter(None, path.split(".")):
        assert part in node, f"{path}: no {part!r} in {sorted(node)}"
        node = node[part]
    return node


@pytest.mark.slow
def test_quick_bench_runs_the_daemon_and_writes_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    chart = tmp_path / "bench.png"
    run = subprocess.run(
        [
            *(sys.executable, "-m", "edge", "bench", "--quick"),
            *("--json", str(out), "--chart", str(chart), "--cache-dir", str(tmp_path / "cache")),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    document = json.loads(out.read_text())
    for path, keys in REQUIRED.items():
        node = lookup(document, path)
        for key in keys:
            value = node[key]
            assert isinstance(value, int | float) and math.isfinite(value), (path, key, value)
    machine = document["machine"]
    assert isinstance(machine["cpu_count"], int) and machine["cpu_count"] >= 1
    assert machine["cpu_model"]
    assert machine["backend"] in ("onnxruntime", "tensorrt")
    assert set(document["by_encoding"]) == set(ENCODINGS)
    assert document["quick"] is True
    # the table, with the daemon and the baseline side by side
    assert "naive baseline" in run.stdout and "JPEG 2000 Lossless" in run.stdout
    assert "quick run" in run.stdout
    assert "JPEG 2000 Lossless: decoded 2x smaller per side (decode.score_tolerance 0.015)" in (
        run.stdout
    )
    if importlib.util.find_spec("matplotlib") is not None:
        assert chart.read_bytes().startswith(b"\x89PNG")
    else:
        assert "no chart: matplotlib is not installed" in run.stdout
        assert not chart.exists()


def test_unknown_encoding_is_refused_before_anything_starts(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "edge", "bench", "--quick", "--encodings", "rle,webp"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 1
    assert "--encodings: choose among rle, explicit_vr, jpeg2000" in run.stderr


#: PS3.5 A.4.2 RLE Lossless, A.2 Explicit VR Little Endian, A.4.4 JPEG 2000 Lossless Only
SYNTAXES = {
    "rle": "1.2.840.10008.1.2.5",
    "explicit_vr": "1.2.840.10008.1.2.1",
    "jpeg2000": "1.2.840.10008.1.2.4.90",
}


@pytest.mark.parametrize("encoding", list(ENCODINGS))
def test_re_encoding_is_lossless(tmp_path: Path, encoding: str) -> None:
    source = PYDICOM_FILES / "MR_small_RLE.dcm"
    target = tmp_path / f"{encoding}.dcm"
    transcode(source, encoding, target)
    encoded = pydicom.dcmread(target)
    assert encoded.file_meta.TransferSyntaxUID == SYNTAXES[encoding]
    np.testing.assert_array_equal(encoded.pixel_array, pydicom.dcmread(source).pixel_array)


def test_overhead_ratio_and_burst_ideal_follow_their_definitions() -> None:
    # made-up figures, to check the arithmetic of docs/bench.md
    # a decoder on two cores: 192 ms of wall time, 384 ms of CPU time
    cost = FileCost(header=2.0, decode=150.0, preprocess=40.0, infer=10.0, cpu_ms=384.0)
    samples = [StudySample("rle", e2e, {"decode": 150.0}) for e2e in (220.0, 200.0, 260.0)]
    measured = Measured(
        isolated={"rle": [cost]},
        isolated_last={"rle": [cost]},
        infer_images_per_s=50.0,
        e2e=samples,
        e2e_burst=samples,
        publish_ms={"p50": 2.0, "p95": 3.0, "p99": 4.0},
        burst=BurstRun(
            studies=5, images=20, seconds=4.0, encodings=("rle",), daemon_cores_busy=1.0
        ),
        idle_cpu_percent=0.5,
        idle_s=30.0,
        rss_mb={"warm": 300.0, "after_soak": 306.0, "peak": 320.0, "decode_workers": 250.0},
        soak_images=2000,
        baseline=[StudySample("rle", 2000.0, {})],
        baseline_poll_s=1.0,
        cores=2,
    )
    document = build(measured, {"machine": {}})
    # e2e p50 220 ms over decode + preprocess + infer of the last view, 200 ms
    assert document["overhead_ratio"] == 1.1
    assert document["overhead_ms"] == 20.0  # median of 20, 0, 60 ms beyond the 200
    # 2 cores / 384 CPU ms = 5.2 images/s, under the engine's 50 images/s
    assert document["burst"]["ideal_images_per_s"] == pytest.approx(5.21, abs=0.01)
    assert document["burst"]["images_per_s"] == 5.0
    assert document["rss_mb"]["growth_percent"] == 2.0
    assert document["by_encoding"]["rle"]["speedup_vs_baseline"] == pytest.approx(9.09, abs=0.01)
    assert document["targets"]["overhead_ratio"]["met"] is True
    assert document["targets"]["burst_efficiency"]["met"] is True  # 5.0 / 5.21
    assert document["targets"]["jpeg2000_speedup"]["met"] is None  # not measured

    # with the isolated compute measured right after each study, that one divides
    alone = (220.0, 250.0, 200.0)
    paired = [replace(s, isolated_ms=ms) for s, ms in zip(samples, alone, strict=True)]
    document = build(replace(measured, e2e=paired), {"machine": {}})
    assert document["overhead_ratio"] == 1.0  # median of 1.0, 0.8, 1.3
    assert document["by_encoding"]["rle"]["overhead_ratio"] == 1.0  # 220 / 220
    assert document["overhead_ms"] == 0.0  # median of 0, -50, 60
    assert document["by_encoding"]["rle"]["overhead_ms"] == 0.0
