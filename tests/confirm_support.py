"""A box and a collector on one real mosquitto, for the tests of the hub's confirmations."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from hub_support import CollectorProcess, count_rows, hub_query, wait_until, write_hub_config
from paho.mqtt.enums import CallbackAPIVersion
from pydicom.uid import generate_uid
from sqlalchemy import create_engine, text
from support import Broker, DaemonProcess, write_config

from edge.daemon import SERVING
from edge.tools.samples import sample_cases, write_study

HUB_CLIENT_ID = "hub-1"


class Rig:
    """One box (``edge run``, ``mqtt.confirm: hub``) and one collector (``edge hub``)."""

    def __init__(
        self,
        folder: Path,
        broker: Broker,
        *,
        resend_after_s: float = 2,
        hub_mqtt: dict[str, Any] | None = None,
        **mqtt: Any,
    ) -> None:
        self.folder = folder
        self.broker = broker
        self.url = f"sqlite:///{folder / 'hub' / 'hub.db'}"
        self.collector = CollectorProcess(
            write_hub_config(
                folder / "hub",
                broker.port,
                self.url,
                client_id=HUB_CLIENT_ID,
                resend_after_s=resend_after_s,
                **(hub_mqtt or {}),
            )
        )
        config = write_config(
            folder / "box",
            broker.port,
            watch={"settle_s": 0.3},
            study={"quiet_s": 1},
            health={"interval_s": 1},
            mqtt={"confirm": "hub", "reconnect_min_s": 0.2, "reconnect_max_s": 1, **mqtt},
            log={"level": "INFO"},
        )
        self.box = DaemonProcess(config)
        self.export = folder / "box" / "export"
        self._staged = 0

    def start(self) -> None:
        self.collector.start()  # first: its session must hold the subscription
        self.collector.wait_log("subscribed to")
        self.box.start()
        self.box.wait_log(SERVING, timeout=120)

    def close(self) -> None:
        for process in (self.box, self.collector):
            if process.alive():
                process.stop(signal.SIGKILL)

    def study(self) -> str:
        """Put one single-view study (a real mammogram) into the export folder; its UID."""
        case = sample_cases()[self._staged % len(sample_cases())]
        self._staged += 1
        study_uid = generate_uid()
        staged = write_study(
            case, self.folder / "staging" / str(self._staged), accession=f"A{self._staged:04d}",
            study_uid=study_uid,
        )  # fmt: skip
        target = self.export / study_uid
        target.mkdir(parents=True)
        os.rename(staged["rcc"], target / "rcc.dcm")  # a rename: complete at once
        return study_uid

    def stored(self) -> int:
        if not Path(self.url.removeprefix("sqlite:///")).exists():
            return 0
        return count_rows(self.url, "SELECT count(*) FROM results")

    def gaps(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = hub_query(self.url, "gaps")
        return found

    def box_health(self) -> dict[str, Any]:
        """The box's latest health, as the hub stored it."""
        engine = create_engine(self.url)
        try:
            with engine.connect() as connection:
                value = connection.execute(text("SELECT health FROM devices")).scalar()
        finally:
            engine.dispose()
        if value is None:
            return {}
        health: dict[str, Any] = json.loads(value) if isinstance(value, str) else value
        return health

    def wait_all_confirmed(self, count: int, timeout: float = 120.0) -> dict[str, Any]:
        """Every result stored, no gap at the hub, and the box's health saying so."""
        wait_until(lambda: self.stored() == count, timeout, f"{count} results stored")
        wait_until(lambda: self.gaps() == [], timeout, "no gap at the hub")

        def confirmed() -> dict[str, Any] | None:
            health = self.box_health()
            journal = health.get("journal", {})
            done = journal.get("confirmed_seq") == count and journal.get("unconfirmed") == 0
            return health if done else None

        health: dict[str, Any] = wait_until(confirmed, timeout, "the box's health confirmed")
        return health


def forget_session(port: int, client_id: str = HUB_CLIENT_ID) -> None:
    """Remove a client's session from the broker: connect as it, clean, and leave at once."""
    client = paho.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=paho.MQTTv5,
    )
    client.connect("127.0.0.1", port, clean_start=True)  # session expiry 0: gone at disconnect
    client.loop_start()
    deadline = time.monotonic() + 10
    while not client.is_connected() and time.monotonic() < deadline:
        time.sleep(0.05)
    client.disconnect()
    client.loop_stop()
