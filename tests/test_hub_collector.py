"""The collector as a real process on a real mosquitto, with messages the test makes.

These tests hand-craft valid ``edge.result/1`` messages so that they can withhold
one (a seq gap), publish while the collector is down, or send thousands; the
whole appliance is exercised in test_hub_end_to_end.py.
"""

from __future__ import annotations

import json
import re
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hub_support import (
    CollectorProcess,
    Publisher,
    count_rows,
    hub_query,
    hub_table,
    postgres_database,
    private_postgres,
    result_document,
    wait_until,
    write_hub_config,
)
from support import Broker

STORED = "SELECT count(*) FROM results"


@pytest.fixture
def publisher(broker: Broker) -> Iterator[Publisher]:
    client = Publisher(broker.port)
    yield client
    client.close()


@pytest.fixture
def collectors(tmp_path: Path) -> Iterator[list[CollectorProcess]]:
    started: list[CollectorProcess] = []
    yield started
    for collector in started:
        if collector.alive():
            collector.stop(signal.SIGKILL)


def start_collector(
    started: list[CollectorProcess], folder: Path, port: int, url: str, client_id: str
) -> CollectorProcess:
    config = write_hub_config(folder, port, url, client_id=client_id)
    collector = CollectorProcess(config)
    collector.start()
    started.append(collector)
    collector.wait_log("subscribed to")
    return collector


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'hub.db'}"


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_withheld_result_is_reported_as_a_gap_until_it_arrives(
    backend: str,
    broker: Broker,
    publisher: Publisher,
    collectors: list[CollectorProcess],
    tmp_path: Path,
) -> None:
    url = sqlite_url(tmp_path) if backend == "sqlite" else postgres_database()
    collector = start_collector(collectors, tmp_path / "hub", broker.port, url, "hub-1")
    withheld = result_document("clinic-1", "box-1", 3)
    for seq in (1, 2, 4, 5):
        publisher.result(result_document("clinic-1", "box-1", seq))
    wait_until(lambda: count_rows(url, STORED) == 4, what="four results stored")

    gaps = hub_query(url, "gaps")
    assert [(g["site"], g["device"], g["first"], g["last"]) for g in gaps] == [
        ("clinic-1", "box-1", 3, 3)
    ]
    assert "clinic-1/box-1: gap, seq 3 missing" in collector.log()
    [device] = hub_query(url, "devices")
    assert device["missing"] == 1

    publisher.result(withheld)
    wait_until(lambda: count_rows(url, STORED) == 5, what="the withheld result stored")
    assert hub_query(url, "gaps") == []
    assert "no seq missing" in hub_table(url, "gaps")
    collector.wait_log("clinic-1/box-1: gap closed")


def test_bad_messages_are_rejected_and_the_collector_goes_on(
    broker: Broker, publisher: Publisher, collectors: list[CollectorProcess], tmp_path: Path
) -> None:
    url = sqlite_url(tmp_path)
    collector = start_collector(collectors, tmp_path / "hub", broker.port, url, "hub-1")
    publisher.publish("edge/clinic-1/box-1/results", b"{not json")
    publisher.publish("edge/clinic-1/box-1/results", json.dumps({"schema": "other/9"}))
    publisher.publish("edge/clinic-1/box-1/health", b"\x00\xff\xfe")
    publisher.publish("edge/clinic-1/box-1/status", b"sleepy", retain=True)
    publisher.result(result_document("clinic-1", "box-1", 1))

    wait_until(lambda: count_rows(url, STORED) == 1, what="the valid result stored")
    wait_until(lambda: count_rows(url, "SELECT count(*) FROM rejects") == 4, what="4 rejects")
    reasons = count_rows(
        url,
        "SELECT count(*) FROM rejects WHERE reason IN ('not_json', 'unknown_schema', 'bad_status')",
    )
    assert reasons == 4
    assert collector.alive()


def test_a_collector_killed_mid_stream_loses_nothing_after_its_restart(
    broker: Broker, publisher: Publisher, collectors: list[CollectorProcess], tmp_path: Path
) -> None:
    url = sqlite_url(tmp_path)
    collector = start_collector(collectors, tmp_path / "hub", broker.port, url, "hub-1")
    total = 1500
    published: list[int] = []

    def publish_all() -> None:
        for seq in range(1, total + 1):
            publisher.result(result_document("clinic-1", "box-1", seq))
            published.append(seq)

    stream = threading.Thread(target=publish_all)
    stream.start()
    try:
        wait_until(lambda: count_rows(url, STORED) >= 100, what="100 results stored")
        # Killed while results stream in: what it had not committed was not acknowledged.
        collector.stop(signal.SIGKILL)
        at_kill = len(published)
        # The stream goes on while no collector is connected; the broker keeps it.
        wait_until(lambda: len(published) >= min(total, at_kill + 200), what="more published")
        collector.start()
    finally:
        stream.join(timeout=300)

    wait_until(lambda: count_rows(url, STORED) == total, timeout=120, what="all results stored")
    assert count_rows(url, "SELECT count(DISTINCT seq) FROM results") == total
    assert hub_query(url, "gaps") == []
    # The broker kept the session (and what it queued) across the kill.
    assert "connected (session present: True)" in collector.log()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_two_collectors_share_the_results_and_store_each_once(
    backend: str,
    broker: Broker,
    publisher: Publisher,
    collectors: list[CollectorProcess],
    tmp_path: Path,
) -> None:
    url = sqlite_url(tmp_path) if backend == "sqlite" else postgres_database()
    first = start_collector(collectors, tmp_path / "hub-1", broker.port, url, "hub-1")
    second = start_collector(collectors, tmp_path / "hub-2", broker.port, url, "hub-2")
    devices = [("clinic-1", "box-1"), ("clinic-1", "box-2"), ("clinic-2", "box-1")]
    per_device = 100
    for seq in range(1, per_device + 1):
        for site, device in devices:
            publisher.result(result_document(site, device, seq))
    total = per_device * len(devices)

    wait_until(lambda: count_rows(url, STORED) == total, timeout=120, what="all results stored")
    for collector in (first, second):
        assert collector.stop() == 0
    stored = [_stored_by(collector.log()) for collector in (first, second)]
    # Each message went to one collector of the group: both worked, none twice.
    assert all(count > 0 for count in stored), stored
    assert sum(stored) == total
    assert count_rows(url, "SELECT sum(deliveries) FROM results") == total
    assert hub_query(url, "gaps") == []


def test_results_wait_unacknowledged_while_the_database_is_down(
    broker: Broker, publisher: Publisher, collectors: list[CollectorProcess], tmp_path: Path
) -> None:
    cluster = private_postgres()
    try:
        url = cluster.new_database()
        collector = start_collector(collectors, tmp_path / "hub", broker.port, url, "hub-1")
        for seq in range(1, 51):
            publisher.result(result_document("clinic-1", "box-1", seq))
        wait_until(lambda: count_rows(url, STORED) == 50, what="50 results stored")

        cluster.pause()
        for seq in range(51, 101):
            publisher.result(result_document("clinic-1", "box-1", seq))
        collector.wait_log("database unavailable, retrying")
        cluster.resume()

        wait_until(lambda: count_rows(url, STORED) == 100, timeout=120, what="all 100 stored")
        assert hub_query(url, "gaps") == []
        assert collector.alive()
        assert collector.stop() == 0
    finally:
        cluster.stop()


def _stored_by(log: str) -> int:
    summaries = re.findall(r"so far: (\d+) results stored", log)
    assert summaries, log
    return int(summaries[-1])
