"""The paho client, set up once: protocol, TLS, credentials and the last will.

The appliance's link (:mod:`edge.mqtt`), ``edge doctor``'s broker check and the hub's
link (:mod:`edge.hub.link`) each add their own callbacks and flow control; what a
broker sees at CONNECT (who we are, how we prove it, what it publishes if we vanish)
is decided here, so that the three cannot drift apart.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Literal

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from edge.common.model import TlsConfig

PROTOCOLS = {"5": MQTTProtocolVersion.MQTTv5, "3.1.1": MQTTProtocolVersion.MQTTv311}


@dataclass(frozen=True)
class Will:
    """The message the broker publishes, retained, when the client vanishes."""

    topic: str
    payload: bytes


def make_client(
    client_id: str,
    *,
    protocol: Literal["5", "3.1.1"] = "5",
    tls: TlsConfig | None = None,
    username: str | None = None,
    password: str | None = None,
    will: Will | None = None,
    reconnect_on_failure: bool = False,
    manual_ack: bool = False,
) -> paho.Client:
    """A paho 2 client with the broker's login, TLS (the CA required) and last will set."""
    client = paho.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=PROTOCOLS[protocol],
        reconnect_on_failure=reconnect_on_failure,
        manual_ack=manual_ack,
    )
    if username is not None:
        client.username_pw_set(username, password)
    if tls is not None:
        client.tls_set(
            ca_certs=str(tls.ca_file) if tls.ca_file else None,
            certfile=str(tls.cert_file) if tls.cert_file else None,
            keyfile=str(tls.key_file) if tls.key_file else None,
            cert_reqs=ssl.CERT_REQUIRED,
        )
    if will is not None:
        client.will_set(will.topic, will.payload, qos=1, retain=True)
    return client
