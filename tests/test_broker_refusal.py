"""A broker that refuses a result, or allows few in flight: real mosquitto, real daemon.

The ACL test is the operator's mistake: the box's user may not publish on its
results topic. mosquitto answers each result with a PUBACK "Not authorized"; the
box keeps them, raises ``broker_refused``, retries on the same connection, and
once the ACL is fixed (and the broker told, SIGHUP) delivers them in seq order,
with no restart of the daemon.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import generate_uid
from support import Broker, DaemonProcess, Subscriber

from edge.tools.samples import sample_cases, write_study

BOX = "edge/clinic-1/box-1"
ALLOWED = "".join(
    f"topic readwrite {BOX}/{leaf}\n"
    for leaf in ("status", "health", "health/get", "events", "hello", "confirm", "resend")
)


@pytest.fixture
def acl_broker(tmp_path: Path) -> Iterator[Broker]:
    folder = tmp_path / "acl-broker"
    folder.mkdir()
    acl = folder / "acl"
    acl.write_text("topic read edge/#\n" + ALLOWED)  # results: not allowed
    broker = Broker(folder, tail=f"acl_file {acl}\n")
    broker.start()
    yield broker
    broker.stop()


def single_view_study(folder: Path, export: Path, index: int) -> str:
    study_uid = generate_uid()
    staged = write_study(sample_cases()[0], folder / str(index), accession=f"R{index}",
                         study_uid=study_uid)  # fmt: skip
    (export / study_uid).mkdir(parents=True)
    os.rename(staged["rcc"], export / study_uid / "rcc.dcm")
    return study_uid


def results_in_order(subscriber: Subscriber, count: int) -> list[int]:
    """The seq of the first ``count`` results received, in arrival order (repeats removed)."""
    seen: list[int] = []
    while len(seen) < count:
        message = subscriber.next("/results", timeout=120)
        assert isinstance(message, dict)
        if message["seq"] not in seen:
            seen.append(message["seq"])
    return seen


def test_a_refused_result_is_retried_and_delivered_in_order_once_the_acl_is_fixed(
    acl_broker: Broker, daemon_factory: Callable[..., DaemonProcess], tmp_path: Path
) -> None:
    subscriber = Subscriber(acl_broker.port, [f"{BOX}/#"])
    try:
        daemon = daemon_factory(
            study={"quiet_s": 1}, health={"interval_s": 1}, mqtt={"port": acl_broker.port}
        )
        pid = daemon.process.pid if daemon.process else None
        export = tmp_path / "export"
        for index in (1, 2):
            single_view_study(tmp_path / "staging", export, index)

        def refused(health: dict[str, Any]) -> bool:
            return health["journal"]["last_seq"] == 2 and health["broker"]["refused"] is not None

        health = subscriber.wait_health(refused, timeout=120)
        assert f"broker_refused: not authorized on {BOX}/results" in health["alarms"]
        assert health["broker"]["refused"]["seq"] == 1
        assert health["counters"]["published"] == 0

        acl = acl_broker.folder / "acl"
        acl.write_text(acl.read_text() + f"topic write {BOX}/results\n")
        assert acl_broker.process is not None
        acl_broker.process.send_signal(signal.SIGHUP)  # mosquitto reloads its ACL
        single_view_study(tmp_path / "staging", export, 3)

        assert results_in_order(subscriber, 3) == [1, 2, 3]
        health = subscriber.wait_health(lambda h: h["counters"]["published"] == 3, timeout=60)
        assert not [alarm for alarm in health["alarms"] if alarm.startswith("broker_refused")]
        assert health["broker"]["refused"] is None
        assert daemon.alive() and daemon.process is not None and daemon.process.pid == pid
        assert "broker_refused: not authorized" in daemon.log()
    finally:
        subscriber.close()


def test_the_box_keeps_within_the_brokers_receive_maximum(
    tmp_path: Path, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    # daemon_factory's broker is replaced by one that takes one message in flight.
    folder = tmp_path / "strict-broker"
    folder.mkdir()
    strict = Broker(folder, head="max_inflight_messages 1\n")
    strict.start()
    subscriber = Subscriber(strict.port, [f"{BOX}/#"])
    try:
        daemon_factory(
            study={"quiet_s": 1},
            health={"interval_s": 1},
            mqtt={"port": strict.port, "max_in_flight": 20},
        )
        for index in (1, 2, 3):
            single_view_study(tmp_path / "staging", tmp_path / "export", index)
        assert results_in_order(subscriber, 3) == [1, 2, 3]
        health = subscriber.wait_health(lambda h: h["counters"]["published"] == 3, timeout=60)
        assert health["broker"]["window"] == 1
        assert json.dumps(health).count("broker_refused") == 0
    finally:
        subscriber.close()
        strict.stop()
