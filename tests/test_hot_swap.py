"""Hot swap: a new engine loads beside the old, new studies go to it, nothing is dropped."""

from __future__ import annotations

import queue
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from daemons import wait_for
from engine_bundles import (
    edge_cli,
    image_header,
    make_bundle,
    make_key,
    make_signed_bundle,
    sha256,
)
from support import Broker, DaemonProcess, Subscriber, write_config

from edge.bundle.files import write_atomically
from edge.bundle.manifest import load_bundle
from edge.daemon import SERVING
from edge.engines.engine import Engine
from edge.engines.store import EngineRef, EngineStore
from edge.pipeline.infer import InferenceWorker
from edge.pipeline.study import StudyAssembler
from edge.runtimes import registry
from edge.tools.samples import sample_cases, write_study
from edge.types import ImageScore, ModelInput

SIZE = 64


def test_each_image_is_scored_by_its_studys_engine_and_the_old_one_closes(
    tmp_path: Path,
) -> None:
    engines = {
        version: Engine.load(
            load_bundle(make_bundle(tmp_path / version, version=version, scale=scale)),
            backend="onnxruntime",
            threads=1,
        )
        for version, scale in (("A", 4.0), ("B", -4.0))
    }
    a, b = engines["A"], engines["B"]
    scores: queue.Queue[ImageScore] = queue.Queue()
    assembler = StudyAssembler(30, lambda _e: 0.5)
    assembler.serve(a.info)
    worker = InferenceWorker(a, scores.put, lambda i, r, e: None, assembler.engines_in_use)
    worker.start()
    first = image_header("1", "study-A")
    bound = assembler.arrived(first)  # study-A starts on A
    worker.add(b)
    assembler.serve(b.info)
    worker.make_current(b.info)
    second = image_header("2", "study-B")
    assert assembler.arrived(second) == b.info
    tensor = np.full((1, SIZE, SIZE), 0.5, dtype=np.float32)
    worker.submit(ModelInput(first, tensor, engine=bound))
    worker.submit(ModelInput(second, tensor, engine=b.info))
    got = {s.header.study_uid: s for s in (scores.get(timeout=30), scores.get(timeout=30))}
    assert got["study-A"].engine == a.info
    assert got["study-B"].engine == b.info
    assert got["study-A"].score != pytest.approx(got["study-B"].score)
    assert worker.retiring() == [a.info]  # study-A is still open: A stays loaded
    assembler.scored(got["study-A"])
    assembler.due(now=time.monotonic() + 3600)  # study-A closes
    wait_for(lambda: worker.retiring() == [], 30, "engine A closed")
    worker.stop(timeout=10)
    worker.close_engines()


# -- the daemon ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def signing(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_key(tmp_path_factory.mktemp("keys"), "vendor")


def start_daemon(
    tmp_path: Path, broker: Broker, public_key: Path, backend: str = "onnxruntime"
) -> DaemonProcess:
    config = write_config(
        tmp_path,
        broker.port,
        engine={"bundle": None, "backend": backend, "trusted_keys": [str(public_key)]},
        study={"quiet_s": 20},
        health={"interval_s": 1},
    )
    daemon = DaemonProcess(config)
    daemon.start()
    daemon.wait_log(SERVING, timeout=60)
    return daemon


def results(subscriber: Subscriber, count: int, timeout: float) -> list[dict[str, Any]]:
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        message = subscriber.next("/results", max(0.1, deadline - time.monotonic()))
        assert isinstance(message, dict)
        got.append(message)
    return got


def stream_studies(
    export: Path, count: int, pause: float, hold: threading.Event, hold_before: int
) -> None:
    cases = sample_cases()
    for index in range(count):
        if index == hold_before:
            assert hold.wait(timeout=300), "the switch never happened"
        write_study(
            cases[index % len(cases)], export / f"study-{index:02d}", accession=f"ACC{index:04d}"
        )
        time.sleep(pause)


