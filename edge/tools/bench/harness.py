"""The real components the bench drives: a private broker, the daemon, a hub-like listener.

Everything here is started by the bench and stopped by it: the mosquitto listens on a
free loopback port (never the system broker), and the daemon is ``edge run`` in a
child process, exactly as systemd would start it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from edge.common.mqttclient import make_client
from edge.config import Config
from edge.tools.bench import BenchError

STOP_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Broker:
    """A private mosquitto on a free loopback port."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(binary).exists():
            raise BenchError("mosquitto is not installed (scripts/bootstrap installs it)")
        conf = self.folder / "mosquitto.conf"
        conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\n")
        log = (self.folder / "mosquitto.log").open("ab")
        self._process = subprocess.Popen([binary, "-c", str(conf)], stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        self.stop()
        raise BenchError(f"mosquitto did not listen on port {self.port} within 10 s")

    def stop(self) -> None:
        if self._process is not None:
            _terminate(self._process)
            self._process = None


@dataclass(frozen=True)
class Received:
    """A message as the hub got it: monotonic receipt time and decoded JSON."""

    at: float
    message: dict[str, Any]


class Listener:
    """A hub-like MQTT client: results by Study Instance UID, the latest health."""

    def __init__(self, port: int, result_topics: list[str], health_topic: str) -> None:
        self._cond = threading.Condition()
        self._results: dict[str, Received] = {}
        self._health: Received | None = None
        self._result_topics = result_topics
        self._health_topic = health_topic
        self._client = make_client(f"edge-bench-hub-{os.getpid()}", reconnect_on_failure=True)
        self._client.on_message = self._on_message
        self._client.connect("127.0.0.1", port)
        for topic in [*result_topics, health_topic]:
            self._client.subscribe(topic, qos=1)
        self._client.loop_start()

    def wait_result(self, study_uid: str, timeout: float) -> Received:
        with self._cond:
            if not self._cond.wait_for(lambda: study_uid in self._results, timeout):
                raise BenchError(f"no result for a study within {timeout:.0f} s")
            return self._results[study_uid]

    def wait_health(self, after: float, timeout: float) -> dict[str, Any]:
        """The first health message received after monotonic time ``after``."""

        def fresh() -> bool:
            return self._health is not None and self._health.at > after

        with self._cond:
            if not self._cond.wait_for(fresh, timeout):
                raise BenchError(f"no health message within {timeout:.0f} s")
            assert self._health is not None
            return self._health.message

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        at = time.monotonic()
        try:
            decoded = json.loads(message.payload)
        except ValueError:
            return  # status messages ("online") are not JSON and not needed here
        with self._cond:
            if message.topic == self._health_topic:
                self._health = Received(at, decoded)
            elif isinstance(decoded, dict) and "study_uid" in decoded:
                self._results.setdefault(str(decoded["study_uid"]), Received(at, decoded))
            self._cond.notify_all()


class Child:
    """A child process of the bench, its output kept in ``log_path``."""

    def __init__(self, name: str, argv: list[str], log_path: Path) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def start(self, ready: str, timeout: float = 120.0) -> None:
        """Start it and wait until its output says ``ready``."""
        log = self.log_path.open("ab")
        self._process = subprocess.Popen(
            self.argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        deadline = time.monotonic() + timeout
        while ready not in self.log():
            code = self._process.poll()
            if code is not None:
                raise BenchError(f"{self.name} exited ({code}):\n{self.tail()}")
            if time.monotonic() > deadline:
                raise BenchError(f"{self.name} not ready within {timeout:.0f} s:\n{self.tail()}")
            time.sleep(0.05)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def stop(self) -> None:
        if self._process is not None:
            _terminate(self._process)
            self._process = None


def daemon_child(config: Path) -> Child:
    """``edge run`` on ``config``, as systemd would start it."""
    argv = [sys.executable, "-m", "edge", "run", "--config", str(config)]
    return Child("the daemon", argv, config.with_suffix(".log"))


def daemon_config(
    base: Config, folder: Path, *, port: int, health_interval_s: float | None = None
) -> Path:
    """A configuration for a bench daemon: ``base`` with ``folder/export`` watched and
    the private broker. The bench's daemons run one after the other and share
    ``base``'s state folder, so that an engine's TensorRT plan is built once.
    """
    data = base.model_dump(mode="json")
    data["watch"]["dir"] = str(folder / "export")
    # No collector confirms in these phases: done at the broker's PUBACK (the repair
    # phase, edge.bench.repair, runs a collector and confirmations of its own).
    data["mqtt"] = {
        "host": "127.0.0.1",
        "port": port,
        "topic_prefix": base.mqtt.topic_prefix,
        "confirm": "broker",
    }
    if health_interval_s is not None:
        data["health"]["interval_s"] = health_interval_s
    (folder / "export").mkdir(parents=True, exist_ok=True)
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _terminate(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=STOP_TIMEOUT_S)
