"""Fixtures with real components: a mosquitto broker, real mammograms, the daemon process."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support import Broker, DaemonProcess, Subscriber, write_config

from edge.daemon import SERVING
from edge.tools.samples import sample_cases, write_study


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    folder = tmp_path / "broker"
    folder.mkdir()
    instance = Broker(folder)
    instance.start()
    yield instance
    instance.stop()


@pytest.fixture
def subscriber(broker: Broker) -> Iterator[Subscriber]:
    sub = Subscriber(broker.port, ["edge/#"])
    yield sub
    sub.close()


@pytest.fixture(scope="session")
def study_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One real four-view study (the benign case), written once per test session."""
    folder = tmp_path_factory.mktemp("study")
    return write_study(sample_cases()[0], folder, accession="ACC0001", patient="TEST^PATIENT")


@pytest.fixture
def daemon_factory(tmp_path: Path, broker: Broker) -> Iterator[Callable[..., DaemonProcess]]:
    """Start ``edge run`` on a fresh configuration; overrides merge into its sections."""
    started: list[DaemonProcess] = []

    def make(**overrides: Any) -> DaemonProcess:
        config = write_config(tmp_path, broker.port, **overrides)
        daemon = DaemonProcess(config)
        daemon.start()
        started.append(daemon)
        daemon.wait_log(SERVING)
        return daemon

    yield make
    for daemon in started:
        if daemon.alive():
            daemon.stop(signal.SIGKILL)
