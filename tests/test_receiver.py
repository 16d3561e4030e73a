"""The DICOM receiver end to end: real senders, the daemon as a process, a real broker."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from dicom_senders import (
    CALLING,
    Sender,
    dcmtk,
    needs_dcmtk,
    receiver_settings,
    sop_uids,
    storescu,
)
from hub_session import HubSession
from schemas import conforms
from support import Broker, DaemonProcess, Subscriber, free_port, wait_for_port, write_config
from tmpfs import fill, mounted_tmpfs

from edge.daemon import SERVING
from edge.dicom.receiver import OUT_OF_RESOURCES
from edge.tools.samples import sample_cases, write_study

SLOW_STUDY = {"quiet_s": 300}


def spool_of(daemon: DaemonProcess) -> Path:
    return daemon.config.parent / "state" / "spool"


def wait_spool_empty(daemon: DaemonProcess, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(spool_of(daemon).iterdir()):
            return
        time.sleep(0.1)
    raise AssertionError(f"spool not empty: {sorted(spool_of(daemon).iterdir())}")


@needs_dcmtk
def test_storescu_from_an_allowed_sender_gets_its_result_over_mqtt(
    daemon_factory: Callable[..., DaemonProcess],
    subscriber: Subscriber,
    study_files: dict[str, Path],
) -> None:
    port = free_port()
    daemon = daemon_factory(receiver=receiver_settings(port), study=SLOW_STUDY)
    wait_for_port(port)
    files = list(study_files.values())

    echo = subprocess.run(
        [str(dcmtk("echoscu")), "-aet", CALLING, "-aec", "EDGE_AI", "127.0.0.1", str(port)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    sent = storescu(port, files)

    assert echo.returncode == 0, echo.stderr
    assert sent.returncode == 0, sent.stderr
    result = subscriber.next("/results", 90)
    assert isinstance(result, dict)
    assert {image["sop_uid"] for image in result["images"]} == sop_uids(files)
    assert result["missing_views"] == []
    assert result["closed_by"] == "complete"
    wait_spool_empty(daemon)
    # Health messages queued while the spool still held the instances say so; the
    # first to count all four received and none waiting is the one to read.
    health = subscriber.wait_health(
        lambda h: (
            h.get("receiver", {}).get("instances", {}).get("received") == 4
            and h["receiver"].get("spool_files") == 0
        )
    )
    conforms(health)
    receiver = health["receiver"]
    assert receiver["associations"]["accepted"] == 2  # the C-ECHO's and the C-STOREs'
    assert receiver["echoes"] == 1
    assert receiver["associations"]["active"] == 0
    assert receiver["instances"]["refused"] == 0
    line = status_of_receiver(daemon)
    assert f"EDGE_AI on port {port}" in line
    assert "2 associations (0 open), 0 rejected; 4 instances received, 0 refused" in line
    assert "0 in the spool" in line


@needs_dcmtk
@pytest.mark.parametrize(
    ("calling", "called", "reason", "said"),
    [
        ("STRANGER", "EDGE_AI", "calling_ae_title", "Calling AE Title Not Recognized"),
        ("MAMMO2", "EDGE_AI", "host_not_allowed", "Calling AE Title Not Recognized"),
        (CALLING, "OTHER_AI", "called_ae_title", "Called AE Title Not Recognized"),
    ],
)
def test_an_unregistered_sender_or_a_wrong_called_ae_title_is_rejected_and_nothing_stored(
    daemon_factory: Callable[..., DaemonProcess],
    subscriber: Subscriber,
    study_files: dict[str, Path],
    calling: str,
    called: str,
    reason: str,
    said: str,
) -> None:
    port = free_port()
    daemon = daemon_factory(receiver=receiver_settings(port))
    wait_for_port(port)

    sent = storescu(port, list(study_files.values()), calling=calling, called=called)

    assert sent.returncode != 0
    assert "Association Rejected" in sent.stderr + sent.stdout
    assert said.lower() in (sent.stderr + sent.stdout).lower()
    health = subscriber.wait_health(
        lambda h: h.get("receiver", {}).get("associations", {}).get("rejected") == 1
    )
    conforms(health)
    assert health["receiver"]["associations"]["rejected_by_reason"] == {reason: 1}
    assert health["receiver"]["associations"]["accepted"] == 0
    assert health["receiver"]["instances"]["received"] == 0
    assert health["counters"]["received"] == 0
    assert list(spool_of(daemon).iterdir()) == []
    assert f"0 associations (0 open), 1 rejected ({reason} 1)" in status_of_receiver(daemon)


def status_of_receiver(daemon: DaemonProcess) -> str:
    """The receiver line of ``edge status``, once the daemon wrote its counters."""
    time.sleep(0.5)  # the counters are written at most every 0.25 s
    status = subprocess.run(
        [sys.executable, "-m", "edge", "status", "--config", str(daemon.config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    return next(line for line in status.splitlines() if line.startswith("receiver"))


@pytest.fixture(scope="session")
def eight_studies(tmp_path_factory: pytest.TempPathFactory) -> list[list[Path]]:
    """Eight real four-view studies (the two CBIS-DDSM cases, each with fresh UIDs)."""
    folder = tmp_path_factory.mktemp("eight")
    cases = sample_cases()
    return [
        list(write_study(cases[i % 2], folder / f"s{i}", accession=f"ACC{i:04d}").values())
        for i in range(8)
    ]


def test_four_parallel_associations_deliver_every_result_once_and_leave_the_spool_empty(
    daemon_factory: Callable[..., DaemonProcess],
    broker: Broker,
    eight_studies: list[list[Path]],
) -> None:
    port = free_port()
    hub = HubSession(broker.port, ["edge/#"], f"hub-{time.monotonic_ns()}")
    daemon = daemon_factory(receiver=receiver_settings(port), study=SLOW_STUDY)
    wait_for_port(port)
    senders = [Sender(port) for _ in range(4)]
    assert all(sender.established for sender in senders)
    fifth = Sender(port)  # one more than max_associations: refused, local limit exceeded
    assert not fifth.established
    assert fifth.assoc.is_rejected
    fifth.close()

    def send(sender: Sender, studies: list[list[Path]]) -> None:
        for study in studies:
            for path in study:
                sender.send(path)
        sender.close()

    threads = [
        threading.Thread(target=send, args=(sender, eight_studies[i * 2 : i * 2 + 2]))
        for i, sender in enumerate(senders)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)

    statuses = [status for sender in senders for status in sender.statuses.values()]
    assert statuses == [0x0000] * 32
    hub.wait_results(8, 300)
    wait_spool_empty(daemon)
    time.sleep(1.0)  # a result published twice would arrive by now
    results = hub.results()
    assert sorted(r["study_uid"] for r in results) == sorted({r["study_uid"] for r in results}), (
        "a study's result arrived more than once"
    )
    assert len(results) == 8
    assert {frozenset(image["sop_uid"] for image in r["images"]) for r in results} == {
        frozenset(sop_uids(study)) for study in eight_studies
    }
    health = _latest_health(hub)
    assert health["receiver"]["associations"]["rejected_by_reason"] == {"too_many_associations": 1}
    assert health["counters"]["duplicates"] == 0
    hub.close()


def _latest_health(hub: HubSession, timeout: float = 10.0) -> dict[str, Any]:
    """The newest health message, once one arrived after this call."""
    seen = len(hub.topics())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with hub._lock:
            fresh = [p for t, p in hub.received[seen:] if t.endswith("/health")]
        if fresh:
            loaded: dict[str, Any] = json.loads(fresh[-1])
            return loaded
        time.sleep(0.1)
    raise AssertionError("no health message")


@pytest.mark.slow
def test_kill_9_during_an_association_loses_no_acknowledged_instance_and_takes_the_retry_once(
    daemon_factory: Callable[..., DaemonProcess],
    broker: Broker,
    eight_studies: list[list[Path]],
) -> None:
    port = free_port()
    hub = HubSession(broker.port, ["edge/#"], f"hub-{time.monotonic_ns()}")
    daemon = daemon_factory(receiver=receiver_settings(port), study=SLOW_STUDY)
    wait_for_port(port)
    studies = eight_studies[:2]
    files = [path for study in studies for path in study]
    sender = Sender(port)

    def send_all() -> None:
        for path in files:
            if sender.send(path) is None:
                return  # the receiver is gone: no status, the sender will retry

    thread = threading.Thread(target=send_all)
    thread.start()
    deadline = time.monotonic() + 120
    while sum(s == 0 for s in sender.statuses.values()) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    daemon.stop(signal.SIGKILL)  # the sender is in the middle of its sixth instance, or later
    thread.join(timeout=120)
    sender.close()
    acknowledged = {uid for uid, status in sender.statuses.items() if status == 0}
    assert 5 <= len(acknowledged) < len(files)

    daemon.start()
    daemon.wait_log(SERVING, 60)
    wait_for_port(port)
    retry = Sender(port)
    unacknowledged = [path for path in files if sop_uids([path]) - acknowledged]
    assert [retry.send(path) for path in unacknowledged] == [0x0000] * len(unacknowledged)
    retry.close()

    hub.wait_results(2, 300)
    wait_spool_empty(daemon)
    time.sleep(1.0)
    results = hub.results()
    # One result per study: a result the broker had taken but not yet acknowledged at
    # the kill may be replayed under its same id (at least once), never made twice.
    assert len({r["id"] for r in results}) == 2, "a study got a second result"
    assert len({r["study_uid"] for r in results}) == 2
    assert {frozenset(image["sop_uid"] for image in r["images"]) for r in results} == {
        frozenset(sop_uids(study)) for study in studies
    }
    assert all(r["missing_views"] == [] for r in results)
    hub.close()


@pytest.mark.slow
def test_a_full_state_disk_answers_out_of_resources_and_the_retry_succeeds_once_space_returns(
    daemon_factory: Callable[..., DaemonProcess],
    subscriber: Subscriber,
    tmp_path: Path,
    study_files: dict[str, Path],
) -> None:
    port = free_port()
    files = list(study_files.values())
    with mounted_tmpfs(tmp_path / "state", 64) as state:
        daemon = daemon_factory(
            receiver=receiver_settings(port),
            study=SLOW_STUDY,
            health={"interval_s": 1, "min_free_mb": 1},
        )
        wait_for_port(port)
        filler = fill(state)
        sender = Sender(port)

        assert sender.send(files[0]) == OUT_OF_RESOURCES

        event = subscriber.next("/events", 10)
        assert isinstance(event, dict)
        assert (event["kind"], event["reason"]) == ("receiver", "state_disk_low")
        conforms(event)
        alarm = subscriber.wait_health(lambda h: "receiver_refusing" in h["alarms"])
        conforms(alarm)
        assert "state_disk_low" in alarm["alarms"]
        assert alarm["receiver"]["instances"]["refused_by_reason"] == {"state_disk_low": 1}
        assert alarm["receiver"]["refusing"] == "state_disk_low"
        assert list(spool_of(daemon).iterdir()) == []

        filler.unlink()
        assert [sender.send(path) for path in files] == [0x0000] * 4
        # The association is still open: the study closes at its fourth view regardless.
        result = subscriber.next("/results", 120)
        assert sender.established
        sender.close()
        assert isinstance(result, dict)
        assert result["closed_by"] == "complete"
        assert {image["sop_uid"] for image in result["images"]} == sop_uids(files)
        cleared = subscriber.wait_health(lambda h: "receiver_refusing" not in h["alarms"])
        assert cleared["receiver"]["refusing"] is None
        wait_spool_empty(daemon)
        daemon.stop(signal.SIGKILL)


def test_a_port_the_receiver_cannot_bind_stops_the_start_with_the_reason(
    tmp_path: Path, broker: Broker
) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        config = write_config(tmp_path, broker.port, receiver=receiver_settings(port))
        run = subprocess.run(
            [sys.executable, "-m", "edge", "run", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert run.returncode == 1
    assert f"receiver error: cannot listen on 127.0.0.1 port {port}" in run.stderr
    assert "Traceback" not in run.stderr
