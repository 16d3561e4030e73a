"""Real components for the fault tests: a small filesystem, certificates, a hub session.

- :func:`small_state_dir`: a fixture, a tmpfs of 8 MiB mounted for the test (root only).
- :func:`make_certificates`: a CA, a broker and a client certificate, made with
  ``cryptography`` the way an operator's PKI would issue them.
- :class:`HubSession`: an MQTT 5 subscriber with a persistent session (clean start
  off, session expiry), which the broker keeps across its own restarts, like the
  hub's collector.
- :func:`start_daemon`: a fixture starting ``edge run`` with short timers.
- :func:`image_score`: a scored image as the inference stage hands it on.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from support import DaemonProcess, write_config

from edge.daemon import SERVING
from edge.journal import Journal
from edge.pipeline.study import StudyAssembler
from edge.types import EngineInfo, ImageHeader, ImageScore, IncomingFile, StudyResult

ENGINE = EngineInfo("demo", "1.0.0", "ab" * 32, "onnxruntime")


#: short timers, so that faults and recoveries happen within seconds
FAST: dict[str, Any] = {
    "watch": {"settle_s": 0.5},
    # Long enough that no study of a burst closes before its four views are scored.
    "study": {"quiet_s": 300},
    "mqtt": {"keepalive_s": 5, "reconnect_min_s": 0.2, "reconnect_max_s": 1.0},
    "health": {"interval_s": 1, "min_free_mb": 1},
    "log": {"level": "INFO"},
}


@pytest.fixture
def start_daemon(tmp_path: Path) -> Iterator[Callable[..., DaemonProcess]]:
    """Start ``edge run`` on ``tmp_path/<name>``; every one still running is killed after."""
    started: list[DaemonProcess] = []

    def start(port: int, name: str = ".", env: dict[str, str] | None = None, **overrides: Any):
        folder = tmp_path / name
        config = write_config(folder, port, **{**FAST, **_merged(overrides)})
        daemon = DaemonProcess(config, env=env)
        runs = daemon.log().count(SERVING)
        daemon.start()
        started.append(daemon)
        wait_for(lambda: daemon.log().count(SERVING) > runs, 60, "the daemon serving", daemon)
        return daemon

    yield start
    for daemon in started:
        if daemon.alive():
            daemon.stop(signal.SIGKILL)


def _merged(overrides: dict[str, Any]) -> dict[str, Any]:
    # One level deeper than write_config merges: FAST's mqtt keys survive an mqtt override.
    return {
        key: {**FAST[key], **value} if isinstance(value, dict) and key in FAST else value
        for key, value in overrides.items()
    }


def wait_for(
    predicate: Callable[[], bool], timeout: float, what: str, daemon: DaemonProcess | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if daemon is not None and not daemon.alive():
            raise AssertionError(f"daemon died waiting for {what}:\n{daemon.log()[-5000:]}")
        time.sleep(0.1)
    tail = daemon.log()[-5000:] if daemon else ""
    raise AssertionError(f"no {what} within {timeout}s\n{tail}")


# -- a small filesystem ---------------------------------------------------------------------


@pytest.fixture
def small_state_dir(tmp_path: Path) -> Iterator[Path]:
    """``tmp_path/state`` on a tmpfs of 8 MiB, unmounted afterwards; skips where not allowed."""
    folder = tmp_path / "state"
    folder.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("needs the mount command to make a small filesystem")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"needs root to mount a small tmpfs: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder: Path) -> Path:
    """Write a file into ``folder`` until its filesystem has no byte left; return it."""
    filler = folder / "filler.bin"
    descriptor = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        for size in (1 << 16, 512, 1):  # big blocks first, then what still fits
            with contextlib.suppress(OSError):  # ENOSPC: what this function is for
                while os.write(descriptor, b"\0" * size):
                    pass
    finally:
        os.close(descriptor)
    return filler


# -- certificates -------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_certificates(folder: Path, name: str) -> Pki:
    """A CA named ``name`` that signs a broker certificate (127.0.0.1) and a client one."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} test CA")])
    ca = (
        _builder(ca_name, ca_name, ca_key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write(folder / f"{name}-ca.pem", ca)
    server = _leaf(folder, f"{name}-server", ca, ca_key, server=True)
    client = _leaf(folder, f"{name}-client", ca, ca_key, server=False)
    return Pki(folder / f"{name}-ca.pem", *server, *client)


def _builder(subject: x509.Name, issuer: x509.Name, key: Any) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
    )


def _leaf(
    folder: Path, name: str, ca: x509.Certificate, ca_key: Any, *, server: bool
) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    usage = (
        x509.oid.ExtendedKeyUsageOID.SERVER_AUTH
        if server
        else (x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH)
    )
    builder = (
        _builder(subject, ca.subject, key)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
    cert = builder.sign(ca_key, hashes.SHA256())
    _write(folder / f"{name}.pem", cert)
    (folder / f"{name}.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return folder / f"{name}.pem", folder / f"{name}.key"


def _write(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


# -- the hub's persistent session ------------------------------------------------------------


class HubSession:
    """A subscriber whose session (subscription and queued messages) outlives broker restarts.

    Every message received is kept in order: ``results()`` decodes the result
    documents, duplicates included.
    """

    def __init__(self, port: int, topics: list[str], client_id: str) -> None:
        self._lock = threading.Lock()
        self.received: list[tuple[str, bytes]] = []
        self._client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=paho.MQTTv5,
        )
        self._client.reconnect_delay_set(min_delay=1, max_delay=2)
        self.subscribed = threading.Event()
        self._client.on_message = self._on_message
        self._client.on_connect = lambda client, *_: client.subscribe([(t, 1) for t in topics])
        self._client.on_subscribe = lambda *_: self.subscribed.set()
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = 3600
        self._client.connect("127.0.0.1", port, clean_start=False, properties=properties)
        self._client.loop_start()

    def _on_message(self, client: Any, userdata: Any, message: paho.MQTTMessage) -> None:
        with self._lock:
            self.received.append((message.topic, bytes(message.payload)))

    def results(self) -> list[dict[str, Any]]:
        with self._lock:
            payloads = [payload for topic, payload in self.received if topic.endswith("/results")]
        return [json.loads(payload) for payload in payloads]

    def topics(self) -> list[str]:
        """The topic of every message received, in order."""
        with self._lock:
            return [topic for topic, _payload in self.received]

    def raw_results(self) -> list[bytes]:
        with self._lock:
            return [payload for topic, payload in self.received if topic.endswith("/results")]

    def wait_results(self, count: int, timeout: float) -> list[dict[str, Any]]:
        """Wait until results for ``count`` distinct studies arrived; return all received."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            results = self.results()
            if len({result["study_uid"] for result in results}) >= count:
                return results
            time.sleep(0.1)
        results = self.results()
        raise TimeoutError(
            f"{len({r['study_uid'] for r in results})} of {count} studies within {timeout}s"
        )

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


# -- scored images --------------------------------------------------------------------------


def image_score(
    path: Path,
    *,
    sop_uid: str,
    study_uid: str,
    laterality: str = "L",
    view: str = "CC",
    score: float = 0.25,
) -> ImageScore:
    """A scored image as the inference stage hands it to the study assembler."""
    source = IncomingFile(path, 1000, 1_700_000_000_000_000_000, time.monotonic(), "scan")
    header = ImageHeader(
        source=source,
        sop_uid=sop_uid,
        study_uid=study_uid,
        accession="ACC1",
        laterality=laterality,
        view=view,
        rows=4000,
        columns=3000,
        transfer_syntax="1.2.840.10008.1.2.5",
        row_direction="A",
        timings_ms={"header": 1.5},
    )
    return ImageScore(header, score, ENGINE, {"header": 1.5, "decode": 80.0, "infer": 20.0})


# -- journal contents, for tests of the journal itself ----------------------------------------

TOPIC = "edge/clinic-1/box-1/results"


def incoming(
    path: Path, size: int = 1000, mtime_ns: int = 1_700_000_000_000_000_000
) -> IncomingFile:
    return IncomingFile(path, size, mtime_ns, 0.0, "scan")


def study_result(scores: list, closed_by: str = "complete") -> StudyResult:
    assembler = StudyAssembler(30.0, lambda _engine: 0.5)
    for score in scores:
        assembler.arrived(score.header)
    results = [assembler.scored(score) for score in scores]
    result = results[-1] or assembler.due(now=1e12)[0]
    assert result is not None
    return result


def journalled(journal: Journal, result: StudyResult) -> int:
    return journal.record_result(
        result, TOPIC, lambda seq: (f"id-{seq}", json.dumps({"seq": seq}).encode())
    )


def four_views(folder: Path, study: str) -> list:
    return [
        image_score(
            folder / f"{study}-{lat}{view}",
            sop_uid=f"{study}.{i}",
            study_uid=study,
            laterality=lat,
            view=view,
        )
        for i, (lat, view) in enumerate((("L", "CC"), ("L", "MLO"), ("R", "CC"), ("R", "MLO")))
    ]


def score_all(journal: Journal, scores: list) -> None:
    for score in scores:
        journal.file_seen(score.header.source)
        assert journal.claim_sop(
            score.header.source.path, score.header.sop_uid, score.header.study_uid
        )
        journal.image_scored(score)


def read_journal(state_dir: Path, read: Callable[[Journal], Any]) -> Any:
    """``read`` applied to the journal in ``state_dir``, opened read-only beside its daemon."""
    journal = Journal.open_read_only(state_dir, device="box-1")
    try:
        return read(journal)
    finally:
        journal.close()
