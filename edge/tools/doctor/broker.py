"""One real connection to the broker, for ``edge doctor``: TCP, TLS handshake, login.

The probe connects the way the daemon does (same protocol version, TLS settings
and credentials) under a client id of its own, so that checking a running box
does not throw the daemon's session off the broker, and disconnects at once.
"""

from __future__ import annotations

import os
import queue
import ssl
import time
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.reasoncodes import ReasonCode

from edge.common.mqttclient import make_client
from edge.config import Config, MqttConfig
from edge.credentials import broker_password
from edge.errors import ConfigError
from edge.tools.doctor.check import Check

#: CONNACK reasons meaning "wrong login" (MQTT 5 numbering; paho maps 3.1.1's onto them)
BAD_LOGIN = frozenset({134, 135})


def probe_broker(config: Config, *, timeout_s: float) -> Check:
    """Connect, log in and disconnect; OK only when the broker accepted the login."""
    mqtt = config.mqtt
    where = f"{mqtt.host}:{mqtt.port}"
    try:
        password = broker_password(mqtt)
    except ConfigError as exc:
        return Check("broker", False, str(exc), "put the broker password where the key above says")
    unreadable = _unreadable_tls_file(mqtt)
    if unreadable is not None:
        return unreadable
    try:
        client = _client(config, password)
    except (OSError, ssl.SSLError) as exc:
        return Check(
            "broker",
            False,
            f"cannot load the TLS files: {exc.strerror or exc}",
            "check mqtt.tls.ca_file, cert_file and key_file are PEM files that belong together",
        )
    try:
        reason = _connect(client, mqtt, timeout_s)
    except OSError as exc:  # ssl.SSLError and TimeoutError are OSErrors too
        return _connect_failed(where, exc, timeout_s)
    finally:
        _close(client)
    return _judge(where, mqtt, reason)


def _connect_failed(where: str, exc: OSError, timeout_s: float) -> Check:
    """What a failed connection says about the network, the port or the certificates."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return Check(
            "broker",
            False,
            f"{where}: the broker's TLS certificate is not trusted ({exc.verify_message})",
            "set mqtt.tls.ca_file to the CA that signed the broker's certificate; check mqtt.host "
            "is the name in that certificate",
        )
    if isinstance(exc, ssl.SSLError):
        return Check(
            "broker",
            False,
            f"{where}: TLS handshake failed ({exc.reason or exc})",
            "check the port is the broker's TLS port and mqtt.tls.cert_file / key_file",
        )
    if isinstance(exc, TimeoutError):
        return Check(
            "broker",
            False,
            f"{where}: no answer within {timeout_s:g} s",
            "check mqtt.host and mqtt.port, and that a firewall lets this box reach them",
        )
    return Check(
        "broker",
        False,
        f"{where}: cannot connect ({exc.strerror or exc})",
        "check mqtt.host and mqtt.port, that the broker runs, and the network to it",
    )


def _unreadable_tls_file(mqtt: MqttConfig) -> Check | None:
    if mqtt.tls is None:
        return None
    for key in ("ca_file", "cert_file", "key_file"):
        path = getattr(mqtt.tls, key)
        if path is not None and not os.access(path, os.R_OK):
            return Check(
                "broker",
                False,
                f"mqtt.tls.{key}: cannot read {path}",
                f"copy the file there, or correct mqtt.tls.{key}",
            )
    return None


def _client(config: Config, password: str | None) -> paho.Client:
    mqtt = config.mqtt
    return make_client(
        f"edge-doctor-{config.site}-{config.device}-{os.getpid()}",
        protocol=mqtt.protocol,
        tls=mqtt.tls,
        username=mqtt.username,
        password=password,
    )


def _connect(client: paho.Client, mqtt: MqttConfig, timeout_s: float) -> ReasonCode | None:
    """Send CONNECT and wait for the CONNACK; None when none came in time."""
    answers: queue.SimpleQueue[ReasonCode] = queue.SimpleQueue()

    def on_connect(c: Any, userdata: Any, flags: Any, reason: ReasonCode, props: Any) -> None:
        answers.put(reason)

    client.on_connect = on_connect
    client.connect_timeout = timeout_s
    client.connect(mqtt.host, mqtt.port, keepalive=max(5, int(timeout_s)))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if client.loop(timeout=0.2) != paho.MQTT_ERR_SUCCESS:
            break
        try:
            return answers.get_nowait()
        except queue.Empty:
            continue
    try:
        return answers.get_nowait()
    except queue.Empty:
        return None


def _judge(where: str, mqtt: MqttConfig, reason: ReasonCode | None) -> Check:
    if reason is None:
        return Check(
            "broker",
            False,
            f"{where}: connected, but the broker never accepted the session (no CONNACK)",
            "check the port is an MQTT port, and TLS settings match the broker (mqtt.tls)",
        )
    if reason.is_failure:
        fix = (
            "check mqtt.username and the password in /etc/edge/credentials/mqtt-password"
            if reason.value in BAD_LOGIN
            else "ask the hub's operator why the broker refuses this box"
        )
        return Check("broker", False, f"{where}: the broker refused the login: {reason}", fix)
    how = "TLS" if mqtt.tls is not None else "no TLS"
    who = f", user {mqtt.username}" if mqtt.username else ""
    return Check("broker", True, f"{where}: connected and logged in ({how}{who})")


def _close(client: paho.Client) -> None:
    if client.is_connected():
        client.disconnect()
        client.loop(timeout=0.2)
    sock = client.socket()
    if sock is not None:
        sock.close()
