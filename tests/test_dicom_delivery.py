"""The DICOM outbox against real peers: Orthanc, dcmtk's storescp, a pynetdicom SCP."""

from __future__ import annotations

import shutil
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from certificates import make_certificates
from dicom_checks import validate
from dicom_senders import dcmtk
from orthanc import Orthanc
from pynetdicom import AE, evt
from pynetdicom.sop_class import MammographyCADSRStorage  # type: ignore[attr-defined]
from support import free_port, wait_for_port
from test_cad_sr import DEMO, scored_study

from edge.delivery.cad_reports import CadReports
from edge.delivery.dicom_outbox import DicomOutbox
from edge.delivery.dicom_store import DicomStore
from edge.dicom.scu import decide
from edge.dicom_config import DicomConfig

pytestmark = pytest.mark.skipif(
    shutil.which("Orthanc") is None and not Path("/usr/sbin/Orthanc").exists(),
    reason="Orthanc (Debian package orthanc) is installed by scripts/bootstrap",
)


#: pynetdicom leaves the socket of a connection that failed (refused, TLS handshake) to the
#: garbage collector, which closes it with a ResourceWarning; the SCU then probes the port
#: itself until it answers, so this happens once per outage.
FAILED_CONNECT_SOCKET = pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning",
    "ignore:Exception ignored in. <ssl.SSLSocket:pytest.PytestUnraisableExceptionWarning",
)


class Scp:
    """A pynetdicom storage SCP answering the statuses it is given, then success."""

    def __init__(
        self, statuses: list[int], port: int | None = None, tls: ssl.SSLContext | None = None
    ) -> None:
        self.statuses = list(statuses)
        self.received: list[str] = []
        self.port = port or free_port()
        ae = AE(ae_title="REFUSER")
        ae.add_supported_context(MammographyCADSRStorage)
        self._server = ae.start_server(
            ("127.0.0.1", self.port),
            block=False,
            evt_handlers=[(evt.EVT_C_STORE, self._store)],
            ssl_context=tls,
        )

    def _store(self, event: Any) -> int:
        self.received.append(str(event.request.AffectedSOPInstanceUID))
        return self.statuses.pop(0) if self.statuses else 0x0000

    def destination(self, name: str) -> dict[str, Any]:
        return {"name": name, "ae_title": "REFUSER", "host": "127.0.0.1", "port": self.port}

    def close(self) -> None:
        self._server.shutdown()


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[Orthanc]:
    pacs = Orthanc(tmp_path / "orthanc")
    pacs.start()
    yield pacs
    pacs.stop()


