"""Real components for the hub's tests: a private PostgreSQL, collector processes, messages."""

from __future__ import annotations

import atexit
import glob
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import create_engine, text
from support import free_port, wait_for_port

MODEL_SHA = "ab" * 32


def find_postgres_bin() -> Path | None:
    """The folder of ``initdb`` and ``pg_ctl`` (Debian keeps them off PATH), or None."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(candidates[-1]).parent if candidates else None


class PostgresCluster:
    """A private PostgreSQL cluster in a temporary folder, on a free port.

    PostgreSQL refuses to run as root; as root, the cluster runs as the
    ``postgres`` user the Debian package creates.
    """

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="edge-hub-pg-"))
        self.data = self.folder / "data"
        self._databases = 0

    def _as_owner(self, *command: str) -> list[str]:
        if os.geteuid() != 0:
            return list(command)
        return ["runuser", "-u", "postgres", "--", *command]

    def start(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")
        subprocess.run(
            self._as_owner(
                str(self.bin_dir / "initdb"), "-D", str(self.data), "-U", "postgres",
                "--auth=trust", "--no-sync", "-E", "UTF8",
            ),
            check=True, capture_output=True,
        )  # fmt: skip
        self.resume()

    def pause(self) -> None:
        """Stop the server, keeping its data: the database is unavailable until :meth:`resume`."""
        subprocess.run(
            self._as_owner(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", "fast",
                           "-w", "stop"),
            check=True, capture_output=True,
        )  # fmt: skip

    def resume(self) -> None:
        """Start the server (again)."""
        options = (
            f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c full_page_writes=off"
        )
        subprocess.run(
            self._as_owner(
                str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-l",
                str(self.folder / "server.log"), "-o", options, "-w", "-t", "60", "start",
            ),
            check=True, capture_output=True,
        )  # fmt: skip
        wait_for_port(self.port, timeout=30)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database; its URL."""
        self._databases += 1
        name = f"hub_{self._databases}"
        engine = create_engine(self.url(), isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            connection.execute(text(f"CREATE DATABASE {name}"))
        engine.dispose()
        return self.url(name)

    def stop(self) -> None:
        subprocess.run(
            self._as_owner(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", "immediate",
                           "stop"),
            capture_output=True, check=False,
        )  # fmt: skip
        shutil.rmtree(self.folder, ignore_errors=True)


def write_hub_config(folder: Path, port: int, database_url: str, **mqtt: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "mqtt": {"host": "127.0.0.1", "port": port, "topic_prefix": "edge", **mqtt},
        "database": {"url": database_url},
        "log": {"level": "DEBUG"},
    }
    path = folder / "hub.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


class CollectorProcess:
    """``edge hub --config`` in a real child process, its log kept for failure reports."""

    def __init__(self, config: Path, name: str = "collector") -> None:
        self.config = config
        self.log_path = config.parent / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "edge", "hub", "--config", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_log(self, text: str, timeout: float = 60.0, *, count: int = 1) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.log().count(text) >= count:
                return
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"collector exited ({self.process.returncode}):\n{self.log()}")
            time.sleep(0.1)
        raise TimeoutError(f"{text!r} not in the collector log within {timeout}s:\n{self.log()}")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout=timeout)


def hub_query(database_url: str, *args: str) -> Any:
    """Run ``edge hub ACTION --db URL --json ...`` and return its decoded output."""
    done = subprocess.run(
        [sys.executable, "-m", "edge", "hub", args[0], "--db", database_url, "--json", *args[1:]],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def hub_table(database_url: str, *args: str) -> str:
    """Run ``edge hub ACTION --db URL ...`` and return its table."""
    done = subprocess.run(
        [sys.executable, "-m", "edge", "hub", args[0], "--db", database_url, *args[1:]],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def result_document(site: str, device: str, seq: int, *, score: float = 0.2) -> dict[str, Any]:
    """A valid ``edge.result/1`` document, as the appliance publishes it."""
    digest = hashlib.sha256(f"{site}/{device}/{seq}".encode()).hexdigest()
    study_uid = "1.2.826.0.1.3680043.8.498." + str(int(digest[:16], 16))
    return {
        "schema": "edge.result/1",
        "id": digest[:32],
        "seq": seq,
        "site": site,
        "device": device,
        "study_uid": study_uid,
        "accession": f"A{seq:05d}",
        "model": {"name": "demo", "version": "1", "sha256": MODEL_SHA, "backend": "onnxruntime"},
        "study": {"score": score, "suspicious": score >= 0.5, "threshold": 0.5},
        "breasts": {"L": {"score": score, "suspicious": score >= 0.5}},
        "images": [
            {
                "sop_uid": f"{study_uid}.1",
                "laterality": "L",
                "view": "CC",
                "screening": True,
                "score": score,
            },
        ],
        "missing_views": ["LMLO", "RCC", "RMLO"],
        "closed_by": "quiet",
        "timings_ms": {"decode": 12.5, "infer": 3.0, "total": 40.0},
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


class Publisher:
    """A test's own MQTT client: publishes QoS 1 and waits for the broker's PUBACK."""

    def __init__(self, port: int) -> None:
        self._client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"test-pub-{time.monotonic_ns()}",
            protocol=paho.MQTTv5,
        )
        self._client.connect("127.0.0.1", port)
        self._client.loop_start()

    def publish(self, topic: str, payload: bytes | str, *, retain: bool = False) -> None:
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(timeout=30)
        assert info.is_published(), f"broker did not acknowledge {topic}"

    def result(self, document: dict[str, Any]) -> None:
        topic = f"edge/{document['site']}/{document['device']}/results"
        self.publish(topic, json.dumps(document))

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


def wait_until(check: Callable[[], Any], timeout: float = 60.0, what: str = "condition") -> Any:
    """Poll ``check`` until it returns something true; return that."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout}s (last: {value!r})")
        time.sleep(0.2)


def count_rows(database_url: str, sql: str) -> int:
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            return int(connection.execute(text(sql)).scalar_one())
    finally:
        engine.dispose()


_shared_cluster: list[PostgresCluster] = []


def private_postgres() -> PostgresCluster:
    """A cluster of the test's own (one it may stop); skips where none is installed."""
    bin_dir = find_postgres_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (scripts/bootstrap installs it with apt)")
    cluster = PostgresCluster(bin_dir)
    cluster.start()
    return cluster


def postgres_database() -> str:
    """A fresh database on the session's private PostgreSQL; skips where none is installed."""
    if not _shared_cluster:
        cluster = private_postgres()
        atexit.register(cluster.stop)
        _shared_cluster.append(cluster)
    return _shared_cluster[0].new_database()


def shadow_companion(result: dict[str, Any], shadow: dict[str, Any]) -> dict[str, Any]:
    """The companion ``edge.shadow/1`` a box sends after ``result`` (which it marks
    ``shadow_follows``), carrying ``shadow``: ``model``, ``study``, ``breasts``,
    ``images`` and ``skipped`` of the engine that scored in shadow."""
    result["shadow_follows"] = True
    return {
        "schema": "edge.shadow/1",
        "result_id": result["id"],
        **{key: result[key] for key in ("seq", "site", "device", "study_uid", "created_at")},
        "serving_model": result["model"],
        **shadow,
    }
