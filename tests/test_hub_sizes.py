"""The collector refuses a message over ``mqtt.max_message_bytes``, keeping only a trace of it."""

from __future__ import annotations

import signal
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from hub_support import (
    CollectorProcess,
    Publisher,
    count_rows,
    result_document,
    wait_until,
    write_hub_config,
)
from support import Broker


@pytest.fixture
def publisher(broker: Broker) -> Iterator[Publisher]:
    client = Publisher(broker.port)
    yield client
    client.close()


def test_a_10_mb_message_is_refused_and_only_its_topic_size_and_prefix_kept(
    broker: Broker, publisher: Publisher, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    config = write_hub_config(tmp_path / "hub", broker.port, url, max_message_bytes=65536)
    collector = CollectorProcess(config)
    collector.start()
    try:
        collector.wait_log("subscribed to")
        huge = b"{" + b"x" * (10 << 20)
        publisher.publish("edge/clinic-1/box-1/results", huge)
        publisher.result(result_document("clinic-1", "box-1", 1))
        wait_until(lambda: count_rows(url, "SELECT count(*) FROM results") == 1, what="stored")
        wait_until(lambda: count_rows(url, "SELECT count(*) FROM rejects") == 1, what="a reject")
        database = sqlite3.connect(tmp_path / "hub.db")
        ((topic, reason, detail, kept, text),) = database.execute(
            "SELECT topic, reason, detail, length(payload), length(text) FROM rejects"
        ).fetchall()
        database.close()
        assert (topic, reason) == ("edge/clinic-1/box-1/results", "too_large")
        assert str(len(huge)) in detail and "max_message_bytes (65536)" in detail
        assert kept == 1024 and text <= 1024
        assert collector.alive()
    finally:
        collector.stop(signal.SIGTERM)
