"""Health on request, events without patient identifiers, alarms and GPU telemetry."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import paho.mqtt.publish
import pytest
from daemons import start_daemon
from schemas import conforms
from support import Broker, Subscriber

from edge.common.privacy import file_tag, scrub
from edge.daemon import SERVING
from edge.health.gpu import NvmlTelemetry, open_gpu_telemetry, throttle_reason_names
from edge.health.metrics import alarms
from edge.journal import Journal
from edge.mqtt import Backoff

__all__ = ["start_daemon"]  # a fixture


def test_quarantined_file_is_announced_without_its_name_and_health_comes_on_request(
    broker: Broker, subscriber: Subscriber, tmp_path: Path, start_daemon: Any
) -> None:
    daemon = start_daemon(broker.port, health={"interval_s": 3600})
    assert subscriber.next("/status", 30) == b"online"
    # Exporters name files after patients; this one is not DICOM at all.
    bad = tmp_path / "export" / "DOE^JANE 1961-02-03.dcm"
    bad.write_bytes(b"this is a scanned referral letter, not a DICOM file" * 10)
    event = subscriber.next("/events", 30)
    assert isinstance(event, dict)
    assert event["schema"] == "edge.event/1"
    conforms(event)
    assert (event["kind"], event["reason"], event["where"]) == (
        "quarantined",
        "not_dicom",
        "ingest",
    )
    assert event["file"] == file_tag(bad)
    assert "DOE" not in json.dumps(event) and "1961" not in json.dumps(event)

    # Kept in the journal too, for `edge status` after a restart.
    journal = Journal.open(tmp_path / "state", device="box-1")
    (kept,) = journal.recent_events(5)
    journal.close()
    assert (kept.kind, kept.reason, kept.file) == ("quarantined", "not_dicom", file_tag(bad))

    paho.mqtt.publish.single("edge/clinic-1/box-1/health/get", b"", port=broker.port)
    health = subscriber.next("/health", 30)
    assert isinstance(health, dict)
    conforms(health)
    assert health["counters"]["quarantined_by_reason"] == {"not_dicom": 1}
    assert health["queues"]["outbox"] == 0 and health["queues"]["journal_backlog"] == 0
    assert health["journal"] == {
        "last_seq": 0,
        "oldest_undelivered_at": None,
        "write_error": None,
        "error": None,
        "replaced": None,
        "confirm": "broker",
        "confirmed_seq": 0,
        "unconfirmed": 0,
        "oldest_unconfirmed_at": None,
        "oldest_unconfirmed_age_s": None,
    }
    assert health["alarms"] == []
    assert set(health["disk"]) == {"watch", "state"}
    if open_gpu_telemetry() is None:
        assert "gpu" not in health  # absent, never zeros, where nothing can measure it
    assert "DOE" not in json.dumps(health) and "DOE" not in daemon.log().split(SERVING)[-1]


def test_alarms_name_what_an_operator_must_act_on() -> None:
    fine = {"path": "/var/lib/edge", "free_mb": 5000, "free_percent": 50.0}
    assert alarms(results_waiting=0, journal_error=None, state_disk=fine, min_free_mb=1024) == []
    low = {**fine, "free_mb": 10}
    assert alarms(
        results_waiting=3,
        journal_error="database or disk is full",
        state_disk=low,
        min_free_mb=1024,
    ) == ["outbox_full", "journal_write_failed", "state_disk_low"]
    unreadable = {"path": "/var/lib/edge", "error": "No such file or directory"}
    assert alarms(results_waiting=0, journal_error=None, state_disk=unreadable, min_free_mb=0) == [
        "state_disk_low"
    ]


def test_scrub_removes_the_path_from_an_error_message() -> None:
    path = Path("/srv/export/DOE^JANE/IM0001.dcm")
    text = scrub(f"[Errno 2] No such file or directory: '{path}'", path)
    assert "DOE" not in text and "IM0001" not in text
    assert file_tag(path) in text


def test_backoff_doubles_with_jitter_up_to_its_cap() -> None:
    backoff = Backoff(1.0, 8.0, random.Random(4))
    delays = [backoff.next_delay() for _ in range(6)]
    for delay, nominal in zip(delays, (1, 2, 4, 8, 8, 8), strict=True):
        assert nominal / 2 <= delay <= nominal
    assert len({round(d, 6) for d in delays[3:]}) == 3  # jittered, not in step
    backoff.reset()
    assert backoff.next_delay() <= 1.0


def test_throttle_reasons_are_named() -> None:
    assert throttle_reason_names(0) == []
    assert throttle_reason_names(0x1 | 0x40) == ["gpu_idle", "hw_thermal_slowdown"]
    assert throttle_reason_names(0x1000) == ["other_0x1000"]


def test_nvml_telemetry_reads_a_real_gpu() -> None:
    telemetry = NvmlTelemetry.open()
    if telemetry is None:
        pytest.skip("needs nvidia-ml-py and an NVIDIA driver with a GPU (NVML)")
    try:
        (first, *_others) = telemetry.snapshot()
    finally:
        telemetry.close()
    assert isinstance(first["name"], str) and first["name"]
    assert first["memory_total_mb"] > 0
    assert isinstance(first["throttle_reasons"], list)
    assert 0 <= first["utilization_percent"] <= 100
