"""What the receiver has done since the daemon started: associations and instances.

Kept in memory for the health message, and written to ``state_dir/receiver.json``
(at most once a second, replacing the file whole) for ``edge status``, which runs
outside the daemon and reads it there.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

STATS_FILE = "receiver.json"


class ReceiverCounters:
    """Thread-safe counts; pynetdicom serves each association in a thread of its own."""

    def __init__(self, ae_title: str, port: int) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._rejected: Counter[str] = Counter()
        self._refused: Counter[str] = Counter()
        self._active = 0
        self._changed = True
        self.ae_title = ae_title
        self.port = port
        self.since = time.time()
        #: why instances are refused now (None while they are taken)
        self.refusing: str | None = None

    def count(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1
            self._changed = True

    def opened(self) -> None:
        with self._lock:
            self._counts["associations"] += 1
            self._active += 1
            self._changed = True

    def closed(self) -> None:
        with self._lock:
            self._active -= 1
            self._changed = True

    def rejected(self, reason: str) -> None:
        with self._lock:
            self._counts["associations_rejected"] += 1
            self._rejected[reason] += 1
            self._changed = True

    def refused(self, reason: str) -> None:
        with self._lock:
            self._counts["instances_refused"] += 1
            self._refused[reason] += 1
            self._changed = True

    def snapshot(self) -> dict[str, Any]:
        """The ``receiver`` section of the health message."""
        with self._lock:
            return {
                "ae_title": self.ae_title,
                "port": self.port,
                "since": round(self.since, 3),
                "associations": {
                    "active": self._active,
                    "accepted": self._counts["associations"],
                    "rejected": self._counts["associations_rejected"],
                    "rejected_by_reason": dict(self._rejected),
                },
                "instances": {
                    "received": self._counts["instances_received"],
                    "refused": self._counts["instances_refused"],
                    "refused_by_reason": dict(self._refused),
                },
                "echoes": self._counts["echoes"],
                "refusing": self.refusing,
            }

    def take_changed(self) -> bool:
        """Whether anything changed since the last call."""
        with self._lock:
            changed, self._changed = self._changed, False
        return changed


def write_stats(state_dir: Path, snapshot: dict[str, Any], spool_files: int) -> None:
    """Replace ``receiver.json`` whole (a reader never sees half of it).

    Raises
    ------
    OSError
        The state disk refused the write (full, read-only).
    """
    target = state_dir / STATS_FILE
    partial = target.with_name(f".{STATS_FILE}.part")
    partial.write_text(json.dumps({**snapshot, "spool_files": spool_files}))
    os.replace(partial, target)


def read_stats(state_dir: Path) -> dict[str, Any] | None:
    """What the daemon last wrote, or None when it has no receiver (or never ran one)."""
    try:
        loaded = json.loads((state_dir / STATS_FILE).read_text())
    except (OSError, ValueError):
        return None
    return loaded if isinstance(loaded, dict) else None


def status_line(state_dir: Path, spooled: int, ae_title: str, port: int) -> str:
    """``edge status``'s receiver line: what the daemon last wrote, and ``spooled``
    instances in the spool now (received, not yet done)."""
    stats = read_stats(state_dir)
    if stats is None:
        return f"{ae_title} on port {port}: no counts yet (the daemon has not run with it)"
    associations = stats.get("associations", {})
    instances = stats.get("instances", {})
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(stats.get("since", 0))))
    line = (
        f"{stats.get('ae_title', ae_title)} on port {stats.get('port', port)}, since {since}: "
        f"{associations.get('accepted', 0)} associations ({associations.get('active', 0)} "
        f"open), {associations.get('rejected', 0)} rejected"
        f"{_by_reason(associations.get('rejected_by_reason', {}))}; "
        f"{instances.get('received', 0)} instances received, {instances.get('refused', 0)} "
        f"refused{_by_reason(instances.get('refused_by_reason', {}))}; "
        f"{spooled} in the spool"
    )
    if stats.get("refusing"):
        line += f"; REFUSING instances now ({stats['refusing']})"
    return line


def _by_reason(counts: dict[str, int]) -> str:
    if not counts:
        return ""
    return " (" + ", ".join(f"{reason} {count}" for reason, count in sorted(counts.items())) + ")"
