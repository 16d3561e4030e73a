"""The bench's C-STORE phase: studies sent to the daemon's receiver, as a modality sends them.

Each study is one association from a pynetdicom sender in the bench process: its
four views 0.5 s apart (a modality exporting as it acquires) or back to back (a
PACS forwarding a study). The figure is the time from the response to the last
C-STORE (the sender is done; the instance is durable in the spool) to the study's
result reaching the hub-like listener (the result's PUBACK follows within the
broker's round trip): the same end point as the folder's figures, from the
moment a sender can no longer do anything about it.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import yaml
from pynetdicom import AE

from edge.daemon import SERVING
from edge.dicom.contexts import STORAGE_SOP_CLASSES
from edge.dicom.receiver import SUCCESS
from edge.tools.bench import BenchError, phases
from edge.tools.bench.corpus import StagedStudy
from edge.tools.bench.harness import daemon_child, daemon_config, free_port
from edge.tools.bench.phases import Rig, StudySample
from edge.tools.bench.report import summary

#: the bench's sender, registered in its daemon's receiver
CALLING = "EDGE_BENCH"
CALLED = "EDGE_AI"
GAP_S = 0.5
TARGET_P50_MS = 300.0
SETTLE_S = 0.2


@dataclass(frozen=True)
class CstoreFigures:
    e2e: list[StudySample]
    e2e_burst: list[StudySample]
    #: the same studies written into the same daemon's watch folder, in turn with the
    #: C-STORE ones: the folder's figure under the same load, for comparison
    folder: list[StudySample]
    folder_burst: list[StudySample]


def receiver_daemon_config(session_config: Any, folder: Path, broker_port: int) -> tuple[Path, int]:
    """A bench daemon's configuration with a receiver on a free port; (path, port)."""
    path = daemon_config(session_config, folder, port=broker_port, health_interval_s=1.0)
    data = yaml.safe_load(path.read_text())
    port = free_port()
    data["receiver"] = {
        "ae_title": CALLED,
        "port": port,
        "bind": "127.0.0.1",
        "allowed": [{"ae_title": CALLING, "host": "127.0.0.1"}],
    }
    data.setdefault("health", {})["min_free_mb"] = 1
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path, port


def measure(
    rig: Rig, config_path: Path, port: int, encodings: tuple[str, ...], repeats: int
) -> CstoreFigures:
    """Start the receiving daemon, send ``repeats`` studies per encoding and pattern."""
    child = daemon_child(config_path)
    child.start(SERVING)
    try:
        e2e, folder = _studies(rig, port, encodings, repeats, GAP_S)
        burst, folder_burst = _studies(rig, port, encodings, repeats, 0.0)
    finally:
        child.stop()
    return CstoreFigures(e2e, burst, folder, folder_burst)


def _studies(
    rig: Rig, port: int, encodings: tuple[str, ...], repeats: int, gap_s: float
) -> tuple[list[StudySample], list[StudySample]]:
    """Each study by C-STORE, then a copy of it through the watch folder."""
    sent, written = [], []
    for index, encoding in itertools.product(range(repeats), encodings):
        study = rig.stage(encoding, index)
        try:
            sent.append(_one_study(rig, port, study, gap_s))
        finally:
            for path in study.files:
                path.unlink(missing_ok=True)
        time.sleep(SETTLE_S)
        study = rig.stage(encoding, index)
        try:
            written.append(phases._one_study(rig, study, gap_s))
        finally:
            rig.discard(study)
        time.sleep(SETTLE_S)
    return sent, written


def _one_study(rig: Rig, port: int, study: StagedStudy, gap_s: float) -> StudySample:
    datasets = [pydicom.dcmread(path) for path in study.files]
    assoc = _sender(datasets).associate("127.0.0.1", port, ae_title=CALLED)
    if not assoc.is_established:
        raise BenchError(f"the receiver on port {port} refused the bench's association")
    try:
        started = time.monotonic()
        answered = 0.0
        for number, dataset in enumerate(datasets):
            _sleep_until(started + number * gap_s)
            status = assoc.send_c_store(dataset)
            answered = time.monotonic()
            if int(status.get("Status", -1)) != SUCCESS:
                raise BenchError(f"C-STORE answered {status.get('Status')!r}, not success")
    finally:
        assoc.release()
    received = rig.listener.wait_result(study.study_uid, rig.timeout_s)
    timings = received.message.get("timings_ms", {})
    return StudySample(study.encoding, (received.at - answered) * 1000, dict(timings))


def _sender(datasets: Sequence[pydicom.Dataset]) -> AE:
    ae = AE(ae_title=CALLING)
    syntaxes = {str(d.file_meta.TransferSyntaxUID) for d in datasets}
    for sop_class in STORAGE_SOP_CLASSES.values():
        for syntax in sorted(syntaxes):
            ae.add_requested_context(sop_class, syntax)
    return ae


def _sleep_until(moment: float) -> None:
    delay = moment - time.monotonic()
    if delay > 0:
        time.sleep(delay)


def section(figures: CstoreFigures, encodings: tuple[str, ...]) -> dict[str, Any]:
    """The ``cstore`` section of the bench's JSON."""
    by_encoding = {
        encoding: {
            name: summary(s.e2e_ms for s in getattr(figures, name) if s.encoding == encoding)
            for name in ("e2e", "e2e_burst", "folder", "folder_burst")
        }
        for encoding in encodings
    }
    worst = max(float(v["e2e"]["p50_ms"]) for v in by_encoding.values())
    return {
        "what": "last C-STORE response -> study result at the hub, ms",
        "e2e": summary(s.e2e_ms for s in figures.e2e),
        "e2e_burst": summary(s.e2e_ms for s in figures.e2e_burst),
        "folder": summary(s.e2e_ms for s in figures.folder),
        "folder_burst": summary(s.e2e_ms for s in figures.folder_burst),
        "by_encoding": by_encoding,
        "target": {
            "what": "p50 per encoding, views 0.5 s apart",
            "target": f"<= {TARGET_P50_MS:g}",
            "figure": worst,
            "met": worst <= TARGET_P50_MS,
        },
    }


def render(cstore: dict[str, Any]) -> str:
    """The C-STORE figures as a table."""
    rows = [
        "by C-STORE, ms: last C-STORE response -> study result at the hub",
        "(the folder: the same studies written into the same daemon's folder, in turn)",
        f"{'encoding':<15}{'views 0.5 s apart':>22}{'all at once':>21}{'folder, apart':>17}"
        f"{'at once':>10}",
        f"{'':<15}{'p50':>8}{'p95':>7}{'p99':>7}{'p50':>7}{'p95':>7}{'p99':>7}"
        f"{'p50':>10}{'p95':>7}{'p50':>10}",
    ]
    for encoding, values in [*cstore["by_encoding"].items(), ("all", cstore)]:
        e2e, burst = values["e2e"], values["e2e_burst"]
        folder, folder_burst = values["folder"], values["folder_burst"]
        rows.append(
            f"{encoding:<15}{e2e['p50_ms']:>8.0f}{e2e['p95_ms']:>7.0f}{e2e['p99_ms']:>7.0f}"
            f"{burst['p50_ms']:>7.0f}{burst['p95_ms']:>7.0f}{burst['p99_ms']:>7.0f}"
            f"{folder['p50_ms']:>10.0f}{folder['p95_ms']:>7.0f}{folder_burst['p50_ms']:>10.0f}"
        )
    target = cstore["target"]
    met = "met" if target["met"] else "NOT MET"
    rows.append(f"target p50 {target['target']} ms: {target['figure']:.0f} ({met})")
    return "\n".join(rows)
