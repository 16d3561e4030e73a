"""The systemd notify protocol, spoken over its datagram socket with no library.

A ``Type=notify`` service tells systemd how it is doing by sending newline-separated
``KEY=VALUE`` assignments in one datagram to the ``AF_UNIX`` socket named by
``$NOTIFY_SOCKET`` (``sd_notify(3)``): ``READY=1`` when it serves, ``WATCHDOG=1``
to reset the watchdog timer, ``STATUS=`` for ``systemctl status``, and
``STOPPING=1`` when it begins to stop. A name starting with ``@`` is a socket in
the abstract namespace, whose address begins with a NUL byte instead.

Outside systemd (no ``$NOTIFY_SOCKET``) every call does nothing, so the daemon
runs the same in a terminal and in a test.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)

NOTIFY_SOCKET = "NOTIFY_SOCKET"
WATCHDOG_USEC = "WATCHDOG_USEC"
WATCHDOG_PID = "WATCHDOG_PID"


class Notifier:
    """Sends notify messages to the socket systemd handed the service, if any."""

    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        self.address = address
        #: seconds between pings: half the watchdog timeout, as ``sd_watchdog_enabled(3)`` advises
        self.watchdog_interval_s = watchdog_usec / 2e6 if watchdog_usec else None
        self._socket: socket.socket | None = None
        self._failed = False

    @classmethod
    def from_environment(cls) -> Notifier:
        """The notifier that systemd's environment asks for (``sd_watchdog_enabled(3)``)."""
        address = os.environ.get(NOTIFY_SOCKET) or None
        return cls(address, _watchdog_usec())

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def ready(self, status: str) -> None:
        self.send(READY="1", STATUS=status)

    def status(self, text: str) -> None:
        self.send(STATUS=text)

    def watchdog(self) -> None:
        self.send(WATCHDOG="1")

    def stopping(self, status: str) -> None:
        self.send(STOPPING="1", STATUS=status)

    def send(self, **fields: str) -> bool:
        """Send one datagram of ``KEY=VALUE`` lines; False when it could not be sent.

        A lost notification is logged (once, until one gets through), not raised:
        the service goes on serving, and systemd acts on what it did not hear.
        """
        if self.address is None:
            return False
        payload = "\n".join(f"{key}={_one_line(value)}" for key, value in fields.items())
        try:
            self._connected().sendto(payload.encode(), _socket_address(self.address))
        except OSError as exc:
            if not self._failed:
                log.warning("systemd notify socket %s: %s", self.address, exc.strerror or exc)
            self._failed = True
            return False
        self._failed = False
        return True

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def _connected(self) -> socket.socket:
        if self._socket is None:
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        return self._socket


def _socket_address(name: str) -> str | bytes:
    if name.startswith("@"):
        # Linux abstract namespace: the address is a NUL byte, then the name.
        return b"\0" + name[1:].encode()
    return name


def _watchdog_usec() -> int | None:
    """``$WATCHDOG_USEC`` if the watchdog is meant for this process, else None."""
    text = os.environ.get(WATCHDOG_USEC)
    if not text:
        return None
    pid = os.environ.get(WATCHDOG_PID)
    # Set by systemd for the main process only; a child that inherited it must not ping.
    if pid and pid != str(os.getpid()):
        return None
    try:
        usec = int(text)
    except ValueError:
        log.warning("ignoring %s=%r: not a number of microseconds", WATCHDOG_USEC, text)
        return None
    return usec if usec > 0 else None


def _one_line(value: str) -> str:
    # A newline would start another assignment in the datagram.
    return " ".join(value.splitlines())
