"""What the box measures about itself: counters, stage latencies, alarms, free disk.

Every stage reports into one :class:`Metrics`; the daemon puts its figures in the
snapshot that :mod:`edge.messages.health` lays out as the health message, retained
on ``{prefix}/{site}/{device}/health`` every ``health.interval_s``.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections import Counter, defaultdict, deque
from pathlib import Path
from typing import Any

import numpy as np

from edge.common.clock import now_iso

#: latencies kept per stage for the percentiles (a recent window, not all time)
WINDOW = 500


class Metrics:
    """Thread-safe counters and latency windows."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: Counter[str] = Counter()
        self._quarantined: Counter[str] = Counter()
        self._skipped: Counter[str] = Counter()
        self._latency: defaultdict[str, deque[float]] = defaultdict(lambda: deque(maxlen=WINDOW))
        self.last_error: dict[str, str] | None = None
        self.started = time.monotonic()

    def count(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._counters[name] += amount

    def quarantined(self, reason: str) -> None:
        with self._lock:
            self._counters["quarantined"] += 1
            self._quarantined[reason] += 1

    def skipped(self, reason: str) -> None:
        with self._lock:
            self._counters["skipped"] += 1
            self._skipped[reason] += 1

    def observe(self, timings_ms: dict[str, float]) -> None:
        with self._lock:
            for stage, value in timings_ms.items():
                self._latency[stage].append(value)

    def error(self, where: str, message: str) -> None:
        with self._lock:
            self.last_error = {
                "at": now_iso(),
                "where": where,
                "message": message,
            }

    def counters(self) -> dict[str, Any]:
        with self._lock:
            return {
                **{name: self._counters[name] for name in COUNTERS},
                "quarantined_by_reason": dict(self._quarantined),
                "skipped_by_reason": dict(self._skipped),
            }

    def latency(self) -> dict[str, dict[str, float]]:
        with self._lock:
            windows = {stage: list(values) for stage, values in self._latency.items() if values}
        return {stage: percentiles(values) for stage, values in sorted(windows.items())}


COUNTERS = (
    "received",
    "already_processed",
    "processed",
    "published",
    "quarantined",
    "skipped",
    "duplicates",
    "errors",
    "journal_errors",
    # images the shadow engine scored, skipped (its budget) and failed on
    "shadow_scored",
    "shadow_skipped",
    "shadow_failed",
    "gpu_decode_fallbacks",
)


def alarms(
    *,
    results_waiting: int,
    journal_error: str | None,
    state_disk: dict[str, Any],
    min_free_mb: int,
    receiver_refusing: str | None = None,
    journal_failed: str | None = None,
    journal_replaced: bool = False,
) -> list[str]:
    """The conditions a hub operator must act on, by name (documented in docs/messages.md).

    ``outbox_full``: results wait in the journal behind a full outbox.
    ``journal_failed``: the journal is damaged or cannot be read; new files wait.
    ``journal_write_failed``: the last journal write failed; new files wait.
    ``journal_replaced``: the journal was found damaged at start, kept aside, replaced.
    ``state_disk_low``: less than ``health.min_free_mb`` free in ``state_dir``.
    ``receiver_refusing``: the DICOM receiver answers 0xA700 (``receiver_refusing``
    says why).
    """
    raised = []
    if results_waiting > 0:
        raised.append("outbox_full")
    if journal_failed is not None:
        raised.append("journal_failed")
    if journal_error is not None:
        raised.append("journal_write_failed")
    if journal_replaced:
        raised.append("journal_replaced")
    free_mb = state_disk.get("free_mb")
    if not isinstance(free_mb, int) or free_mb < min_free_mb:
        raised.append("state_disk_low")
    if receiver_refusing is not None:
        raised.append("receiver_refusing")
    return raised


def percentiles(values: list[float]) -> dict[str, float]:
    p50, p95, p99 = np.percentile(np.asarray(values), [50, 95, 99])
    return {"p50": round(float(p50), 2), "p95": round(float(p95), 2), "p99": round(float(p99), 2)}


def disk_free(path: Path) -> dict[str, Any]:
    try:
        usage = shutil.disk_usage(path)
    except OSError as exc:
        return {"path": str(path), "error": exc.strerror or str(exc)}
    return {
        "path": str(path),
        "free_mb": usage.free // (1 << 20),
        "free_percent": round(100 * usage.free / usage.total, 1) if usage.total else 0.0,
    }
