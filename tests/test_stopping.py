"""Stopping: one deadline for the whole drain, and a second signal that ends it at once.

The engine in hand is a hostile one that never returns on a real image
(``make_hanging_bundle``): the drain has something to wait for. What was in
flight is redone by the next start, with a working engine, and nothing is
quarantined for it.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from journal_builders import read_journal
from support import DEMO_BUNDLE, DaemonProcess, Subscriber
from systemd_engines import make_hanging_bundle

from edge.journal import Journal
from edge.tools.samples import sample_cases, write_study

pytestmark = pytest.mark.slow


def hanging_daemon(
    daemon_factory: Callable[..., DaemonProcess],
    subscriber: Subscriber,
    tmp_path: Path,
    stop_timeout_s: float,
) -> DaemonProcess:
    bundle = make_hanging_bundle(tmp_path / "hanging")
    daemon = daemon_factory(
        engine={"bundle": str(bundle), "threads": 1},
        study={"quiet_s": 1},
        stop_timeout_s=stop_timeout_s,
    )
    staged = write_study(sample_cases()[0], tmp_path / "staging", accession="S1")
    staged["rcc"].rename(tmp_path / "export" / "rcc.dcm")
    # The image in the engine's hands, and the file still to be scored.
    subscriber.wait_health(lambda health: health["queues"]["scoring"] == 1, timeout=120)
    counts = read_journal(tmp_path / "state", Journal.file_counts)
    assert counts == {"seen": 1}, counts
    return daemon


def finished_by_the_next_start(
    daemon_factory: Callable[..., DaemonProcess], subscriber: Subscriber, tmp_path: Path
) -> None:
    daemon_factory(engine={"bundle": str(DEMO_BUNDLE)}, study={"quiet_s": 1})
    result = subscriber.next("/results", timeout=120)
    assert isinstance(result, dict) and result["seq"] == 1
    assert not any((tmp_path / "state" / "quarantine").iterdir())


def test_a_second_signal_ends_the_drain_at_once_and_the_next_start_redoes_it(
    daemon_factory: Callable[..., DaemonProcess], subscriber: Subscriber, tmp_path: Path
) -> None:
    daemon = hanging_daemon(daemon_factory, subscriber, tmp_path, stop_timeout_s=600)
    assert daemon.process is not None
    daemon.process.send_signal(signal.SIGTERM)
    daemon.wait_log("stopping: draining")
    time.sleep(2)
    assert daemon.alive()  # the first signal waits for the engine (up to stop_timeout_s)
    asked = time.monotonic()
    assert daemon.stop(signal.SIGTERM, timeout=30) == 0
    assert time.monotonic() - asked < 30
    assert "stopped without waiting (second signal)" in daemon.log()
    finished_by_the_next_start(daemon_factory, subscriber, tmp_path)


def test_the_stop_deadline_bounds_the_whole_drain(
    daemon_factory: Callable[..., DaemonProcess], subscriber: Subscriber, tmp_path: Path
) -> None:
    daemon = hanging_daemon(daemon_factory, subscriber, tmp_path, stop_timeout_s=2)
    asked = time.monotonic()
    assert daemon.stop(signal.SIGTERM, timeout=60) == 0
    assert time.monotonic() - asked < 30  # 2 s, and the broker's goodbye; never 90
    assert "stopped without waiting (stop deadline)" in daemon.log()
    finished_by_the_next_start(daemon_factory, subscriber, tmp_path)
