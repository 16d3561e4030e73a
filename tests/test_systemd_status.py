"""``edge status`` read from the journal, while the daemon runs and after it stopped."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pydicom
from support import ROOT, Broker, DaemonProcess, Subscriber, write_config
from systemd_engines import make_bundle

from edge.common.privacy import study_hash
from edge.tools.samples import sample_cases, write_study


def status(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge", "status", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )


def section(text: str, name: str) -> list[str]:
    """The lines of one section: its heading line and the indented lines under it."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(name))
    end = next(
        (i for i in range(start + 1, len(lines)) if not lines[i].startswith("  ")), len(lines)
    )
    return lines[start:end]


def test_status_shows_studies_backlog_and_errors_while_running_and_after(
    daemon_factory: Callable[..., DaemonProcess],
    subscriber: Subscriber,
    broker: Broker,
    tmp_path: Path,
) -> None:
    bundle = make_bundle(tmp_path / "engine")
    daemon = daemon_factory(engine={"bundle": str(bundle), "threads": 1})
    config = tmp_path / "config.yaml"
    export = tmp_path / "export"
    cases = sample_cases()
    delivered = write_study(cases[0], tmp_path / "a", accession="ACC1", patient="TEST^STATUS")
    for view, path in delivered.items():
        shutil.copy(path, export / f"a-{view}.dcm")
    subscriber.next("/results", 120)
    (export / "notes.dcm").write_bytes(b"this is not DICOM" * 20)
    daemon.wait_log("quarantined")

    # The hub's broker goes away: the next study's result waits in the outbox.
    broker.stop()
    waiting = write_study(cases[1], tmp_path / "b", accession="ACC2", patient="TEST^STATUS")
    for view, path in waiting.items():
        shutil.copy(path, export / f"b-{view}.dcm")
    daemon.wait_log("result seq 2 journalled", timeout=120)

    running = status(config)
    assert running.returncode == 0, running.stderr
    out = running.stdout
    uids = [
        str(pydicom.dcmread(s["lcc"], stop_before_pixels=True).StudyInstanceUID)
        for s in (delivered, waiting)
    ]
    studies = section(out, "studies")
    assert studies[0] == "studies   last 2, newest first:"
    assert f"study {study_hash(uids[1])}" in studies[1] and "NOT DELIVERED" in studies[1]
    assert f"study {study_hash(uids[0])}" in studies[2] and "delivered 20" in studies[2]
    assert "4 images, complete" in studies[2] and "score 0." in studies[2]
    assert section(out, "outbox")[0].startswith("outbox    1 results not yet acknowledged")
    errors = section(out, "errors")
    assert errors[0] == "errors    last 1, newest first:"
    assert "quarantined not_dicom" in errors[1]
    assert section(out, "engine")[0].startswith("engine    test-mean 1.0.0")
    assert section(out, "queue")[0].startswith("queue     0 files taken and not yet scored")
    # Studies are named by hash only: no UID, no patient name, no file name.
    for secret in ("TEST^STATUS", "ACC1", uids[0], uids[1], "notes.dcm"):
        assert secret not in out

    assert daemon.stop(signal.SIGTERM, timeout=90) == 0
    stopped = status(config)
    assert stopped.returncode == 0, stopped.stderr
    assert section(stopped.stdout, "studies") == studies


def test_status_before_the_first_start_says_there_is_no_journal(tmp_path: Path) -> None:
    config = write_config(tmp_path, 1883, engine={"bundle": str(tmp_path / "engine")})
    done = status(config)
    assert done.returncode == 1
    assert "no journal at" in done.stderr
