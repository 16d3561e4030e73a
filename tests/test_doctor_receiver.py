"""``edge doctor``'s ``dicom`` check: the receiver's port, bound as the service user would."""

from __future__ import annotations

import getpass
import os
import socket
from pathlib import Path

import pytest
from dicom_senders import receiver_settings
from support import Broker, free_port
from systemd_engines import make_bundle
from test_doctor import doctor, healthy_config, status_of, text_of

from edge.dicom.receiver import Receiver
from edge.dicom.spool import Spool
from edge.receiver_config import ReceiverConfig

#: the doctor checks as the user running the tests, whether or not an edge account exists
AS_ME = ("--user", getpass.getuser())


@pytest.fixture
def engine(tmp_path: Path) -> Path:
    return make_bundle(tmp_path / "engine")


def test_a_free_port_passes(tmp_path: Path, broker: Broker, engine: Path) -> None:
    port = free_port()
    config = healthy_config(tmp_path, broker.port, engine, receiver=receiver_settings(port))
    code, checks = doctor(config, *AS_ME)
    assert code == 0, checks
    assert status_of(checks, "dicom") == "OK"
    assert f"can listen on 127.0.0.1 port {port} as EDGE_AI" in text_of(checks, "dicom")
    assert list(checks).index("dicom") == list(checks).index("state") + 1


def test_a_port_taken_by_another_program_fails_with_how_to_find_it(
    tmp_path: Path, broker: Broker, engine: Path
) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        config = healthy_config(tmp_path, broker.port, engine, receiver=receiver_settings(port))
        code, checks = doctor(config, *AS_ME)
    assert code == 1
    assert status_of(checks, "dicom") == "FAIL"
    assert "is taken by another program" in text_of(checks, "dicom")
    assert f"fix: ss -ltnp 'sport = :{port}'" in text_of(checks, "dicom")


def test_a_port_served_by_the_running_receiver_passes(
    tmp_path: Path, broker: Broker, engine: Path
) -> None:
    port = free_port()
    settings = receiver_settings(port)
    receiver = Receiver(
        ReceiverConfig.model_validate(settings),
        Spool(tmp_path / "spool", min_free_mb=0),
        stats_dir=tmp_path,
    )
    receiver.start(
        lambda incoming: None, done=lambda path: False, on_refusing=lambda reason, detail: None
    )
    try:
        config = healthy_config(tmp_path, broker.port, engine, receiver=settings)
        code, checks = doctor(config, *AS_ME)
    finally:
        receiver.stop()
    assert code == 0, checks
    assert status_of(checks, "dicom") == "OK"
    assert "served by a DICOM receiver answering as EDGE_AI" in text_of(checks, "dicom")
    assert receiver.counters.snapshot()["associations"]["rejected_by_reason"] == {
        "calling_ae_title": 1
    }


@pytest.mark.skipif(os.geteuid() != 0, reason="trying another user's rights needs root")
def test_port_104_without_the_unit_s_capability_fails_with_the_drop_in_to_install(
    tmp_path: Path, broker: Broker, engine: Path
) -> None:
    config = healthy_config(tmp_path, broker.port, engine, receiver=receiver_settings(104))
    code, checks = doctor(config, "--user", "nobody")
    assert code == 1
    assert status_of(checks, "dicom") == "FAIL"
    assert "receiver.port 104 is below 1024" in text_of(checks, "dicom")
    assert "fix: install -D -m 0644 systemd/edge-dicom-port.conf" in text_of(checks, "dicom")


@pytest.mark.skipif(os.geteuid() != 0, reason="trying another user's rights needs root")
def test_an_unprivileged_port_is_bound_as_the_service_user(
    tmp_path: Path, broker: Broker, engine: Path
) -> None:
    port = free_port()
    config = healthy_config(tmp_path, broker.port, engine, receiver=receiver_settings(port))
    _code, checks = doctor(config, "--user", "nobody")
    assert status_of(checks, "dicom") == "OK", checks
    assert f"nobody can listen on 127.0.0.1 port {port}" in text_of(checks, "dicom")
