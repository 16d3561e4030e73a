"""The systemd notify protocol, spoken by a real ``edge run`` to a real datagram socket.

The test binds the socket systemd would bind and hands its path to the daemon as
``NOTIFY_SOCKET``, with ``WATCHDOG_USEC`` set as systemd sets it for
``WatchdogSec=1s``: the daemon must ping at half that while it makes progress.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support import DaemonProcess, Subscriber
from systemd_engines import make_bundle, make_hanging_bundle

from edge.notify import Notifier

Message = dict[str, str]


class NotifySocket:
    """The datagram socket systemd listens on, bound by the test.

    Like systemd with ``NotifyAccess=main``, it learns each sender's PID from the
    kernel (``SO_PASSCRED``) and heeds only the service's main process: other
    programs that inherit ``NOTIFY_SOCKET`` (mosquitto sends READY=1 too) are
    not the service.
    """

    def __init__(self, address: str) -> None:
        self.address = address
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        bind_to = "\0" + address[1:] if address.startswith("@") else address
        self._socket.bind(bind_to)
        self._socket.settimeout(0.2)
        #: the main process whose messages count; set once it is started
        self.main_pid: int | None = None
        self._all: list[tuple[int, Message]] = []
        self._arrived = threading.Condition()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    @property
    def received(self) -> list[Message]:
        """The main process's messages, in arrival order."""
        with self._arrived:
            return [fields for pid, fields in self._all if pid == self.main_pid]

    def _receive(self) -> None:
        credentials = socket.CMSG_SPACE(struct.calcsize("3i"))
        while not self._closed.is_set():
            try:
                data, ancillary, _flags, _address = self._socket.recvmsg(4096, credentials)
            except TimeoutError:
                continue
            except OSError:
                return
            pid = next(
                struct.unpack("3i", value)[0]
                for level, kind, value in ancillary
                if (level, kind) == (socket.SOL_SOCKET, socket.SCM_CREDENTIALS)
            )
            fields = dict(line.split("=", 1) for line in data.decode().splitlines())
            with self._arrived:
                self._all.append((pid, fields))
                self._arrived.notify_all()

    def wait_for(
        self, predicate: Callable[[Message], bool], timeout: float, since: int = 0
    ) -> Message:
        """The main process's first message from index ``since`` on that matches."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while True:
                received = self.received
                for message in received[since:]:
                    if predicate(message):
                        return message
                since = len(received)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no such notify message; got {received[-5:]}")
                self._arrived.wait(remaining)

    def close(self) -> None:
        self._closed.set()
        self._thread.join(timeout=2)
        self._socket.close()


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[NotifySocket]:
    """The notify socket, named to ``edge run`` children as systemd names it."""
    sock = NotifySocket(str(tmp_path / "notify.sock"))
    monkeypatch.setenv("NOTIFY_SOCKET", sock.address)
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    yield sock
    sock.close()


def main_pid(daemon: DaemonProcess) -> int:
    assert daemon.process is not None
    return daemon.process.pid


def is_ready(message: Message) -> bool:
    return message.get("READY") == "1"


def is_ping(message: Message) -> bool:
    return message.get("WATCHDOG") == "1"


def is_stopping(message: Message) -> bool:
    return message.get("STOPPING") == "1"


def test_ready_then_pings_while_files_flow_then_stopping(
    notify_socket: NotifySocket,
    daemon_factory: Callable[..., DaemonProcess],
    subscriber: Subscriber,
    study_files: dict[str, Path],
    tmp_path: Path,
) -> None:
    bundle = make_bundle(tmp_path / "engine")
    daemon = daemon_factory(engine={"bundle": str(bundle), "threads": 1})
    notify_socket.main_pid = main_pid(daemon)
    ready = notify_socket.wait_for(is_ready, 60)
    assert "engine test-mean 1.0.0 on onnxruntime" in ready["STATUS"]

    for path in study_files.values():
        shutil.copy(path, tmp_path / "export" / path.name)
    result = subscriber.next("/results", 120)
    assert isinstance(result, dict) and result["closed_by"] == "complete"
    pings_while_flowing = sum(map(is_ping, notify_socket.received))
    # Pings go on after the study went through: the pipeline is idle, not stuck.
    notify_socket.wait_for(is_ping, 30, since=len(notify_socket.received))

    assert daemon.stop(signal.SIGTERM, timeout=90) == 0
    notify_socket.wait_for(is_stopping, 10)

    kinds = [
        "ready" if is_ready(m) else "ping" if is_ping(m) else "stopping" if is_stopping(m) else ""
        for m in notify_socket.received
    ]
    kinds = [kind for kind in kinds if kind]
    assert kinds[0] == "ready"
    assert kinds[-1] == "stopping" and kinds.count("stopping") == 1
    assert kinds.count("ready") == 1
    assert kinds.count("ping") > pings_while_flowing
    statuses = [m["STATUS"] for m in notify_socket.received if "STATUS" in m]
    assert any("queue" in s and "outbox" in s and "broker" in s for s in statuses)
    assert any("connected" in s for s in statuses)


def test_pings_stop_while_inference_hangs(
    notify_socket: NotifySocket,
    daemon_factory: Callable[..., DaemonProcess],
    study_files: dict[str, Path],
    tmp_path: Path,
) -> None:
    bundle = make_hanging_bundle(tmp_path / "engine")
    daemon = daemon_factory(engine={"bundle": str(bundle), "threads": 1}, health={"stuck_s": 2})
    notify_socket.main_pid = main_pid(daemon)
    notify_socket.wait_for(is_ready, 60)
    notify_socket.wait_for(is_ping, 30)  # the warm-up passed: idle, and pinging

    image = study_files["lcc"]
    shutil.copy(image, tmp_path / "export" / image.name)
    stalled = notify_socket.wait_for(lambda m: "stalled" in m.get("STATUS", ""), 120)
    assert "infer stuck" in stalled["STATUS"]
    daemon.wait_log("watchdog: infer stuck")

    # Ten watchdog intervals later, still no ping: systemd would have restarted it.
    heard = len(notify_socket.received)
    time.sleep(5)
    later = notify_socket.received[heard:]
    assert not any(map(is_ping, later)), later
    assert all("stalled" in m.get("STATUS", "") for m in later)
    assert daemon.alive()


def test_abstract_namespace_socket_receives_notifications(tmp_path: Path) -> None:
    name = f"@edge-test-{time.monotonic_ns()}"
    sock = NotifySocket(name)
    sock.main_pid = os.getpid()
    notifier = Notifier(name, watchdog_usec=30_000_000)
    try:
        assert notifier.watchdog_interval_s == 15
        notifier.ready("engine x; queue 0\nsecond line")
        notifier.watchdog()
        first = sock.wait_for(is_ready, 10)
        assert first["STATUS"] == "engine x; queue 0 second line"
        sock.wait_for(is_ping, 10)
    finally:
        notifier.close()
        sock.close()


def test_without_notify_socket_nothing_is_sent() -> None:
    notifier = Notifier(None)
    assert not notifier.enabled
    assert notifier.send(READY="1") is False
