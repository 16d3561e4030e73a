"""Only a box publishes as that box; only the hub confirms: the ACL template on a real broker.

mosquitto with ``allow_anonymous false``, a ``password_file`` made by
``mosquitto_passwd`` and the ``acl_file`` that ``edge hub acl`` prints (the
template in docs/hub.md). A real box and a real collector deliver and confirm
through it; box-1's credentials cannot speak for box-2 nor confirm anything.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from confirm_support import Rig
from hub_support import result_document
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode
from support import Broker

from edge.hub.acl import box_acl, hub_acl

USERS = {"box-1": "secret-1", "box-2": "secret-2", "hub": "secret-hub"}


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[Broker]:
    folder = tmp_path / "secure-broker"
    folder.mkdir()
    passwords = folder / "passwd"
    for index, (user, password) in enumerate(USERS.items()):
        create = ["-c"] if index == 0 else []
        subprocess.run(["mosquitto_passwd", *create, "-b", str(passwords), user, password],
                       check=True, capture_output=True)  # fmt: skip
    acl = folder / "acl"
    acl.write_text(
        box_acl("edge", "clinic-1", "box-1", "box-1")
        + box_acl("edge", "clinic-1", "box-2", "box-2")
        + hub_acl("edge", "hub")
    )
    broker = Broker(
        folder, tail=f"allow_anonymous false\npassword_file {passwords}\nacl_file {acl}\n"
    )
    broker.start()
    yield broker
    broker.stop()


def publish_as(port: int, user: str, topic: str, payload: bytes) -> ReasonCode:
    """Publish QoS 1 with ``user``'s credentials; the PUBACK's reason code."""
    reasons: list[ReasonCode] = []
    client = paho.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=f"acl-test-{user}-{time.monotonic_ns()}",
        protocol=paho.MQTTv5,
    )
    client.username_pw_set(user, USERS[user])
    client.on_publish = lambda c, u, mid, reason, props: reasons.append(reason)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        client.publish(topic, payload, qos=1)
        deadline = time.monotonic() + 10
        while not reasons and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        client.disconnect()
        client.loop_stop()
    assert reasons, f"no PUBACK for {topic}"
    return reasons[0]


def test_the_acl_template_lets_each_box_speak_only_for_itself(
    secured: Broker, tmp_path: Path
) -> None:
    result = json.dumps(result_document("clinic-1", "box-2", 1)).encode()
    confirm = b'{"schema": "edge.confirm/1"}'
    assert publish_as(secured.port, "box-1", "edge/clinic-1/box-2/results", result).is_failure
    assert publish_as(secured.port, "box-1", "edge/clinic-1/box-1/confirm", confirm).is_failure
    assert publish_as(secured.port, "box-1", "edge/clinic-1/box-2/confirm", confirm).is_failure
    assert publish_as(secured.port, "box-1", "edge/clinic-1/box-2/resend", confirm).is_failure
    assert not publish_as(secured.port, "box-2", "edge/clinic-1/box-2/results", result).is_failure
    assert not publish_as(secured.port, "hub", "edge/clinic-1/box-9/confirm", confirm).is_failure


def test_a_box_and_the_collector_deliver_and_confirm_through_the_acl(
    secured: Broker, tmp_path: Path
) -> None:
    (tmp_path / "box-pass").write_text(USERS["box-1"] + "\n")
    (tmp_path / "hub-pass").write_text(USERS["hub"] + "\n")
    hub_login = {"username": "hub", "password_file": str(tmp_path / "hub-pass")}
    rig = Rig(
        tmp_path, secured, hub_mqtt=hub_login,
        username="box-1", password_file=str(tmp_path / "box-pass"),
    )  # fmt: skip
    try:
        rig.start()
        rig.study()
        health = rig.wait_all_confirmed(1)
        assert health["alarms"] == []
    finally:
        rig.close()
    done = subprocess.run(
        [sys.executable, "-m", "edge", "hub", "acl", "--user", "box-1", "--site", "clinic-1",
         "--device", "box-1"], capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert done.stdout == box_acl("edge", "clinic-1", "box-1", "box-1")