@pytest.mark.slow
def test_hot_swap_while_30_studies_stream(
    tmp_path: Path, broker: Broker, subscriber: Subscriber, signing: tuple[Path, Path]
) -> None:
    private, public = signing
    bundle_a = make_signed_bundle(tmp_path / "A", private, version="A", threshold=0.5)
    bundle_b = make_signed_bundle(tmp_path / "B", private, version="B", threshold=0.2, scale=2.0)
    write_config(
        tmp_path,
        broker.port,
        engine={"bundle": None, "backend": "onnxruntime", "trusted_keys": [str(public)]},
    )
    config = tmp_path / "config.yaml"
    assert (
        edge_cli("engines", "install", bundle_a, "--activate", "--config", config).returncode == 0
    )
    assert edge_cli("engines", "install", bundle_b, "--config", config).returncode == 0
    daemon = start_daemon(tmp_path, broker, public)
    switched = threading.Event()
    writer = threading.Thread(
        target=stream_studies, args=(tmp_path / "export", 30, 0.3, switched, 20), daemon=True
    )
    writer.start()
    first = results(subscriber, 1, timeout=120)
    activation = edge_cli("engines", "activate", "B", "--config", config)
    assert activation.returncode == 0, activation.stderr
    daemon.wait_log("engine test-engine B now scores new studies", timeout=120)
    switched.set()
    got = first + results(subscriber, 29, timeout=600)
    writer.join(timeout=10)

    versions = {r["accession"]: r["model"]["version"] for r in got}
    assert sorted(versions) == [f"ACC{i:04d}" for i in range(30)]  # all 30, each once
    assert set(versions.values()) <= {"A", "B"}
    assert versions["ACC0000"] == "A"
    assert all(versions[f"ACC{i:04d}"] == "B" for i in range(20, 30))  # written after the switch
    sha = {"A": sha256(bundle_a / "model.onnx"), "B": sha256(bundle_b / "model.onnx")}
    for result in got:
        assert result["model"]["sha256"] == sha[result["model"]["version"]]
        assert result["study"]["threshold"] == {"A": 0.5, "B": 0.2}[result["model"]["version"]]
        assert result["missing_views"] == [] and len(result["images"]) == 4
    daemon.wait_log("engine test-engine A closed: its last study is done", timeout=60)
    health = subscriber.wait_health(lambda h: h["counters"]["processed"] == 120)
    assert health["counters"]["errors"] == 0 and health["counters"]["quarantined"] == 0
    assert health["engine"]["version"] == "B" and health["engine"]["source"] == "store"
    assert health["engine"]["last_activation"]["ok"] is True
    assert daemon.stop() == 0


@pytest.mark.slow
def test_a_failed_activation_leaves_the_old_engine_serving(
    tmp_path: Path,
    broker: Broker,
    subscriber: Subscriber,
    signing: tuple[Path, Path],
    study_files: dict[str, Path],
) -> None:
    private, public = signing
    write_config(
        tmp_path,
        broker.port,
        engine={"bundle": None, "backend": "auto", "trusted_keys": [str(public)]},
    )
    config = tmp_path / "config.yaml"
    bundle_a = make_signed_bundle(tmp_path / "A", private, version="A")
    assert (
        edge_cli("engines", "install", bundle_a, "--activate", "--config", config).returncode == 0
    )
    # B passes its self-test at install; afterwards its expected outputs are changed in the
    # store (it was installed unsigned, so only sha256 guards it and the manifest is
    # updated to match): the daemon's own self-test at activation must catch it.
    bundle_b = make_bundle(tmp_path / "B", version="B")
    run = edge_cli("engines", "install", bundle_b, "--allow-unsigned", "--config", config)
    assert run.returncode == 0, run.stderr
    store = EngineStore(tmp_path / "state" / "engines")
    installed_b = store.path_of(EngineRef("test-engine", "B"))
    make_bundle(installed_b, version="B", selftest_offset=0.3)
    daemon = start_daemon(tmp_path, broker, public, backend="auto")
    auto_choice, _ = registry.availability("tensorrt")
    if not auto_choice:  # auto says which backend it took, and why, in the log
        assert "backend auto: tensorrt not available: TensorRT not installed" in daemon.log()
    write_atomically(store.root / "current", "test-engine/B\n")
    daemon.wait_log("engine activation failed", timeout=120)
    assert "max |difference| 0.3" in daemon.log()
    export = tmp_path / "export" / "after"
    export.mkdir()
    for path in study_files.values():
        (export / path.name).write_bytes(path.read_bytes())
    (result,) = results(subscriber, 1, timeout=120)
    assert result["model"]["version"] == "A"
    health = subscriber.wait_health(lambda h: h["engine"]["last_activation"] is not None)
    assert health["engine"]["version"] == "A"
    assert health["engine"]["backend_requested"] == "auto"
    assert health["engine"]["backend_reason"]
    assert health["engine"]["last_activation"]["ok"] is False
    assert "self-test" in health["engine"]["last_activation"]["error"]
    # SIGHUP (systemctl reload) reloads instead of ending the daemon.
    write_atomically(store.root / "current", "test-engine/A\n")
    daemon.wait_log("engine A already serving", timeout=60)
    assert daemon.process is not None
    daemon.process.send_signal(signal.SIGHUP)

    def reloads() -> int:
        return daemon.log().count("engine A already serving")

    wait_for(lambda: reloads() >= 2, 60, "the reload on SIGHUP", daemon)
    assert reloads() == 2
    assert daemon.alive()
    assert daemon.stop() == 0
