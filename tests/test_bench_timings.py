"""The timings the bench reads from the daemon: detect in a result, publish in health."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from support import Subscriber


def test_result_carries_detect_and_health_carries_publish(
    daemon_factory: Any, subscriber: Subscriber, study_files: dict[str, Path], tmp_path: Path
) -> None:
    daemon_factory()
    assert subscriber.next("/status", 30) == b"online"
    export = tmp_path / "export"
    for path in study_files.values():
        shutil.copy(path, export / path.name)

    result = subscriber.next("/results", 120)
    assert isinstance(result, dict)
    timings = result["timings_ms"]
    assert {"detect", "header", "decode", "preprocess", "infer", "assemble", "total"} <= set(
        timings
    )
    assert timings["detect"] >= 0

    deadline = time.monotonic() + 60
    latency: dict[str, Any] = {}
    while "publish" not in latency and time.monotonic() < deadline:
        health = subscriber.next("/health", 30)
        assert isinstance(health, dict)
        latency = health["latency_ms"]
    assert set(latency["publish"]) == {"p50", "p95", "p99"}
    assert "detect" in latency
