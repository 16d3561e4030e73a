"""The console for the tests: ``edge hub serve`` as a real process, users, a logged-in client."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn
import yaml
from hub_support import CollectorProcess, write_hub_config
from sqlalchemy import Engine
from support import free_port, wait_for_port

from edge.hub.config import HubConfig
from edge.hub.console.app import build_app

PASSWORD = "correct horse battery"
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def write_console_config(folder: Path, broker_port: int, database_url: str) -> Path:
    """A hub.yaml for one collector and one console on the same database."""
    path = write_hub_config(folder, broker_port, database_url, client_id=f"hub-{folder.name}")
    config = yaml.safe_load(path.read_text())
    config["console"] = {"host": "127.0.0.1", "port": free_port(), "users_file": "users.yaml",
                         "session_secret_file": "console.secret"}  # fmt: skip
    config["monitoring"] = {"auc_floor": 0.88, "reference_days": 30}
    path.write_text(yaml.safe_dump(config))
    return path


def edge_hub(
    config: Path, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge", "hub", *args, "--config", str(config)],
        input=stdin, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def add_user(config: Path, name: str, role: str, password: str = PASSWORD) -> None:
    done = edge_hub(config, "users", "add", name, "--role", role, "--password-stdin",
                    stdin=password + "\n")  # fmt: skip
    assert done.returncode == 0, done.stderr


def new_token(config: Path, name: str) -> str:
    done = edge_hub(config, "users", "token", name)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


class ConsoleProcess:
    """``edge hub serve --config`` in a child process."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.port = int(yaml.safe_load(config.read_text())["console"]["port"])
        self.log_path = config.parent / "console.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "edge", "hub", "serve", "--config", str(self.config)],
                stdout=log, stderr=subprocess.STDOUT, env=env,
            )  # fmt: skip
        try:
            wait_for_port(self.port, timeout=60)
        except TimeoutError:
            raise RuntimeError(f"the console did not start:\n{self.log()}") from None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=30)


@contextmanager
def console_in_process(config: HubConfig, reader: Engine, writer: Engine) -> Iterator[str]:
    """The console application under uvicorn in this process, on a free port: its URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(build_app(config, reader, writer), port=port,
                                           log_config=None))  # fmt: skip
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started and thread.is_alive():
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found, "no CSRF token in the page"
    return found.group(1)


_clients: list[httpx.Client] = []


def open_client(base: str) -> httpx.Client:
    """An HTTP client with its own cookies, closed by :func:`close_clients`."""
    client = httpx.Client(base_url=base, timeout=30)
    _clients.append(client)
    return client


def close_clients() -> None:
    while _clients:
        _clients.pop().close()


def login(base: str, name: str, password: str = PASSWORD) -> httpx.Client:
    """A client holding a logged-in session (it follows no redirects by itself)."""
    client = open_client(base)
    page = client.get("/login")
    answer = client.post("/login", data={"username": name, "password": password,
                                         "csrf": csrf_of(page.text), "next": "/fleet"})  # fmt: skip
    assert answer.status_code == 303, answer.text
    return client


@dataclass
class Hub:
    """A collector and a console on one PostgreSQL database and one broker."""

    config: Path
    database_url: str
    broker_port: int
    collector: CollectorProcess
    console: ConsoleProcess

    def stop(self) -> None:
        self.console.stop()
        if self.collector.alive():
            self.collector.stop()


def start_hub(folder: Path, broker_port: int, database_url: str) -> Hub:
    config = write_console_config(folder, broker_port, database_url)
    collector = CollectorProcess(config)
    collector.start()
    collector.wait_log("subscribed to")
    console = ConsoleProcess(config)
    console.start()
    return Hub(config, database_url, broker_port, collector, console)


def health_document(site: str, device: str, **fields: Any) -> dict[str, Any]:
    """An ``edge.health/1`` document with the fields the fleet shows."""
    document: dict[str, Any] = {
        "schema": "edge.health/1", "site": site, "device": device, "version": "0.1.0",
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "uptime_s": 100,
        "engine": {"name": "demo", "version": "1"},
        "queues": {"outbox": 0, "journal_backlog": 0},
        "latency_ms": {"total": {"p50": 80.0, "p95": 120.0, "p99": 150.0}},
        "gpu": {"source": "nvml", "devices": [{"index": 0, "temperature_c": 61}]},
        "counters": {"received": 0, "quarantined_by_reason": {}, "skipped_by_reason": {}},
        "alarms": [],
    }  # fmt: skip
    document.update(fields)
    return document
