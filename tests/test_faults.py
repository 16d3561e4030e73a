"""No result is ever lost: the daemon against a broker that restarts, a kill -9, a full disk.

Everything is real: mosquitto processes the tests stop and start, the daemon as a
child process, the two real four-view CBIS-DDSM cases written as 40 studies with
fresh UIDs, a hub-like subscriber with a persistent session, a tmpfs filled to
the last byte. Studies are dropped into the watch folder as hard links renamed
into place, so 40 studies cost no copying.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import paho.mqtt.publish
import pytest
from daemons import start_daemon, wait_for
from hub_session import HubSession
from pydicom.uid import generate_uid
from schemas import conforms
from support import Broker, DaemonProcess, Subscriber
from tmpfs import fill, small_state_dir

from edge.journal import Journal
from edge.tools.samples import sample_cases, write_study

__all__ = ["small_state_dir", "start_daemon"]  # fixtures

SCHEMA = json.loads((Path(__file__).parents[1] / "edge/schemas/result.schema.json").read_text())
RESULTS = "edge/+/+/results"
STATUS = "edge/+/+/status"


@dataclass(frozen=True)
class PooledStudy:
    uid: str
    files: tuple[Path, ...]


@pytest.fixture(scope="session")
def study_pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[PooledStudy]]:
    """40 four-view studies, the two real cases in turn, each with fresh UIDs.

    1.7 GB of real mammograms: removed at the end of the session rather than
    left to pytest's retention of old temporary folders.
    """
    folder = tmp_path_factory.mktemp("pool")
    cases = sample_cases()
    pool = []
    for n in range(40):
        uid = generate_uid()
        written = write_study(
            cases[n % 2],
            folder / f"s{n:02d}",
            accession=f"ACC{n:04d}",
            patient="TEST^PATIENT",
            study_uid=uid,
        )
        pool.append(PooledStudy(uid, tuple(written.values())))
    yield pool
    shutil.rmtree(folder, ignore_errors=True)


def drop(studies: list[PooledStudy], export: Path, pause_s: float = 0.0) -> None:
    """Put each study's files into the watch folder the way an exporter renames them in."""
    for study in studies:
        for path in study.files:
            name = f"{study.uid[-12:]}-{path.name}"
            temporary = export / f".{name}.part"
            os.link(path, temporary)
            temporary.rename(export / name)
        time.sleep(pause_s)


def journalled(daemon: DaemonProcess) -> int:
    """The highest seq the daemon has logged as journalled."""
    seqs = re.findall(r"result seq (\d+) journalled", daemon.log())
    return max(map(int, seqs), default=0)


def assert_each_study_delivered_once(hub: HubSession, studies: list[PooledStudy]) -> None:
    """All studies arrived, a re-delivery is byte-identical, and seq has no gap."""
    payloads: defaultdict[str, set[bytes]] = defaultdict(set)
    for raw in hub.raw_results():
        payloads[json.loads(raw)["study_uid"]].add(raw)
    assert set(payloads) == {study.uid for study in studies}, "a study is missing"
    different = {uid: len(p) for uid, p in payloads.items() if len(p) > 1}
    assert not different, f"studies delivered with different results: {different}"
    documents = [json.loads(next(iter(p))) for p in payloads.values()]
    for document in documents:
        jsonschema.validate(document, SCHEMA)
    assert sorted(d["seq"] for d in documents) == list(range(1, len(studies) + 1))


def test_broker_restarted_three_times_while_40_studies_flow(
    broker: Broker, tmp_path: Path, study_pool: list[PooledStudy], start_daemon: Any
) -> None:
    hub = HubSession(broker.port, [RESULTS], "hub-restarts")
    assert hub.subscribed.wait(10)
    daemon = start_daemon(broker.port)
    feeder = threading.Thread(target=drop, args=(study_pool, tmp_path / "export", 0.2))
    feeder.start()
    try:
        for received in (6, 16, 26):
            hub.wait_results(received, timeout=240)
            broker.stop()
            # Keep it down while results pile up in the outbox.
            target = min(journalled(daemon) + 2, len(study_pool))
            wait_for(
                lambda target=target: journalled(daemon) >= target,
                120,
                "results while down",
                daemon,
            )
            broker.start()
        hub.wait_results(len(study_pool), timeout=300)
    finally:
        feeder.join()
        hub.close()
    assert_each_study_delivered_once(hub, study_pool)
    assert daemon.log().count("replaying") >= 1


