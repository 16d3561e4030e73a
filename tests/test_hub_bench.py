"""``edge hub bench`` end to end, small: a real PostgreSQL, mosquitto and collector."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from console_support import edge_hub, write_console_config
from hub_support import count_rows, postgres_database
from support import Broker

pytestmark = pytest.mark.slow


def test_the_bench_fills_ingests_and_times_every_page(tmp_path: Path, broker: Broker) -> None:
    url = postgres_database()
    config = write_console_config(tmp_path / "hub", broker.port, url)
    done = edge_hub(config, "bench", "--results", "2000", "--boxes", "8", "--ingest", "300",
                    "--samples", "2", "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr + done.stdout
    report = json.loads(done.stdout.splitlines()[-1])
    assert report["filled"] == 2000 and report["ingested"] == 300
    assert report["outcomes"] == 200
    assert count_rows(url, "SELECT count(*) FROM results") == 2000 + 300 + 1
    assert count_rows(url, "SELECT sum(results) FROM result_days") == 2000 + 300 + 1
    calls = report["timings_ms"]
    assert {"page /fleet", "page /monitoring (all sites, 30 d)",
            "api POST /api/v1/outcomes (1 record)"} <= set(calls)  # fmt: skip
    assert all(len(values) == 2 for values in calls.values())
    again = edge_hub(config, "bench", "--results", "10")
    assert again.returncode != 0 and "needs an empty database" in again.stderr
