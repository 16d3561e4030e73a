"""``repair``: how soon a result the hub lost is repaired, and what confirmation costs.

A real collector (``edge hub``, SQLite in the bench's folder) and a box with
``mqtt.confirm: hub`` on the bench's broker. Two measures:

- ``to_hub``: last view closed -> the study's result at the hub, with the collector
  confirming every result, and ``confirmed_after``: the result at the hub -> the
  box's confirmation on the broker. Confirmation runs after delivery, never before
  it: ``to_hub`` is the figure to hold against ``e2e_burst`` (same arrival pattern).
- ``gap_to_repair``: per sample, the collector is stopped and its broker session
  removed, one study is scored (the broker acknowledges its result and drops it: no
  subscription matches), and the collector is started again; the time from the gap
  first showing in the hub's database (from the box's ``last_seq``) to the result
  being stored. It is bounded below by the collector's ``mqtt.resend_after_s``.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from edge.common.mqttclient import make_client
from edge.config import Config
from edge.daemon import SERVING
from edge.tools.bench import BenchError
from edge.tools.bench.corpus import sent_name
from edge.tools.bench.harness import Child, daemon_child
from edge.tools.bench.phases import Rig, write_file

#: the collector's wait before it asks for a gap (hub configuration mqtt.resend_after_s)
RESEND_AFTER_S = 2.0
CLIENT_ID = "edge-bench-hub-collector"
POLL_S = 0.02
TIMEOUT_S = 300.0


@dataclass(frozen=True)
class RepairFigures:
    to_hub_ms: list[float]
    confirmed_after_ms: list[float]
    gap_to_repair_ms: list[float]
    resend_after_s: float
    #: the encoding of the phase's studies (compare ``to_hub`` with its ``e2e_burst``)
    encoding: str


def measure(
    config: Config, folder: Path, port: int, rig: Rig, encoding: str, samples: int
) -> RepairFigures:
    """``samples`` studies with the collector confirming, then ``samples`` repairs."""
    database = folder / "hub.db"
    collector = Child("the collector", _collector_argv(folder, port, database),
                      folder / "collector.log")  # fmt: skip
    confirms = _Confirmations(port, config.topic("confirm"))
    daemon = daemon_child(_box_config(config, folder, port))
    collector.start("subscribed to")
    try:
        daemon.start(SERVING)
        to_hub, after = _confirmed_studies(rig, confirms, encoding, samples)
        repairs = [_one_repair(rig, collector, database, port, encoding) for _ in range(samples)]
    finally:
        daemon.stop()
        collector.stop()
        confirms.close()
    return RepairFigures(to_hub, after, repairs, RESEND_AFTER_S, encoding)


def _confirmed_studies(
    rig: Rig, confirms: _Confirmations, encoding: str, samples: int
) -> tuple[list[float], list[float]]:
    to_hub, after = [], []
    for index in range(-1, samples):  # the first, a warm-up of the new daemon, not counted
        study = rig.stage(encoding, max(index, 0))
        try:
            closed = 0.0
            for path in study.files:
                closed = write_file(rig.export / sent_name(path), path.read_bytes())
            received = rig.listener.wait_result(study.study_uid, rig.timeout_s)
            seq = int(received.message["seq"])
            confirmed_at = confirms.wait(seq, TIMEOUT_S)
        finally:
            rig.discard(study)
        if index >= 0:
            to_hub.append((received.at - closed) * 1000)
            after.append((confirmed_at - received.at) * 1000)
    return to_hub, after


def _one_repair(rig: Rig, collector: Child, database: Path, port: int, encoding: str) -> float:
    collector.stop()
    _forget_session(port)
    study = rig.stage(encoding, 0)
    try:
        rig.drop(study)
        seq = int(rig.listener.wait_result(study.study_uid, rig.timeout_s).message["seq"])
    finally:
        rig.discard(study)
    collector.start("subscribed to")
    gap_at = _wait(lambda: _stored(database) < _announced(database) >= seq, "the gap")
    repaired_at = _wait(lambda: _stored(database) >= seq, "the repair")
    return (repaired_at - gap_at) * 1000


def _wait(check: Any, what: str) -> float:
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            if check():
                return time.monotonic()
        except sqlite3.Error:
            pass  # the collector is creating its tables: look again
        time.sleep(POLL_S)
    raise BenchError(f"{what} not seen at the hub within {TIMEOUT_S:.0f} s")


def _stored(database: Path) -> int:
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        return int(db.execute("SELECT count(*) FROM results").fetchone()[0])


def _announced(database: Path) -> int:
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        row = db.execute("SELECT max(device_last_seq) FROM devices").fetchone()
    return int(row[0] or 0)


def _collector_argv(folder: Path, port: int, database: Path) -> list[str]:
    config = {
        "mqtt": {"host": "127.0.0.1", "port": port, "client_id": CLIENT_ID,
                 "resend_after_s": RESEND_AFTER_S},
        "database": {"url": f"sqlite:///{database}"},
    }  # fmt: skip
    path = folder / "hub.yaml"
    path.write_text(yaml.safe_dump(config))
    return [sys.executable, "-m", "edge", "hub", "--config", str(path)]


def _box_config(base: Config, folder: Path, port: int) -> Path:
    """The box of this phase: its own state folder (its ``seq`` from 1, as the new hub
    database expects), confirmations by the hub, health every second."""
    data = base.model_dump(mode="json")
    data["state_dir"] = str(folder / "state")
    data["watch"]["dir"] = str(folder / "export")
    data["mqtt"] = {"host": "127.0.0.1", "port": port, "topic_prefix": base.mqtt.topic_prefix,
                    "confirm": "hub"}  # fmt: skip
    data["health"]["interval_s"] = 1.0
    (folder / "export").mkdir(parents=True, exist_ok=True)
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _forget_session(port: int) -> None:
    """Remove the collector's broker session, as its expiry would after a long absence."""
    client = make_client(CLIENT_ID)
    client.connect("127.0.0.1", port, clean_start=True)
    client.loop_start()
    deadline = time.monotonic() + 10
    while not client.is_connected() and time.monotonic() < deadline:
        time.sleep(POLL_S)
    client.disconnect()
    client.loop_stop()


class _Confirmations:
    """When each cumulative confirmation of the box reached the broker's subscribers."""

    def __init__(self, port: int, topic: str) -> None:
        self._cond = threading.Condition()
        self._seen: list[tuple[float, int]] = []
        self._client = make_client(f"edge-bench-confirms-{time.monotonic_ns()}")
        self._client.on_message = self._on_message
        self._client.connect("127.0.0.1", port)
        self._client.subscribe(topic, qos=1)
        self._client.loop_start()

    def wait(self, seq: int, timeout: float) -> float:
        def covered() -> bool:
            return any(confirmed >= seq for _, confirmed in self._seen)

        with self._cond:
            if not self._cond.wait_for(covered, timeout):
                raise BenchError(f"no confirmation of seq {seq} within {timeout:.0f} s")
            return min(at for at, confirmed in self._seen if confirmed >= seq)

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        try:
            seq = int(json.loads(message.payload)["seq"])
        except (ValueError, KeyError, TypeError):
            return
        with self._cond:
            self._seen.append((time.monotonic(), seq))
            self._cond.notify_all()
