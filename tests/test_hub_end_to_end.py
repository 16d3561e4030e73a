"""Clinics to hub, for real: two ``edge run`` daemons, a mosquitto, one collector.

Real four-view studies (edge.tools.samples.write_study) go into two sites' export
folders; the collector is killed with SIGKILL in the middle and started again.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from hub_support import CollectorProcess, count_rows, hub_query, hub_table, wait_until
from hub_support import write_hub_config as write_hub
from pydicom.uid import generate_uid
from support import DEMO_BUNDLE, Broker, DaemonProcess, Subscriber, write_config

from edge.daemon import SERVING
from edge.tools.samples import sample_cases, write_study

SCHEMA_FILE = Path(__file__).parents[1] / "edge/schemas/result.schema.json"
STUDIES_PER_SITE = 20
SITES = ("clinic-a", "clinic-b")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (DEMO_BUNDLE / "manifest.yaml").exists(),
        reason="the demo engine bundle (engines/demo) is not in this checkout",
    ),
    pytest.mark.skipif(
        "seq" not in json.loads(SCHEMA_FILE.read_text())["required"],
        reason="this appliance does not publish seq yet (durable delivery, issue 4)",
    ),
]


@pytest.fixture
def daemons() -> Iterator[list[DaemonProcess]]:
    started: list[DaemonProcess] = []
    yield started
    for daemon in started:
        if daemon.alive():
            daemon.stop(signal.SIGKILL)


@pytest.fixture
def collectors() -> Iterator[list[CollectorProcess]]:
    started: list[CollectorProcess] = []
    yield started
    for collector in started:
        if collector.alive():
            collector.stop(signal.SIGKILL)


def start_daemon(started: list[DaemonProcess], folder: Path, port: int, site: str) -> DaemonProcess:
    config = write_config(
        folder,
        port,
        site=site,
        device="box-1",
        watch={"settle_s": 0.5},
        # Four views close a study at once; a long quiet period keeps a loaded machine's
        # slow copy from splitting one study into two results.
        study={"quiet_s": 60},
        health={"interval_s": 1},
        log={"level": "INFO"},
    )
    daemon = DaemonProcess(config)
    daemon.start()
    started.append(daemon)
    daemon.wait_log(SERVING, timeout=120)
    return daemon


def stage_studies(folder: Path, count: int, site: str) -> list[tuple[str, list[Path]]]:
    """``count`` real studies with fresh UIDs, written beside (not into) the export folder."""
    cases = sample_cases()
    staged = []
    for index in range(count):
        study_uid = generate_uid()
        files = write_study(
            cases[index % len(cases)],
            folder / f"{index:02d}",
            accession=f"{site[-1].upper()}{index:04d}",
            study_uid=study_uid,
        )
        staged.append((study_uid, list(files.values())))
    return staged


def deliver(studies: list[tuple[str, list[Path]]], export: Path) -> None:
    """Move staged studies into the export folder: a rename is a complete file at once."""
    for study_uid, files in studies:
        target = export / study_uid
        target.mkdir()
        for path in files:
            os.rename(path, target / path.name)


def test_two_sites_reach_the_hub_once_each_across_a_killed_collector(
    broker: Broker, daemons: list[DaemonProcess], collectors: list[CollectorProcess], tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'hub' / 'hub.db'}"
    collector = CollectorProcess(write_hub(tmp_path / "hub", broker.port, url, client_id="hub-1"))
    collectors.append(collector)
    collector.start()  # first, so that its session holds the subscription before results flow
    collector.wait_log("subscribed to")
    observer = Subscriber(broker.port, ["edge/+/+/results"])
    try:
        staged = {}
        for site in SITES:
            start_daemon(daemons, tmp_path / site, broker.port, site)
            staged[site] = stage_studies(tmp_path / f"{site}-staging", STUDIES_PER_SITE, site)
        half = STUDIES_PER_SITE // 2
        for site in SITES:
            deliver(staged[site][:half], tmp_path / site / "export")
        wait_until(lambda: count_rows(url, "SELECT count(*) FROM results") >= 4, timeout=300)

        collector.stop(signal.SIGKILL)
        for site in SITES:
            deliver(staged[site][half:], tmp_path / site / "export")
        # Results keep going to the broker while no collector is connected.
        seen = 0
        while seen < STUDIES_PER_SITE + half:
            observer.next("/results", timeout=300)
            seen += 1
        collector.start()

        wait_until(
            lambda: count_rows(url, "SELECT count(*) FROM results") >= 2 * STUDIES_PER_SITE,
            timeout=300,
            what="every study stored",
        )
    finally:
        observer.close()

    expected = {study_uid for site in SITES for study_uid, _ in staged[site]}
    rows = hub_query(url, "results", "--since", "1d", "--limit", "1000")
    assert len(rows) == 2 * STUDIES_PER_SITE
    assert {row["study_uid"] for row in rows} == expected
    for site in SITES:
        assert {row["seq"] for row in rows if row["site"] == site} == set(
            range(1, STUDIES_PER_SITE + 1)
        )
    assert hub_query(url, "gaps") == []
    assert count_rows(url, "SELECT count(*) FROM rejects") == 0

    manifest = yaml.safe_load((DEMO_BUNDLE / "manifest.yaml").read_text())
    devices = wait_until(lambda: _devices_with_health(url), timeout=60, what="both devices' health")
    assert [(d["site"], d["status"]) for d in devices] == [(s, "online") for s in SITES]
    for device in devices:
        assert device["engine_version"] == str(manifest["version"])
        assert device["outbox"] == 0
        assert device["last_result"] is not None
        assert device["missing"] == 0
    assert "clinic-a" in hub_table(url, "devices")


def test_a_box_killed_with_sigkill_shows_offline(
    broker: Broker, daemons: list[DaemonProcess], collectors: list[CollectorProcess], tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'hub' / 'hub.db'}"
    collector = CollectorProcess(write_hub(tmp_path / "hub", broker.port, url, client_id="hub-1"))
    collectors.append(collector)
    collector.start()
    collector.wait_log("subscribed to")
    daemon = start_daemon(daemons, tmp_path / "clinic-a", broker.port, "clinic-a")

    def status() -> str | None:
        found = hub_query(url, "devices") if Path(url.removeprefix("sqlite:///")).exists() else []
        return found[0]["status"] if found else None

    wait_until(lambda: status() == "online", timeout=120, what="the box online")
    daemon.stop(signal.SIGKILL)
    # The broker publishes the box's last will once the connection drops.
    wait_until(lambda: status() == "offline", timeout=120, what="the box offline")
    [device] = hub_query(url, "devices")
    assert device["since"] is not None
    table = hub_table(url, "devices").splitlines()
    assert table[0].split()[:3] == ["SITE", "DEVICE", "STATUS"]
    assert table[1].split()[:3] == ["clinic-a", "box-1", "offline"]


def _devices_with_health(url: str) -> list[dict[str, object]] | None:
    devices: list[dict[str, object]] = hub_query(url, "devices")
    return devices if all(d["outbox"] == 0 for d in devices) and len(devices) == 2 else None
