"""DICOM TLS for the receiver (PS3.15 B.1, the BCP 195 profiles): the server's context.

Set like the MQTT link's TLS: a certificate and key, and a CA bundle that, when
given, every sender's certificate must chain to (mutual TLS). TLS 1.2 is the
floor, as BCP 195 asks.

pynetdicom wraps each accepted connection in its listening thread, where the
handshake runs; a bounded handshake keeps one silent client from holding the
door closed for the others.
"""

from __future__ import annotations

import socket
import ssl
from typing import Any

from edge.receiver_config import ReceiverTlsConfig

#: the longest a sender may take over its TLS handshake
HANDSHAKE_TIMEOUT_S = 10.0


class _BoundedHandshake(ssl.SSLContext):
    def wrap_socket(self, sock: socket.socket, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        sock.settimeout(HANDSHAKE_TIMEOUT_S)
        wrapped = super().wrap_socket(sock, *args, **kwargs)
        wrapped.settimeout(None)
        return wrapped


def server_context(tls: ReceiverTlsConfig) -> ssl.SSLContext:
    """The receiver's TLS context.

    Raises
    ------
    OSError, ssl.SSLError
        A file is missing or unreadable, or the key does not match the certificate.
    """
    context = _BoundedHandshake(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    if tls.ca_file is not None:
        context.load_verify_locations(cafile=str(tls.ca_file))
        context.verify_mode = ssl.CERT_REQUIRED
    return context
