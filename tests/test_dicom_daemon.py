"""The daemon sends each study's CAD SR to the PACS: Orthanc, through an outage and a refusal."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from daemons import start_daemon, wait_for
from dicom_checks import needs_validators, validate
from dicom_senders import dcmtk
from orthanc import Orthanc
from schemas import conforms
from support import Broker, Subscriber
from test_dicom_delivery import Scp

from edge.tools.samples import sample_cases, write_study

__all__ = ["start_daemon"]  # fixtures

pytestmark = [
    needs_validators,
    pytest.mark.skipif(
        shutil.which("Orthanc") is None and not Path("/usr/sbin/Orthanc").exists(),
        reason="Orthanc (Debian package orthanc) is installed by scripts/bootstrap",
    ),
]


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[Orthanc]:
    pacs = Orthanc(tmp_path / "orthanc")
    pacs.start()
    yield pacs
    pacs.stop()


def studies(folder: Path, count: int) -> list[dict[str, Path]]:
    cases = sample_cases()
    return [
        write_study(
            cases[n % len(cases)],
            folder / f"study-{n}",
            accession=f"ACC{n}",
            patient="TEST^PATIENT",
        )
        for n in range(count)
    ]


def drop(study: dict[str, Path], export: Path, name: str) -> None:
    target = export / name
    target.mkdir(parents=True)
    for path in study.values():
        shutil.copy(path, target / path.name)


def results(subscriber: Subscriber, count: int, timeout: float = 120) -> list[dict[str, Any]]:
    found = []
    while len(found) < count:
        message = subscriber.next("/results", timeout)
        assert isinstance(message, dict)
        found.append(message)
    return found


def test_a_four_view_study_ends_up_as_an_sr_in_its_study_at_the_pacs(
    tmp_path: Path, broker: Broker, orthanc: Orthanc, start_daemon: Any
) -> None:
    (study,) = studies(tmp_path / "source", 1)
    # The modality sent the images to the PACS too: the SR must join their study there.
    sent = subprocess.run(
        [str(dcmtk("storescu")), "-xr", "-aec", "ORTHANC", "127.0.0.1", str(orthanc.dicom_port),
         *map(str, study.values())],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    subscriber = Subscriber(broker.port, ["edge/#"])
    daemon = start_daemon(
        broker.port, dicom={"ae_title": "EDGEBOX", "destinations": [orthanc.destination()]}
    )
    drop(study, tmp_path / "export", "incoming")

    (result,) = results(subscriber, 1)
    conforms(result)
    (sr,) = orthanc.wait_srs(1, 60)
    assert sr["SOPInstanceUID"] == result["sr_uid"]
    (orthanc_study,) = orthanc.get("/studies")
    stored = orthanc.get(f"/studies/{orthanc_study}/instances")
    assert len(stored) == 5  # the four images and the SR, in one study
    path = tmp_path / "from-orthanc.dcm"
    path.write_bytes(orthanc.file(sr["_id"]))
    validate(path)
    document = pydicom.dcmread(path)
    assert document.StudyInstanceUID == result["study_uid"]
    library = next(
        item for item in document.ContentSequence
        if item.ConceptNameCodeSequence[0].CodeMeaning == "Image Library"
    )  # fmt: skip
    referenced = {
        i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for i in library.ContentSequence
    }
    assert referenced == {image["sop_uid"] for image in result["images"]}
    assert str(document.PatientName) == "TEST^PATIENT"

    health = subscriber.wait_health(
        lambda h: h.get("dicom", {}).get("destinations", {}).get("pacs", {}).get("delivered") == 1
    )
    assert health["dicom"]["destinations"]["pacs"]["queue"] == 0
    conforms(health)
    assert "dicom_store" in health["latency_ms"]
    # The patient's identity goes to the PACS in the SR, and nowhere else.
    assert "TEST^" not in daemon.log()
    assert "TEST^" not in json.dumps(result) + json.dumps(health)
    subscriber.close()


@pytest.mark.slow
def test_srs_survive_a_pacs_outage_and_a_kill(
    tmp_path: Path, broker: Broker, orthanc: Orthanc, start_daemon: Any
) -> None:
    subscriber = Subscriber(broker.port, ["edge/#"])
    config = {"destinations": [orthanc.destination()], "retry_min_s": 0.2, "retry_max_s": 1.0}
    daemon = start_daemon(broker.port, dicom=config)
    orthanc.stop()
    for n, study in enumerate(studies(tmp_path / "source", 5)):
        drop(study, tmp_path / "export", f"s{n}")
    sent = {result["sr_uid"] for result in results(subscriber, 5)}
    assert len(sent) == 5 and None not in sent
    health = subscriber.wait_health(
        lambda h: h.get("dicom", {}).get("destinations", {}).get("pacs", {}).get("queue") == 5
    )
    assert health["dicom"]["destinations"]["pacs"]["last_error"].startswith("cannot connect")

    daemon.stop(signal.SIGKILL)
    daemon = start_daemon(broker.port, dicom=config)
    orthanc.start()
    stored = orthanc.wait_srs(5, 90)
    assert sorted(sr["SOPInstanceUID"] for sr in stored) == sorted(sent)
    validate_all(orthanc, stored, tmp_path)
    subscriber.wait_health(
        lambda h: h.get("dicom", {}).get("destinations", {}).get("pacs", {}).get("queue") == 0
    )
    subscriber.close()


def test_a_destination_refusing_the_sop_class_holds_while_the_daemon_serves_on(
    tmp_path: Path, broker: Broker, orthanc: Orthanc, start_daemon: Any
) -> None:
    refuser = Scp([0x0122] * 10)
    subscriber = Subscriber(broker.port, ["edge/#"])
    daemon = start_daemon(
        broker.port,
        dicom={"destinations": [refuser.destination("old-pacs"), orthanc.destination()]},
    )
    written = studies(tmp_path / "source", 3)
    drop(written[0], tmp_path / "export", "s0")
    (first,) = results(subscriber, 1)
    alarm = subscriber.wait_health(lambda h: "dicom_destination_held" in h["alarms"])
    conforms(alarm)
    held = alarm["dicom"]["destinations"]["old-pacs"]
    assert held["held"] == "C-STORE status 0x0122"
    for n in (1, 2):
        drop(written[n], tmp_path / "export", f"s{n}")
    later = results(subscriber, 2)
    stored = orthanc.wait_srs(3, 60)
    assert {sr["SOPInstanceUID"] for sr in stored} == {r["sr_uid"] for r in [first, *later]}
    validate_all(orthanc, stored, tmp_path)
    assert len(refuser.received) == 1  # held: not tried again, not looping
    subscriber.wait_health(
        lambda h: (
            h["dicom"]["destinations"]["old-pacs"]["queue"] == 3
            and "dicom_destination_held" in h["alarms"]
        )
    )
    status = _status(daemon.config)
    assert "old-pacs: 3 SRs waiting, 0 delivered; HELD (C-STORE status 0x0122)" in status
    wait_for(lambda: "pacs: 0 SRs waiting, 3 delivered" in _status(daemon.config), 30, "status")
    refuser.close()
    subscriber.close()


def _status(config: Path) -> str:
    command = [sys.executable, "-m", "edge", "status", "--config", str(config)]
    return subprocess.run(command, capture_output=True, text=True, timeout=60).stdout


def validate_all(orthanc: Orthanc, stored: list[dict[str, Any]], folder: Path) -> None:
    """dciodvfy and dsrdump on every SR as the PACS stored it."""
    for sr in stored:
        path = folder / f"{sr['SOPInstanceUID']}.dcm"
        path.write_bytes(orthanc.file(sr["_id"]))
        validate(path)