class Outbox:
    """A store, the SR maker and the outbox on ``destinations``, as the daemon has them."""

    def __init__(self, folder: Path, destinations: list[dict[str, Any]]) -> None:
        self.folder = folder / "sr"  # every SR made is validated there
        self.config = DicomConfig.model_validate(
            {"destinations": destinations, "retry_min_s": 0.1, "retry_max_s": 0.5,
             "sr": {"folder": str(self.folder)}}
        )  # fmt: skip
        self.store = DicomStore.open(folder)
        self.held: list[tuple[str, str]] = []
        self.delivered: list[tuple[str, str]] = []
        self.outbox = DicomOutbox(
            self.config,
            self.store,
            on_hold=lambda name, reason: self.held.append((name, reason)),
            on_delivered=lambda name, sop, seconds: self.delivered.append((name, sop)),
        )
        site = type("Site", (), {"site": "c", "device": "d", "dicom": self.config})
        self.reports = CadReports(site, self.store, lambda engine, t: DEMO)  # type: ignore[arg-type]

    def queue(self, folder: Path, result_id: str) -> str:
        result, _ = scored_study(folder)
        uid = self.reports.commit(self.reports.prepare(result), result_id)
        self.outbox.wake()
        validate(self.folder / f"{uid}.dcm")
        return uid

    def wait(self, what: Any, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not what():
            assert time.monotonic() < deadline, f"timed out; held {self.held}"
            time.sleep(0.05)

    def close(self) -> None:
        self.outbox.stop(5)
        self.store.close()


def test_statuses_decide_what_happens_next() -> None:
    assert [decide(s) for s in (0x0000, 0xB000, 0xB007, 0x0001)] == ["done"] * 4
    assert [decide(s) for s in (0xA700, 0xA7FF, 0x0110)] == ["retry"] * 3
    assert [decide(s) for s in (0x0122, 0xA900, 0xC000, 0x0124)] == ["hold"] * 4


def test_an_sr_reaches_orthanc_once_even_when_queued_again(
    tmp_path: Path, orthanc: Orthanc
) -> None:
    box = Outbox(tmp_path, [orthanc.destination()])
    box.outbox.start()
    try:
        uid = box.queue(tmp_path / "study", "a" * 32)
        box.wait(lambda: box.delivered)
        assert box.reports.commit(box.reports.prepare(scored_study(tmp_path / "again")[0]),
                                  "a" * 32) == uid  # fmt: skip
        box.outbox.wake()
        time.sleep(0.5)
        (stored,) = orthanc.sr_instances()
        assert stored["SOPInstanceUID"] == uid
        assert box.delivered == [("pacs", uid)]
        (state,) = box.outbox.states()
        assert (state.waiting, state.delivered, state.held) == (0, 1, None)
    finally:
        box.close()


def test_out_of_resources_is_retried_with_back_off(tmp_path: Path) -> None:
    scp = Scp([0xA700, 0xA701])
    box = Outbox(tmp_path, [scp.destination("busy")])
    box.outbox.start()
    try:
        uid = box.queue(tmp_path / "study", "b" * 32)
        box.wait(lambda: box.delivered)
        assert scp.received == [uid, uid, uid]  # the same SR, three times
        assert not box.held
    finally:
        box.close()
        scp.close()


def test_sop_class_not_supported_holds_that_destination_only(
    tmp_path: Path, orthanc: Orthanc
) -> None:
    refuser = Scp([0x0122] * 10)
    box = Outbox(tmp_path, [refuser.destination("refuser"), orthanc.destination()])
    box.outbox.start()
    try:
        first = box.queue(tmp_path / "one", "c" * 32)
        second = box.queue(tmp_path / "two", "d" * 32)
        box.wait(lambda: len(box.delivered) == 2 and box.held)
        time.sleep(1.0)  # a held destination is not tried again
        assert refuser.received == [first]
        assert box.held == [("refuser", "C-STORE status 0x0122")]
        held, pacs = box.outbox.states()
        assert (held.waiting, held.held, held.last_error) == (2, "C-STORE status 0x0122",
                                                              "C-STORE status 0x0122")  # fmt: skip
        assert (pacs.waiting, pacs.delivered) == (0, 2)
        assert {i["SOPInstanceUID"] for i in orthanc.sr_instances()} == {first, second}
    finally:
        box.close()
    # A restart (after the PACS is fixed) tries the held destination again.
    refuser.statuses.clear()
    again = Outbox(tmp_path, [refuser.destination("refuser"), orthanc.destination()])
    again.outbox.start()
    try:
        again.wait(lambda: len(again.delivered) == 2)
        assert refuser.received == [first, first, second]
    finally:
        again.close()
        refuser.close()


@pytest.mark.skipif(dcmtk("storescp") is None, reason="dcmtk is installed by bootstrap")
def test_storescp_that_accepts_no_sr_holds_the_destination(tmp_path: Path) -> None:
    profile = tmp_path / "images-only.cfg"
    profile.write_text(
        "[[TransferSyntaxes]]\n[Uncompressed]\nTransferSyntax1 = LittleEndianExplicit\n"
        "[[PresentationContexts]]\n[ImagesOnly]\n"
        "PresentationContext1 = DigitalMammographyXRayImageStorageForPresentation\\Uncompressed\n"
        "[[Profiles]]\n[ImagesOnly]\nPresentationContexts = ImagesOnly\n"
    )
    port = free_port()
    storescp = subprocess.Popen(
        [
            str(dcmtk("storescp")),
            "-xf",
            str(profile),
            "ImagesOnly",
            "-od",
            str(tmp_path),
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        box = Outbox(
            tmp_path, [{"name": "images", "ae_title": "ANY", "host": "127.0.0.1", "port": port}]
        )
        box.outbox.start()
        try:
            box.queue(tmp_path / "study", "e" * 32)
            box.wait(lambda: box.held)
            assert box.held == [("images", "the destination does not accept Mammography CAD SR")]
        finally:
            box.close()
    finally:
        storescp.terminate()
        storescp.wait(timeout=10)


@FAILED_CONNECT_SOCKET
def test_unreachable_pacs_keeps_the_sr_until_it_answers(tmp_path: Path) -> None:
    port = free_port()
    box = Outbox(tmp_path, [{"name": "later", "ae_title": "LATER", "host": "127.0.0.1",
                             "port": port}])  # fmt: skip
    box.outbox.start()
    scp = None
    try:
        box.queue(tmp_path / "study", "f" * 32)
        box.wait(lambda: box.outbox.states()[0].last_error is not None)
        error = box.outbox.states()[0].last_error
        assert error == "cannot connect to the destination: Connection refused"
        scp = Scp([], port)
        box.wait(lambda: box.delivered)
        assert box.outbox.states()[0].waiting == 0
    finally:
        box.close()
        if scp is not None:
            scp.close()


@FAILED_CONNECT_SOCKET
def test_dicom_tls_checks_the_pacs_certificate(tmp_path: Path) -> None:
    pki = make_certificates(tmp_path / "pki", "pacs")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    scp = Scp([], tls=context)
    tls = {"ca_file": str(pki.ca), "server_name": "127.0.0.1"}
    box = Outbox(tmp_path, [{**scp.destination("tls"), "tls": tls}])
    box.outbox.start()
    try:
        box.queue(tmp_path / "study", "9" * 32)
        box.wait(lambda: box.delivered)
    finally:
        box.close()
    # A CA that did not sign the PACS's certificate: nothing is sent, the SR waits.
    other = make_certificates(tmp_path / "other", "other")
    wrong = {"ca_file": str(other.ca), "server_name": "127.0.0.1"}
    (tmp_path / "wrong").mkdir()
    box = Outbox(tmp_path / "wrong", [{**scp.destination("tls"), "tls": wrong}])
    box.outbox.start()
    try:
        box.queue(tmp_path / "study2", "8" * 32)
        box.wait(lambda: box.outbox.states()[0].last_error is not None)
        assert not box.delivered
        assert box.outbox.states()[0].waiting == 1
        assert len(scp.received) == 1  # only the first box's SR reached the PACS
        assert "TLS handshake failed" in str(box.outbox.states()[0].last_error)
    finally:
        box.close()
        scp.close()
