"""The receiver's parts on their own: its configuration, its policy, its spool, its TLS."""

from __future__ import annotations

import os
import ssl
from pathlib import Path

import pytest
from certificates import make_certificates
from dicom_senders import Sender, sop_uids
from support import free_port

from edge.config import load_config
from edge.dicom.policy import Request, SenderPolicy
from edge.dicom.receiver import Receiver
from edge.dicom.spool import PARTIAL_PREFIX, Spool, SpoolFull
from edge.errors import ConfigError
from edge.receiver_config import AllowedSender, ReceiverConfig
from edge.types import IncomingFile

CONFIG = """\
site: clinic-1
device: box-1
state_dir: state
watch: {dir: export}
engine: {bundle: engines/demo}
receiver:
  ae_title: EDGE_AI
  port: 11112
  allowed:
    - {ae_title: MAMMO1, host: 10.0.0.21}
  max_associations: 4
"""


def load(tmp_path: Path, text: str = CONFIG) -> ReceiverConfig:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    receiver = load_config(path).receiver
    assert receiver is not None
    return receiver


def test_the_issue_s_receiver_keys_load(tmp_path: Path) -> None:
    receiver = load(tmp_path)
    assert receiver.ae_title == "EDGE_AI"
    assert receiver.port == 11112
    assert receiver.allowed == (AllowedSender(ae_title="MAMMO1", host="10.0.0.21"),)
    assert receiver.max_associations == 4
    assert receiver.tls is None


@pytest.mark.parametrize(
    ("old", "new", "where"),
    [
        ("host: 10.0.0.21", "host: mammo1.clinic", "receiver.allowed.0.host (line 10)"),
        ("ae_title: MAMMO1", "ae_title: MAMMO\\\\ONE", "receiver.allowed.0.ae_title (line 10)"),
        ("ae_title: EDGE_AI", "ae_title: AN_AE_TITLE_OF_17CH", "receiver.ae_title (line 7)"),
        ("port: 11112", "port: 70000", "receiver.port (line 8)"),
        ("max_associations: 4", "max_associations: 0", "receiver.max_associations (line 11)"),
        ("    - {ae_title: MAMMO1, host: 10.0.0.21}\n", "    []\n", "receiver.allowed"),
        ("max_associations: 4", "max_associations: 4\n  tls: {ca_file: ca.pem}", "receiver.tls"),
    ],
)
def test_an_invalid_receiver_key_fails_at_load_with_its_path(
    tmp_path: Path, old: str, new: str, where: str
) -> None:
    assert old in CONFIG
    with pytest.raises(ConfigError) as info:
        load(tmp_path, CONFIG.replace(old, new))
    assert where in str(info.value)


def test_tls_files_resolve_against_the_configuration_s_folder(tmp_path: Path) -> None:
    text = CONFIG + "  tls: {cert_file: dicom.pem, key_file: dicom.key}\n"
    tls = load(tmp_path, text).tls
    assert tls is not None
    assert tls.cert_file == tmp_path.resolve() / "dicom.pem"


POLICY = SenderPolicy(
    "EDGE_AI",
    [AllowedSender(ae_title="MAMMO1", host="10.0.0.21")],
    max_associations=2,
)


@pytest.mark.parametrize(
    ("request_", "reason", "answer"),
    [
        (Request("EDGE_AI", "MAMMO1", "10.0.0.21", 1), None, None),
        (Request("EDGE_AI  ", "MAMMO1  ", "::ffff:10.0.0.21", 2), None, None),
        (Request("EDGE_AI", "STRANGER", "10.0.0.21", 1), "calling_ae_title", (1, 1, 3)),
        (Request("EDGE_AI", "MAMMO1", "10.0.0.99", 1), "host_not_allowed", (1, 1, 3)),
        (Request("PACS", "MAMMO1", "10.0.0.21", 1), "called_ae_title", (1, 1, 7)),
        (Request("EDGE_AI", "MAMMO1", "10.0.0.21", 3), "too_many_associations", (2, 3, 2)),
    ],
)
def test_the_policy_answers_with_the_standard_rejection(
    request_: Request, reason: str | None, answer: tuple[int, int, int] | None
) -> None:
    refusal = POLICY.judge(request_)
    if reason is None:
        assert refusal is None
        return
    assert refusal is not None
    assert refusal.reason == reason
    assert (refusal.result, refusal.source, refusal.diagnostic) == answer


def test_the_spool_keeps_an_instance_whole_and_drops_partial_writes(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", min_free_mb=0)
    assert spool.prepare() == []
    kept = spool.keep(b"DICM" * 1000)
    (spool.folder / f"{PARTIAL_PREFIX}cut-short.dcm").write_bytes(b"half")
    assert kept.read_bytes() == b"DICM" * 1000
    assert spool.prepare() == [kept]  # a restart finds the acknowledged one only
    assert not any(p.name.startswith(PARTIAL_PREFIX) for p in spool.folder.iterdir())
    assert spool.sweep(lambda path: path == kept) == 1
    assert spool.files() == []


def test_the_spool_refuses_what_would_leave_less_than_the_minimum(tmp_path: Path) -> None:
    free_mb = os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize // (1 << 20)
    spool = Spool(tmp_path / "spool", min_free_mb=free_mb + 1)
    spool.prepare()
    with pytest.raises(SpoolFull, match=r"health.min_free_mb"):
        spool.keep(b"x")
    assert list(spool.folder.iterdir()) == []


def test_dicom_tls_takes_a_sender_with_a_certificate_and_refuses_one_without(
    tmp_path: Path, study_files: dict[str, Path]
) -> None:
    pki = make_certificates(tmp_path / "pki", "dicom")
    port = free_port()
    config = ReceiverConfig.model_validate(
        {
            "port": port,
            "bind": "127.0.0.1",
            "allowed": [{"ae_title": "MAMMO1", "host": "127.0.0.1"}],
            "tls": {"cert_file": pki.server_cert, "key_file": pki.server_key, "ca_file": pki.ca},
        }
    )
    taken: list[IncomingFile] = []
    receiver = Receiver(config, Spool(tmp_path / "spool", min_free_mb=0), stats_dir=tmp_path)
    receiver.start(taken.append, done=lambda path: False, on_refusing=lambda reason, detail: None)
    try:
        client = ssl.create_default_context(cafile=str(pki.ca))
        client.load_cert_chain(str(pki.client_cert), str(pki.client_key))
        sender = Sender(port, tls=client)
        assert sender.echo() == 0x0000
        path = study_files["lcc"]
        assert sender.send(path) == 0x0000
        sender.close()
        assert len(taken) == 1
        assert sop_uids([taken[0].path]) == sop_uids([path])

        anonymous = ssl.create_default_context(cafile=str(pki.ca))
        stranger = Sender(port, tls=anonymous)
        assert not stranger.established
        stranger.close()
        plain = Sender(port)
        assert not plain.established
        plain.close()
    finally:
        receiver.stop()
    assert receiver.counters.snapshot()["instances"]["received"] == 1
