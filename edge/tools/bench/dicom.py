"""The CAD SR phase of ``edge bench``: from the MQTT result to the PACS's C-STORE response.

The PACS is a pynetdicom storage SCP in the bench's own process, on a free
loopback port, that stamps each SR as its C-STORE request is answered; the hub is
the bench's MQTT listener, which stamps each result as it arrives. Both stamps are
the same monotonic clock, so ``sr_ms`` (SR stored minus result received) is the
delay a radiologist would see between the hub having the answer and the PACS
having it; negative when the SR is stored first (the box sends the SR as soon as
it is kept, before the result's PUBACK).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, cast

from pynetdicom import AE, evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event

from edge.config import Config
from edge.dicom.cad_sr import MAMMOGRAPHY_CAD_SR
from edge.tools.bench import BenchError, phases
from edge.tools.bench.corpus import sent_name
from edge.tools.bench.harness import free_port
from edge.tools.bench.report import summary

AE_TITLE = "BENCHPACS"
#: the view gap of the arrival pattern: a modality sending one view after the other
GAP_S = 0.5


class Pacs:
    """A storage SCP that answers success and records when each SR was answered."""

    def __init__(self) -> None:
        self.port = free_port()
        self._stored: dict[str, float] = {}
        self._cond = threading.Condition()
        ae = AE(ae_title=AE_TITLE)
        ae.add_supported_context(MAMMOGRAPHY_CAD_SR)
        server = ae.start_server(
            ("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, self._store)]
        )
        if server is None:
            raise BenchError("the bench PACS did not start")
        self._server = server

    def _store(self, event: Event) -> int:
        with self._cond:
            request = cast(C_STORE, event.request)
            self._stored[str(request.AffectedSOPInstanceUID)] = time.monotonic()
            self._cond.notify_all()
        return 0x0000

    def wait(self, sop_uid: str, timeout: float) -> float:
        with self._cond:
            if not self._cond.wait_for(lambda: sop_uid in self._stored, timeout):
                raise BenchError(f"the SR of a study did not reach the PACS within {timeout:.0f} s")
            return self._stored[sop_uid]

    def close(self) -> None:
        self._server.shutdown()


def with_pacs(config: Config, pacs: Pacs) -> Config:
    """``config`` sending its SRs to ``pacs`` only."""
    destination = {"name": "bench-pacs", "ae_title": AE_TITLE, "host": "127.0.0.1",
                   "port": pacs.port}  # fmt: skip
    dicom = config.dicom.model_validate(
        {**config.dicom.model_dump(), "sr": {"enabled": True, "folder": None},
         "destinations": [destination]}
    )  # fmt: skip
    return config.model_copy(update={"dicom": dicom})


@dataclass(frozen=True)
class SrSample:
    encoding: str
    #: SR answered by the PACS minus result received by the hub, in ms
    sr_ms: float


def measure(
    rig: phases.Rig, pacs: Pacs, encodings: tuple[str, ...], studies: int
) -> list[SrSample]:
    """``studies`` studies, encodings in turn, views ``GAP_S`` apart."""
    samples = []
    for index in range(studies):
        encoding = encodings[index % len(encodings)]
        study = rig.stage(encoding, index)
        try:
            for number, path in enumerate(study.files):
                if number:
                    time.sleep(GAP_S)
                phases.write_file(rig.export / sent_name(path), path.read_bytes())
            received = rig.listener.wait_result(study.study_uid, rig.timeout_s)
            sr_uid = received.message.get("sr_uid")
            if not sr_uid:
                raise BenchError("a result names no SR: is this daemon older than the CAD SR?")
            stored = pacs.wait(str(sr_uid), rig.timeout_s)
            samples.append(SrSample(encoding, (stored - received.at) * 1000))
        finally:
            rig.discard(study)
        time.sleep(phases.SETTLE_S)
    return samples


def figures(samples: list[SrSample], health: dict[str, Any]) -> dict[str, Any]:
    """The phase's part of the bench JSON."""
    return {
        "result_to_store_response": summary(s.sr_ms for s in samples),
        "by_encoding": {
            encoding: summary(s.sr_ms for s in samples if s.encoding == encoding)
            for encoding in dict.fromkeys(s.encoding for s in samples)
        },
        # the daemon's own view: SR queued -> C-STORE response, from its health
        "queue_to_store_response_ms": dict(health.get("latency_ms", {}).get("dicom_store", {})),
        "target_p50_ms": 100,
    }
