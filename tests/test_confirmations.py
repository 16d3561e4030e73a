"""The hub confirms what it stored, and the box keeps every result until then.

Real processes (``edge run``, ``edge hub`` on a shared subscription, SQLite), a
real mosquitto and real mammograms: the broker restarted during a stream, with and
without persistence; the collector away with its session gone; the last result
lost after the broker's PUBACK.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from confirm_support import Rig, forget_session
from hub_support import CollectorProcess, hub_query, wait_until, write_hub_config
from support import Broker, Subscriber

pytestmark = pytest.mark.slow


@pytest.fixture
def rig_factory(tmp_path: Path) -> Iterator[list[Rig]]:
    made: list[Rig] = []
    yield made
    for rig in made:
        rig.close()


def make_rig(made: list[Rig], folder: Path, broker: Broker, **options: object) -> Rig:
    rig = Rig(folder, broker, **options)  # type: ignore[arg-type]
    made.append(rig)
    rig.start()
    return rig


@pytest.mark.parametrize("persistence", [True, False], ids=["persistence", "no-persistence"])
def test_every_result_reaches_the_database_across_three_broker_restarts(
    persistence: bool, rig_factory: list[Rig], tmp_path: Path
) -> None:
    (tmp_path / "broker").mkdir()
    broker = Broker(tmp_path / "broker", persistence=persistence)
    broker.start()
    try:
        rig = make_rig(rig_factory, tmp_path, broker, confirm_timeout_s=5)
        studies = []
        for index in range(6):
            studies.append(rig.study())
            if index % 2 == 1:
                # Restart right after the broker acknowledged a result, which it may not
                # have handed to the collector yet (and, without persistence, forgets).
                rig.box.wait_log(f"result seq {index + 1} delivered", timeout=120)
                broker.stop()
                broker.start()
        health = rig.wait_all_confirmed(6)
    finally:
        broker.stop()
    rows = hub_query(rig.url, "results", "--since", "1d")
    assert sorted(row["seq"] for row in rows) == list(range(1, 7))
    assert {row["study_uid"] for row in rows} == set(studies)
    assert health["journal"]["last_seq"] == 6
    assert "hub_unconfirmed" not in health["alarms"]


def test_a_collector_away_with_its_session_gone_gets_every_result(
    broker: Broker, rig_factory: list[Rig], tmp_path: Path
) -> None:
    # No time-out on the box: the hub's own requests repair what it misses.
    rig = make_rig(rig_factory, tmp_path, broker, confirm_timeout_s=3600)
    rig.collector.stop()
    forget_session(broker.port)
    studies = [rig.study() for _ in range(10)]
    rig.box.wait_log("result seq 10 delivered", timeout=300)
    rig.collector.start()
    health = rig.wait_all_confirmed(10)
    assert {row["study_uid"] for row in hub_query(rig.url, "results", "--since", "1d")} == set(
        studies
    )
    assert health["journal"]["confirm"] == "hub"
    assert health["journal"]["oldest_unconfirmed_at"] is None
    assert "hub asks (gap) for seq 1..10 again" in rig.box.run_log()


def test_the_last_result_lost_after_the_pubAck_is_a_gap_and_is_repaired(
    broker: Broker, rig_factory: list[Rig], tmp_path: Path
) -> None:
    # The gap stays open 5 s before the hub asks: long enough to be seen here.
    rig = make_rig(rig_factory, tmp_path, broker, resend_after_s=5, confirm_timeout_s=3600)
    rig.study()
    rig.wait_all_confirmed(1)
    # The broker acknowledges seq 2 and queues it for the collector's session, which
    # then goes: seq 2 is lost after its PUBACK, and nothing after it shows the gap.
    rig.collector.stop(signal.SIGKILL)
    rig.study()
    rig.box.wait_log("result seq 2 delivered", timeout=120)
    forget_session(broker.port)
    rig.collector.start()

    # Seen from the box's last_seq alone (no later result): shown, and asked for.
    wait_until(lambda: [(g["first"], g["last"]) for g in rig.gaps()] == [(2, 2)], 60, "the gap")
    rig.wait_all_confirmed(2)
    assert "hub asks (gap) for seq 2..2 again" in rig.box.run_log()
    assert "clinic-1/box-1: asked for seq 2..2 again" in rig.collector.log()


def test_two_collectors_share_the_stream_and_an_operator_asks_for_results_again(
    broker: Broker, rig_factory: list[Rig], tmp_path: Path
) -> None:
    # No time-out on the box: every send after the first is the hub's own request.
    rig = make_rig(rig_factory, tmp_path, broker, confirm_timeout_s=3600)
    second = CollectorProcess(
        write_hub_config(tmp_path / "hub-2", broker.port, rig.url, client_id="hub-2",
                         resend_after_s=2),
        name="collector-2",
    )  # fmt: skip
    second.start()
    try:
        second.wait_log("subscribed to")
        sent = Subscriber(broker.port, ["edge/clinic-1/box-1/results"])
        studies = {rig.study() for _ in range(6)}
        rig.wait_all_confirmed(6)  # the confirmations of both collectors reach the box
        rows = hub_query(rig.url, "results", "--since", "1d")
        assert sorted(row["seq"] for row in rows) == list(range(1, 7))  # each stored once
        assert {row["study_uid"] for row in rows} == studies
        # Both collectors took part of the stream into the one database.
        stored = [_stored(collector.log()) for collector in (rig.collector, second)]
        assert sum(stored) == 6 and min(stored) > 0, stored
        first = _payloads(sent)

        before = {row["seq"]: row["deliveries"] for row in rows}
        asked = subprocess.run(
            [sys.executable, "-m", "edge", "hub", "resend", "--config", str(rig.collector.config),
             "--site", "clinic-1", "--device", "box-1", "--seq", "2-3"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert asked.returncode == 0, asked.stderr
        assert "asked clinic-1/box-1 for seq 2..3 again" in asked.stdout

        def counted() -> dict[int, int] | None:
            now = {row["seq"]: row["deliveries"] for row in hub_query(rig.url, "results",
                                                                      "--since", "1d")}  # fmt: skip
            return now if now != before else None

        # The hub counts each one delivered again, and nothing else moves.
        wait_until(lambda: (c := counted()) and c[2] > before[2] and c[3] > before[3], 60,
                   "the re-deliveries counted")  # fmt: skip
        after = counted()
        assert after == {**before, 2: before[2] + 1, 3: before[3] + 1}
        again = _payloads(sent)
        sent.close()
        # Byte for byte what was sent the first time: same id, same payload.
        assert sorted(again) == [2, 3] and all(again[s] == first[s] for s in (2, 3))
        assert "hub asks (operator) for seq 2..3 again" in rig.box.run_log()
        assert rig.gaps() == []
    finally:
        if second.alive():
            second.stop(signal.SIGKILL)


def _stored(log: str) -> int:
    """The results a collector stored, from its log's commit lines."""
    return sum(int(n) for n in re.findall(r"committed: (\d+) results stored", log))


def _payloads(subscriber: Subscriber) -> dict[int, bytes]:
    """The results a plain subscriber received since last asked, by seq (payload's bytes)."""
    found: dict[int, bytes] = {}
    while not subscriber.messages.empty():
        _topic, payload, _retain = subscriber.messages.get_nowait()
        found.setdefault(int(json.loads(payload)["seq"]), payload)
    return found
