"""The hub's storage on real databases: SQLite, and a private PostgreSQL where installed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hub_support import postgres_database, result_document
from sqlalchemy import Engine, func, select

from edge.hub.database import open_database
from edge.hub.messages import Record, decode
from edge.hub.queries import find_gaps, list_devices, list_results
from edge.hub.store import Store
from edge.hub.tables import events, rejects, result_days, results, seq_resets

NOW = datetime(2025, 3, 1, 12, 0, 0)


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    url = f"sqlite:///{tmp_path / 'hub.db'}" if request.param == "sqlite" else postgres_database()
    instance = open_database(url, writer=True)
    yield instance
    instance.dispose()


def result(site: str, device: str, seq: int, **changes: Any) -> Record:
    document = {**result_document(site, device, seq), **changes}
    return decode(f"edge/{site}/{device}/results", json.dumps(document).encode(), "edge")


def health(site: str, device: str, at: str, **fields: Any) -> Record:
    document = {"schema": "edge.health/1", "site": site, "device": device, "at": at, **fields}
    return decode(f"edge/{site}/{device}/health", json.dumps(document).encode(), "edge")


def rows(engine: Engine, table: Any) -> list[Any]:
    with engine.connect() as connection:
        query = select(table).order_by(*table.primary_key.columns)
        return list(connection.execute(query).mappings().all())


def gaps(engine: Engine) -> list[tuple[str, int, int, int]]:
    with engine.connect() as connection:
        return [(g.device, g.epoch, g.first, g.last) for g in find_gaps(connection)]


def test_a_redelivered_result_is_counted_not_stored_twice(engine: Engine) -> None:
    store = Store(engine)
    first = store.write([result("a", "box", 1), result("a", "box", 1)], NOW)
    again = store.write([result("a", "box", 1)], NOW + timedelta(seconds=5))
    assert (first.stored, first.duplicates, again.stored, again.duplicates) == (1, 1, 0, 1)
    [row] = rows(engine, results)
    assert row["deliveries"] == 3
    assert row["received_at"] == NOW
    assert row["last_delivery_at"] == NOW + timedelta(seconds=5)
    assert row["seq"] == 1 and row["site"] == "a" and row["device"] == "box"
    assert row["model_sha256"] == "ab" * 32
    assert row["timings_ms"] == {"decode": 12.5, "infer": 3.0, "total": 40.0}
    assert row["document"]["images"][0]["view"] == "CC"


def test_a_gap_is_reported_and_cleared_by_the_late_result(engine: Engine) -> None:
    store = Store(engine)
    report = store.write([result("a", "box", seq) for seq in (1, 2, 5, 6)], NOW)
    assert gaps(engine) == [("box", 1, 3, 4)]
    assert any("seq 3..4 missing" in message for _, message in report.notices)

    late = store.write([result("a", "box", 4)], NOW)
    assert late.late == {("a", "box")}
    assert gaps(engine) == [("box", 1, 3, 3)]
    store.write([result("a", "box", 3)], NOW)
    assert gaps(engine) == []


def test_results_missing_before_the_first_received_are_a_gap(engine: Engine) -> None:
    Store(engine).write([result("a", "box", 3)], NOW)
    assert gaps(engine) == [("box", 1, 1, 2)]


def test_seq_going_back_with_new_results_begins_a_new_epoch(engine: Engine) -> None:
    store = Store(engine)
    store.write([result("a", "box", seq) for seq in (1, 2, 3, 5)], NOW)
    # The box's journal is wiped: it numbers from 1 again, with new results.
    report = store.write(
        [result("a", "box", seq, id=f"{seq:032x}") for seq in (1, 2, 4)], NOW + timedelta(1)
    )
    assert report.stored == 3
    assert any("seq went back from 5 to 1" in message for _, message in report.notices)
    assert gaps(engine) == [("box", 1, 4, 4), ("box", 2, 3, 3)]
    [reset] = rows(engine, seq_resets)
    assert (reset["epoch"], reset["previous_max_seq"], reset["first_seq"]) == (2, 5, 1)
    with engine.connect() as connection:
        [device] = list_devices(connection)
    assert device.missing == 2


def test_devices_show_the_latest_health_read_defensively(engine: Engine) -> None:
    store = Store(engine)
    newer = {
        "engine": {"name": "demo", "version": "7"},
        "queues": {"outbox": 4},
        "journal": {"last_seq": 3},
        "gpu": {"source": "nvml", "devices": [{"temperature_c": 55}, {"temperature_c": 61.5}]},
    }
    store.write(
        [
            decode("edge/a/box/status", b"online", "edge"),
            health("a", "box", "2025-03-01T12:00:10Z", **newer),
            # An older health that arrives late (through another collector) is ignored.
            health("a", "box", "2025-03-01T11:59:00+00:00", engine={"version": "6"}),
            health("b", "box", "2025-03-01T12:00:00Z"),  # an older appliance: no queues, no gpu
            result("a", "box", 1),
        ],
        NOW,
    )
    store.write([decode("edge/a/box/status", b"online", "edge")], NOW + timedelta(60))
    with engine.connect() as connection:
        a, b = list_devices(connection)
    assert (a.site, a.status, a.since, a.engine_version) == ("a", "online", NOW, "7")
    # The box says it is at seq 3 and the hub holds seq 1: seq 2 and 3 are missing.
    assert (a.outbox, a.gpu_temperature_c, a.missing) == (4, 61.5, 2)
    assert (a.hub_seq, a.device_seq) == (1, 3)
    assert a.last_result is not None
    assert (b.status, b.engine_version, b.outbox, b.gpu_temperature_c) == (None, None, None, None)
    assert b.device_seq is None
    assert b.last_result is None

    store.write([decode("edge/a/box/status", b"offline", "edge")], NOW + timedelta(90))
    with engine.connect() as connection:
        a, _ = list_devices(connection)
    assert (a.status, a.since) == ("offline", NOW + timedelta(90))


def test_bad_messages_are_kept_as_rejects_with_their_reason(engine: Engine) -> None:
    no_seq = result_document("a", "box", 1)
    del no_seq["seq"]
    wrong_device = result_document("a", "other", 1)
    bad = [
        ("edge/a/box/results", b"\xff\x00 not json"),
        ("edge/a/box/results", json.dumps({"schema": "edge.result/2"}).encode()),
        ("edge/a/box/results", json.dumps(no_seq).encode()),
        ("edge/a/box/results", json.dumps(wrong_device).encode()),
        ("edge/a/box/health", b"[1, 2]"),
        ("edge/a/box/status", b"maybe"),
        ("edge/a/box/events", json.dumps({"kind": "quarantined"}).encode()),
    ]
    report = Store(engine).write([decode(topic, payload, "edge") for topic, payload in bad], NOW)
    assert report.rejected == len(bad)
    stored = rows(engine, rejects)
    assert [(r["topic"], bytes(r["payload"])) for r in stored] == bad
    assert [r["reason"] for r in stored] == [
        "not_json",
        "unknown_schema",
        "invalid",
        "topic_mismatch",
        "unknown_schema",
        "bad_status",
        "unknown_schema",
    ]
    assert "'seq' is a required property" in stored[2]["detail"]
    assert stored[0]["text"] is None  # not UTF-8: only the bytes are kept
    assert rows(engine, results) == []


def test_an_event_is_stored_once_however_often_delivered(engine: Engine) -> None:
    payload = json.dumps(
        {"schema": "edge.event/1", "kind": "quarantined", "at": "2025-03-01T12:00:00Z"}
    ).encode()
    store = Store(engine)
    store.write([decode("edge/a/box/events", payload, "edge")] * 2, NOW)
    [event] = rows(engine, events)
    assert (event["kind"], event["deliveries"], event["at"]) == ("quarantined", 2, NOW)


def test_results_query_filters_by_time_site_and_suspicion(engine: Engine) -> None:
    store = Store(engine)
    store.write(
        [
            result("a", "box", 1, created_at="2025-03-01T10:00:00Z"),
            result("a", "box", 2, created_at="2025-03-01T11:00:00Z", study={
                "score": 0.9, "suspicious": True, "threshold": 0.5}),
            result("b", "box", 1, created_at="2025-03-01T11:30:00+01:00"),
        ],
        NOW,
    )  # fmt: skip
    with engine.connect() as connection:
        since_1030 = list_results(connection, since=datetime(2025, 3, 1, 10, 30))
        suspicious = list_results(connection, since=datetime(2025, 3, 1), suspicious=True)
        site_b = list_results(connection, since=datetime(2025, 3, 1), site="b")
    assert [(r.site, r.seq) for r in since_1030] == [("a", 2), ("b", 1)]
    assert [(r.site, r.seq, r.score) for r in suspicious] == [("a", 2, 0.9)]
    assert [(r.site, r.created_at) for r in site_b] == [("b", datetime(2025, 3, 1, 10, 30))]


def test_two_writers_storing_the_same_results_keep_one_row_each(engine: Engine) -> None:
    batch = [result(site, "box", seq) for seq in range(1, 41) for site in ("a", "b", "c")]

    def write(records: list[Record]) -> None:
        store = Store(engine)
        for start in range(0, len(records), 10):
            store.write(records[start : start + 10], NOW)

    with ThreadPoolExecutor(max_workers=2) as pool:
        done = [pool.submit(write, batch), pool.submit(write, list(reversed(batch)))]
        for future in done:
            future.result(timeout=120)  # re-raises a writer's failure here
    stored = rows(engine, results)
    assert len(stored) == 120
    assert {row["deliveries"] for row in stored} == {2}
    assert gaps(engine) == []


def test_a_device_whose_clock_went_back_still_has_its_health_shown(engine: Engine) -> None:
    store = Store(engine)
    store.write([health("a", "box", "2025-03-02T12:00:00Z", engine={"version": "1"})], NOW)
    # Its clock was a day ahead and is now corrected: once the ordering window has
    # passed, the health with the earlier time stamp is the current one.
    late = NOW + timedelta(minutes=5)
    store.write([health("a", "box", "2025-03-01T12:05:00Z", engine={"version": "2"})], late)
    with engine.connect() as connection:
        [device] = list_devices(connection)
    assert device.engine_version == "2"


def test_one_batch_from_many_boxes_is_stored_as_written_one_by_one(engine: Engine) -> None:
    """The batch's few statements keep each message's meaning, whatever mixes in it."""
    store = Store(engine)
    store.write([result("s0", "box", 1)], NOW)
    mixed: list[Record] = [result(f"s{n}", "box", seq) for seq in (1, 2, 4) for n in range(30)]
    mixed += [
        result("s0", "box", 2),  # stored earlier in this batch: a re-delivery
        decode("edge/s1/box/results", b"not json", "edge"),
        result("s2", "box", 3),  # late, closes the gap the batch opened
        result("s3", "box", 1, id=f"{7:032x}"),  # seq 1 taken in this batch: journal wiped
    ]
    report = store.write(mixed, NOW)
    # s0's seq 1 stored before (a re-delivery), then 89 new ones, s2's seq 3 and s3's new epoch
    assert (report.stored, report.duplicates, report.rejected) == (91, 2, 1)
    stored = {(r["site"], r["epoch"], r["seq"]): r["deliveries"] for r in rows(engine, results)}
    assert len(stored) == 92
    assert stored[("s0", 1, 1)] == 2 and stored[("s0", 1, 2)] == 2 and stored[("s2", 1, 3)] == 1
    assert stored[("s3", 2, 1)] == 1
    assert gaps(engine) == [("box", 1, 3, 3)] * 29  # every site's seq 3 but s2's
    with engine.connect() as connection:
        counted = connection.execute(select(func.sum(result_days.c.results))).scalar_one()
        missing = {row.site: row.missing for row in list_devices(connection)}
    assert counted == 92
    assert (missing["s0"], missing["s2"], missing["s3"]) == (1, 0, 1)
    # Confirmed up to the first gap of each box's current numbering, after this batch.
    confirmed = {site: c.seq for (site, _), c in report.confirms.items() if c is not None}
    assert (confirmed["s0"], confirmed["s1"], confirmed["s2"], confirmed["s3"]) == (2, 2, 4, 1)
    assert report.confirms[("s3", "box")].epoch == 2  # type: ignore[union-attr]
