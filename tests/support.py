"""Real components for the tests: a mosquitto broker, a hub-like subscriber, the daemon."""

from __future__ import annotations

import getpass
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import yaml
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parents[1]
DEMO_BUNDLE = ROOT / "engines" / "demo"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port}")


@dataclass
class Broker:
    """A private mosquitto on a free port, which a test may stop and start again."""

    folder: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    #: more mosquitto.conf lines: ``head`` before the first listener (global options
    #: such as per_listener_settings), ``tail`` after it (more listeners, TLS, auth)
    head: str = ""
    tail: str = ""
    #: false: the broker keeps nothing across a restart (no sessions, no retained messages)
    persistence: bool = True

    def start(self) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        conf = self.folder / "mosquitto.conf"
        conf.write_text(
            self.head + f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            f"persistence {'true' if self.persistence else 'false'}\n"
            f"persistence_location {self.folder}/\n"
            # Started as root, mosquitto drops to the user "mosquitto", which may
            # not write here; then no session survives a restart.
            f"user {getpass.getuser()}\n"
            "max_queued_messages 10000\n" + self.tail
        )
        # The child keeps its own copy of the descriptor; the parent's is closed at once.
        with (self.folder / "mosquitto.log").open("ab") as log:
            self.process = subprocess.Popen([binary, "-c", str(conf)], stdout=log, stderr=log)
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


class Subscriber:
    """A hub-like MQTT client that collects what the appliance publishes."""

    def __init__(self, port: int, topics: list[str]) -> None:
        self.messages: queue.Queue[tuple[str, bytes, bool]] = queue.Queue()
        self._client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"test-sub-{time.monotonic_ns()}",
            protocol=paho.MQTTv5,
        )
        self._client.on_message = lambda c, u, m: self.messages.put((m.topic, m.payload, m.retain))
        self._client.connect("127.0.0.1", port)
        for topic in topics:
            self._client.subscribe(topic, qos=1)
        self._client.loop_start()

    def next(self, topic_suffix: str, timeout: float) -> dict[str, Any] | bytes:
        """The next message whose topic ends with ``topic_suffix`` (JSON decoded if it is)."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no message on *{topic_suffix} within {timeout}s")
            try:
                topic, payload, _retain = self.messages.get(timeout=remaining)
            except queue.Empty:
                continue
            if topic.endswith(topic_suffix):
                try:
                    decoded: dict[str, Any] = json.loads(payload)
                except ValueError:
                    return payload
                return decoded

    def wait_health(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 60.0
    ) -> dict[str, Any]:
        """The first health message for which ``predicate`` holds, within ``timeout``."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            last = self.next("/health", max(0.1, deadline - time.monotonic()))
            if isinstance(last, dict) and predicate(last):
                return last
        raise AssertionError(f"health never matched; last: {json.dumps(last, indent=1)}")

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


def write_config(folder: Path, port: int, **overrides: Any) -> Path:
    config: dict[str, Any] = {
        "site": "clinic-1",
        "device": "box-1",
        "state_dir": str(folder / "state"),
        "watch": {"dir": str(folder / "export"), "settle_s": 1.0},
        "study": {"quiet_s": 5},
        "engine": {"bundle": str(DEMO_BUNDLE), "backend": "onnxruntime"},
        # No collector confirms in most tests: the box is done at the broker's PUBACK
        # (tests of the hub's confirmations set confirm: hub).
        "mqtt": {"host": "127.0.0.1", "port": port, "topic_prefix": "edge", "confirm": "broker"},
        "health": {"interval_s": 2},
        "log": {"level": "DEBUG"},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    (folder / "export").mkdir(parents=True, exist_ok=True)
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


class DaemonProcess:
    """``edge run`` in a real child process, its log kept for the test's failure report."""

    def __init__(
        self, config: Path, env: dict[str, str] | None = None, prefix: tuple[str, ...] = ()
    ) -> None:
        self.config = config
        self.log_path = config.parent / "daemon.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.env = env or {}
        #: what runs the daemon (e.g. setpriv, as the service user), before the command
        self.prefix = prefix
        #: where this run's lines begin in the log, which every run appends to
        self._run_starts_at = 0

    def start(self) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        self._run_starts_at = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [*self.prefix, sys.executable, "-m", "edge", "run", "--config", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )

    def wait_log(self, text: str, timeout: float = 30.0) -> None:
        """Wait for ``text`` in the log of the run started last (not an earlier one)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.run_log():
                return
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"daemon exited ({self.process.returncode}):\n{self.log()}")
            time.sleep(0.05)
        raise TimeoutError(f"{text!r} not in the daemon log within {timeout}s:\n{self.log()}")

    def log(self) -> str:
        """The whole log, every run's."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def run_log(self) -> str:
        """The log of the run started last."""
        if not self.log_path.exists():
            return ""
        with self.log_path.open("rb") as stream:
            stream.seek(self._run_starts_at)
            return stream.read().decode(errors="replace")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        code = self.process.wait(timeout=timeout)
        return code
