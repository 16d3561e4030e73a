"""The broker connection for real: TLS with client certificates, credentials, MQTT 3.1.1.

One mosquitto serves four listeners: plain (where the test listens, as the hub
would), TLS requiring a client certificate signed by the clinic's CA, TLS with
a certificate from a CA the box does not trust, and one asking for a password.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from certificates import Pki, make_certificates
from daemons import start_daemon, wait_for
from support import Broker, Subscriber, free_port

from edge.config import MqttConfig
from edge.credentials import broker_password
from edge.errors import ConfigError

__all__ = ["start_daemon"]  # a fixture

USER, PASSWORD = "edge-box-1", "correct horse battery staple"


@dataclass
class SecureBroker:
    broker: Broker
    pki: Pki
    mutual_tls: int
    untrusted_tls: int
    password: int


@pytest.fixture
def secure_broker(tmp_path: Path) -> Iterator[SecureBroker]:
    pki = make_certificates(tmp_path / "pki", "clinic")
    rogue = make_certificates(tmp_path / "pki", "rogue")
    passwords = tmp_path / "pki" / "passwords"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwords), USER, PASSWORD], check=True)
    ports = free_port(), free_port(), free_port()
    folder = tmp_path / "broker"
    folder.mkdir()
    broker = Broker(
        folder,
        head="per_listener_settings true\n",
        tail=(
            f"listener {ports[0]} 127.0.0.1\nallow_anonymous true\n"
            f"cafile {pki.ca}\ncertfile {pki.server_cert}\nkeyfile {pki.server_key}\n"
            "require_certificate true\n"
            f"listener {ports[1]} 127.0.0.1\nallow_anonymous true\n"
            f"certfile {rogue.server_cert}\nkeyfile {rogue.server_key}\n"
            f"listener {ports[2]} 127.0.0.1\nallow_anonymous false\n"
            f"password_file {passwords}\n"
        ),
    )
    broker.start()
    yield SecureBroker(broker, pki, *ports)
    broker.stop()


def test_daemon_connects_to_a_broker_requiring_a_client_certificate(
    secure_broker: SecureBroker, start_daemon: Any
) -> None:
    pki = secure_broker.pki
    listener = Subscriber(secure_broker.broker.port, ["edge/+/+/status"])
    daemon = start_daemon(
        secure_broker.mutual_tls,
        mqtt={
            "tls": {
                "ca_file": str(pki.ca),
                "cert_file": str(pki.client_cert),
                "key_file": str(pki.client_key),
            }
        },
    )
    try:
        assert listener.next("/status", 30) == b"online"
    finally:
        listener.close()
    assert "connected to mqtt" in daemon.log()


def test_tls_refusals_say_why_in_one_log_line(
    secure_broker: SecureBroker, start_daemon: Any
) -> None:
    ca_only = {"tls": {"ca_file": str(secure_broker.pki.ca)}}
    no_client_cert = start_daemon(secure_broker.mutual_tls, name="no-cert", mqtt=ca_only)
    untrusted = start_daemon(secure_broker.untrusted_tls, name="untrusted", mqtt=ca_only)
    port = secure_broker.untrusted_tls
    where = f"mqtt 127.0.0.1:{port}: TLS: the broker's certificate is not trusted"
    wait_for(lambda: where in untrusted.log(), 30, "the untrusted-broker line", untrusted)
    assert "certificate verify failed" in untrusted.log() or "issuer" in untrusted.log()
    wait_for(
        lambda: (
            f"ERROR   edge.mqtt: mqtt 127.0.0.1:{secure_broker.mutual_tls}: "
            in no_client_cert.log()
        ),
        30,
        "the refused-handshake line",
        no_client_cert,
    )
    assert "it wants a client certificate" in no_client_cert.log()
    for daemon in (no_client_cert, untrusted):
        assert "connected to mqtt" not in daemon.log()
        assert daemon.alive()


def test_password_from_a_systemd_credential_and_a_wrong_one_refused(
    secure_broker: SecureBroker, start_daemon: Any, tmp_path: Path
) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "mqtt-password").write_text(PASSWORD + "\n")
    wrong = tmp_path / "wrong-password"
    wrong.write_text("not it\n")
    listener = Subscriber(secure_broker.broker.port, ["edge/+/+/status"])
    good = start_daemon(
        secure_broker.password,
        name="good",
        env={"CREDENTIALS_DIRECTORY": str(credentials)},
        device="box-good",
        mqtt={"username": USER, "password_credential": "mqtt-password"},
    )
    bad = start_daemon(
        secure_broker.password,
        name="bad",
        device="box-bad",
        mqtt={"username": USER, "password_file": str(wrong)},
    )
    try:
        assert listener.next("/status", 30) == b"online"
    finally:
        listener.close()
    assert "connected to mqtt" in good.log()
    wait_for(lambda: "the broker refused the connection" in bad.log(), 30, "a refusal", bad)
    assert "check mqtt.username" in bad.log()
    assert "connected to mqtt" not in bad.log()
    assert PASSWORD not in good.log() + bad.log()


def test_mqtt_3_1_1_broker(broker: Broker, start_daemon: Any) -> None:
    listener = Subscriber(broker.port, ["edge/+/+/status"])
    try:
        start_daemon(broker.port, mqtt={"protocol": "3.1.1"})
        assert listener.next("/status", 30) == b"online"
    finally:
        listener.close()


def test_password_never_comes_from_the_yaml() -> None:
    with pytest.raises(ValueError, match="never read from the YAML"):
        MqttConfig.model_validate({"username": USER, "password": PASSWORD})
    with pytest.raises(ValueError, match="not both"):
        MqttConfig.model_validate(
            {"username": USER, "password_file": "/x", "password_credential": "y"}
        )
    with pytest.raises(ValueError, match=r"needs mqtt\.username"):
        MqttConfig.model_validate({"password_file": "/x"})


def test_credential_problems_name_their_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = MqttConfig(username=USER, password_credential="mqtt-password")
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    with pytest.raises(ConfigError, match=r"mqtt\.password_credential: \$CREDENTIALS_DIRECTORY"):
        broker_password(config)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    with pytest.raises(ConfigError, match=r"mqtt\.password_credential: cannot read"):
        broker_password(config)
    (tmp_path / "mqtt-password").write_text(PASSWORD + "\n")
    assert broker_password(config) == PASSWORD
    empty = tmp_path / "empty"
    empty.write_text("")
    with pytest.raises(ConfigError, match=r"mqtt\.password_file: .* is empty"):
        broker_password(MqttConfig(username=USER, password_file=empty))
