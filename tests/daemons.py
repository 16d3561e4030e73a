"""The daemon under test: ``edge run`` started with short timers, and waiting on it."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support import DaemonProcess, write_config

from edge.daemon import SERVING

#: short timers, so that faults and recoveries happen within seconds
FAST: dict[str, Any] = {
    "watch": {"settle_s": 0.5},
    # Long enough that no study of a burst closes before its four views are scored.
    "study": {"quiet_s": 300},
    "mqtt": {"keepalive_s": 5, "reconnect_min_s": 0.2, "reconnect_max_s": 1.0},
    "health": {"interval_s": 1, "min_free_mb": 1},
    "log": {"level": "INFO"},
}


@pytest.fixture
def start_daemon(tmp_path: Path) -> Iterator[Callable[..., DaemonProcess]]:
    """Start ``edge run`` on ``tmp_path/<name>``; every one still running is killed after."""
    started: list[DaemonProcess] = []

    def start(port: int, name: str = ".", env: dict[str, str] | None = None, **overrides: Any):
        folder = tmp_path / name
        config = write_config(folder, port, **{**FAST, **_merged(overrides)})
        daemon = DaemonProcess(config, env=env)
        runs = daemon.log().count(SERVING)
        daemon.start()
        started.append(daemon)
        wait_for(lambda: daemon.log().count(SERVING) > runs, 60, "the daemon serving", daemon)
        return daemon

    yield start
    for daemon in started:
        if daemon.alive():
            daemon.stop(signal.SIGKILL)


def _merged(overrides: dict[str, Any]) -> dict[str, Any]:
    # One level deeper than write_config merges: FAST's mqtt keys survive an mqtt override.
    return {
        key: {**FAST[key], **value} if isinstance(value, dict) and key in FAST else value
        for key, value in overrides.items()
    }


def wait_for(
    predicate: Callable[[], bool], timeout: float, what: str, daemon: DaemonProcess | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if daemon is not None and not daemon.alive():
            raise AssertionError(f"daemon died waiting for {what}:\n{daemon.log()[-5000:]}")
        time.sleep(0.1)
    tail = daemon.log()[-5000:] if daemon else ""
    raise AssertionError(f"no {what} within {timeout}s\n{tail}")