def test_daemon_killed_mid_burst_delivers_every_study_after_restart(
    broker: Broker,
    subscriber: Subscriber,
    tmp_path: Path,
    study_pool: list[PooledStudy],
    start_daemon: Any,
) -> None:
    studies = study_pool[:10]
    hub = HubSession(broker.port, [RESULTS], "hub-kill")
    assert hub.subscribed.wait(10)
    daemon = start_daemon(broker.port)
    drop(studies, tmp_path / "export")
    hub.wait_results(3, timeout=240)
    daemon.stop(signal.SIGKILL)

    journal = Journal.open(tmp_path / "state", device="box-1")
    counts = journal.file_counts()
    journal.close()
    scored_before = counts.get("scored", 0) + counts.get("published", 0)
    assert 0 < scored_before < 4 * len(studies), counts

    daemon = start_daemon(broker.port)
    hub.wait_results(len(studies), timeout=240)
    hub.close()
    assert_each_study_delivered_once(hub, studies)

    # Ask for health now: files scored before the kill were not processed again.
    _drain(subscriber)
    paho.mqtt.publish.single("edge/clinic-1/box-1/health/get", b"", port=broker.port)
    health = subscriber.next("/health", 10)
    assert isinstance(health, dict)
    conforms(health)
    assert health["counters"]["already_processed"] == scored_before
    assert health["counters"]["processed"] == 4 * len(studies) - scored_before
    assert health["counters"]["duplicates"] == 0
    assert "resuming" in daemon.log()


def test_broker_unreachable_for_a_whole_burst_then_all_delivered_in_order(
    broker: Broker, tmp_path: Path, study_pool: list[PooledStudy], start_daemon: Any
) -> None:
    studies = study_pool[:20]
    hub = HubSession(broker.port, [RESULTS, STATUS], "hub-burst")
    assert hub.subscribed.wait(10)
    broker.stop()
    daemon = start_daemon(broker.port, mqtt={"outbox_max": 5})
    drop(studies, tmp_path / "export")
    wait_for(lambda: journalled(daemon) == len(studies), 300, "all results journalled", daemon)
    assert "cannot reach the broker" in daemon.log()

    journal = Journal.open(tmp_path / "state", device="box-1")
    backlog = journal.backlog()
    journal.close()
    # The outbox holds mqtt.outbox_max results; the rest wait in the journal.
    assert (backlog.outbox, backlog.waiting, backlog.last_seq) == (5, 15, 20)
    # The health built meanwhile (unpublished: no broker) raised outbox_full.
    wait_for(lambda: "outbox full" in daemon.log(), 30, "the outbox_full warning", daemon)

    broker.start()
    hub.wait_results(len(studies), timeout=240)
    hub.close()
    assert_each_study_delivered_once(hub, studies)
    first_seen: list[int] = []
    for document in hub.results():
        if document["seq"] not in first_seen:
            first_seen.append(document["seq"])
    assert first_seen == sorted(first_seen), "results arrived out of seq order"
    # online goes out only after the replay has started.
    topics = hub.topics()
    assert topics.index("edge/clinic-1/box-1/status") > topics.index("edge/clinic-1/box-1/results")


def test_state_dir_filling_up_loses_nothing_journalled(
    broker: Broker,
    tmp_path: Path,
    small_state_dir: Path,
    study_pool: list[PooledStudy],
    start_daemon: Any,
) -> None:
    studies = study_pool[:3]
    export = tmp_path / "export"
    hub = HubSession(broker.port, [RESULTS], "hub-full")
    assert hub.subscribed.wait(10)
    broker.stop()
    daemon = start_daemon(broker.port)
    drop(studies[:2], export)
    wait_for(lambda: journalled(daemon) == 2, 240, "two results journalled", daemon)

    filler = fill(small_state_dir)
    drop(studies[2:], export)
    wait_for(lambda: "cannot be written" in daemon.log(), 60, "a journal write failure", daemon)
    broker.start()
    subscriber = Subscriber(broker.port, ["edge/#"])
    # Journalled before the disk filled: delivered while it is full.
    hub.wait_results(2, timeout=120)
    health = subscriber.wait_health(lambda h: "journal_write_failed" in h["alarms"])
    conforms(health)
    assert "state_disk_low" in health["alarms"]
    assert health["disk"]["state"]["free_mb"] == 0
    assert health["counters"]["journal_errors"] > 0
    assert daemon.alive()

    filler.unlink()
    hub.wait_results(3, timeout=120)
    hub.close()
    assert_each_study_delivered_once(hub, studies)
    # Every image scored once, none lost to the failed writes, and the alarms gone.
    subscriber.wait_health(lambda h: h["alarms"] == [] and h["counters"]["processed"] == 12)
    subscriber.close()
    assert daemon.alive()


def _drain(subscriber: Subscriber) -> None:
    while not subscriber.messages.empty():
        subscriber.messages.get_nowait()
