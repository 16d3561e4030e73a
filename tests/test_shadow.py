"""Shadow scoring: a candidate engine scores beside the serving one and changes nothing.

Real engines (ONNX bundles from tests/engine_bundles.py) on ONNX Runtime, the real
inference worker, study assembler, journal and result message.
"""

from __future__ import annotations

import dataclasses
import queue
import sqlite3
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from engine_bundles import edge_cli, image_header, make_bundle
from journal_builders import image_score
from schemas import conforms
from support import write_config
from test_journal_recovery import FILES_PAGES, overwrite_root_pages

from edge.bundle.manifest import load_bundle
from edge.config import ShadowConfig, load_config
from edge.engines.engine import Engine
from edge.engines.shadow import SHADOW, ShadowBudget
from edge.engines.store import EngineStore
from edge.errors import ConfigError
from edge.journal import FILENAME, Journal
from edge.journal.recovery import open_journal
from edge.messages.result import result_message
from edge.messages.shadow import shadow_message
from edge.pipeline.infer import InferenceWorker
from edge.pipeline.shadow_study import JournalledResult, ShadowCompanions, shadow_result
from edge.pipeline.study import StudyAssembler
from edge.types import (
    STANDARD_VIEWS,
    ImageScore,
    ModelInput,
    ShadowResult,
    ShadowScore,
    StudyResult,
)

SIZE = 64


def engine(folder: Path, version: str, **options: float) -> Engine:
    bundle = load_bundle(make_bundle(folder / version, version=version, size=SIZE, **options))
    return Engine.load(bundle, backend="onnxruntime", threads=1)


def four_inputs(study: str, rng: np.random.Generator) -> list[ModelInput]:
    items = []
    for index, (side, view) in enumerate(STANDARD_VIEWS):
        header = dataclasses.replace(
            image_header(f"1.2.{index}", study, size=SIZE), laterality=side, view=view
        )
        tensor = rng.random((1, SIZE, SIZE), dtype=np.float32)
        items.append(ModelInput(header, tensor))
    return items


class Sink:
    """The worker's shadow sink: a real ShadowCompanions, with the order of calls kept."""

    def __init__(self, calls: list[tuple[str, str]]) -> None:
        self.calls = calls
        self.companions: list[tuple[ShadowResult, JournalledResult]] = []
        self.gathered = ShadowCompanions(lambda *companion: self.companions.append(companion))
        self.scores: dict[str, ShadowScore | None] = {}

    def expect(self, sop_uid: str) -> None:
        self.calls.append(("expect", sop_uid))
        self.gathered.expect(sop_uid)

    def shadowed(self, sop_uid: str, score: ShadowScore | None) -> None:
        self.calls.append(("shadow", sop_uid))
        self.scores[sop_uid] = score
        self.gathered.shadowed(sop_uid, score)


def test_the_serving_score_goes_on_before_the_shadow_scores_and_is_unchanged(
    tmp_path: Path,
) -> None:
    a = engine(tmp_path, "A", scale=4.0, bias=-1.0, threshold=0.5)
    b = engine(tmp_path, "B", scale=-3.0, bias=1.5, threshold=0.4)
    counted: Counter[str] = Counter()
    calls: list[tuple[str, str]] = []
    sink = Sink(calls)
    scores: queue.Queue[ImageScore] = queue.Queue()

    def served(score: ImageScore) -> None:
        calls.append(("serve", score.header.sop_uid))
        scores.put(score)

    worker = InferenceWorker(
        a,
        served,
        lambda i, r, e: None,
        budget=ShadowBudget(ShadowConfig(when_idle=False, max_share=1.0)),
        count=lambda name, amount: counted.update({name: amount}),
        shadow_sink=sink,
    )
    worker.set_shadow(b)
    worker.start()
    items = four_inputs("1.2.9", np.random.default_rng(3))
    for item in items:
        worker.submit(item)
    got = {s.header.sop_uid: s for s in (scores.get(timeout=30) for _ in items)}
    worker.stop(timeout=10)
    for item in items:
        sop, tensor = item.header.sop_uid, item.tensor[np.newaxis]
        # told before, scored after: the serving score never waits for the shadow's
        assert calls.index(("expect", sop)) < calls.index(("serve", sop))
        assert calls.index(("serve", sop)) < calls.index(("shadow", sop))
        assert got[sop].engine == a.info and got[sop].score == pytest.approx(a.score(tensor)[0])
        assert sink.scores[sop] == ShadowScore(b.info, pytest.approx(b.score(tensor)[0]), 0.4)
    assert counted == Counter({"shadow_scored": 4})
    worker.close_engines()

    result = assembler_result(list(got.values()))
    assert sink.gathered.follows(result)
    sink.gathered.journalled(JournalledResult.of(result, 7, "f" * 32))
    ((shadow, journalled),) = sink.companions
    assert journalled.seq == 7 and shadow.engine == b.info
    assert shadow.skipped == 0 and shadow.threshold == 0.4
    shadow_top = max(score.score for score in sink.scores.values() if score is not None)
    assert shadow.score == pytest.approx(shadow_top) and shadow.suspicious == (shadow_top >= 0.4)
    message = result_message(result, site="clinic-1", device="box-1", seq=7, shadow_follows=True)
    conforms(message)
    assert message["shadow_follows"] is True
    assert "shadow_follows" not in result_message(result, site="clinic-1", device="box-1", seq=8)
    companion = shadow_message(
        shadow,
        result_id=message["id"],
        seq=7,
        site="clinic-1",
        device="box-1",
        study_uid=result.study_uid,
        serving=result.engine,
    )
    conforms(companion)
    assert companion["model"]["version"] == "B" and companion["serving_model"]["version"] == "A"
    assert len(companion["images"]) == 4 and companion["skipped"] == 0


def test_a_companion_waits_for_its_last_shadow_score_and_only_for_it() -> None:
    companions: list[tuple[ShadowResult, JournalledResult]] = []
    gathered = ShadowCompanions(lambda *companion: companions.append(companion))
    images = [
        image_score(
            Path(f"/x/{i}.dcm"),
            sop_uid=f"1.{i}",
            study_uid="1.9",
            laterality=side,
            view=view,
            score=0.1 * i,
        )
        for i, (side, view) in enumerate(STANDARD_VIEWS)
    ]
    candidate = dataclasses.replace(images[0].engine, version="B", sha256="b" * 64)
    for image in images[:3]:
        gathered.expect(image.header.sop_uid)
        gathered.shadowed(image.header.sop_uid, ShadowScore(candidate, 0.6, 0.5))
    gathered.expect(images[3].header.sop_uid)
    result = assembler_result(images)
    gathered.journalled(JournalledResult.of(result, 1, "a" * 32))
    assert companions == [] and gathered.waiting == 1  # the result went; its companion waits
    gathered.shadowed(images[3].header.sop_uid, None)  # the shadow failed on the last one
    ((shadow, journalled),) = companions
    assert journalled.id == "a" * 32 and gathered.waiting == 0
    assert shadow.skipped == 1 and len(shadow.images) == 3 and shadow.suspicious
    # a result none of whose images was shadowed has no companion
    others = [
        dataclasses.replace(i, header=dataclasses.replace(i.header, sop_uid=f"2.{n}"))
        for n, i in enumerate(images)
    ]
    plain = assembler_result(others)
    assert not gathered.follows(plain)
    gathered.journalled(JournalledResult.of(plain, 2, "b" * 32))
    assert len(companions) == 1 and gathered.waiting == 0


def assembler_result(scores: list[ImageScore]) -> StudyResult:
    assembler = StudyAssembler(30, lambda _engine: 0.5)
    for score in scores:
        assembler.arrived(score.header)
    done = [assembler.scored(score) for score in scores]
    result = done[-1] or assembler.due(now=1e12)[0]  # fewer than four views: by the timer
    assert result is not None
    return result


def test_the_budget_refuses_while_images_wait_and_beyond_its_share() -> None:
    idle = ShadowBudget(ShadowConfig(when_idle=True, max_share=0.5))
    assert idle.admit(waiting=0).admitted
    assert idle.admit(waiting=2) == type(idle.admit(0))(False, "busy")
    shared = ShadowBudget(ShadowConfig(when_idle=False, max_share=0.25))
    shared.record(10.0, 10.0)  # the shadow took half the time
    assert shared.admit(waiting=5).reason == "share"
    for _ in range(3):
        shared.record(10.0, 0.0)  # three batches not shadowed: 10 of 50 ms
    assert shared.admit(waiting=5).admitted


def test_a_study_is_shadowed_whole_or_not_at_all() -> None:
    budget = ShadowBudget(ShadowConfig(when_idle=True))
    assert budget.admit_study("1.1", waiting=0)  # admitted at its first image
    assert budget.admit_study("1.1", waiting=7)  # its later images follow, however busy
    assert not budget.admit_study("1.2", waiting=7)  # refused at its first image...
    assert not budget.admit_study("1.2", waiting=0)  # ...and for the rest of it


def test_a_failing_shadow_is_counted_and_never_fails_the_image(tmp_path: Path) -> None:
    a = engine(tmp_path, "A")
    b = engine(tmp_path, "B", scale=2.0)
    b.close()  # its backend is gone: every shadow call fails
    counted: Counter[str] = Counter()
    scores: queue.Queue[ImageScore] = queue.Queue()
    failures: list[str] = []
    sink = Sink([])
    worker = InferenceWorker(
        a,
        scores.put,
        lambda i, reason, e: failures.append(reason),
        budget=ShadowBudget(ShadowConfig(when_idle=False)),
        count=lambda name, amount: counted.update({name: amount}),
        shadow_sink=sink,
    )
    worker.set_shadow(b)
    worker.start()
    item = four_inputs("1.2.8", np.random.default_rng(1))[0]
    worker.submit(item)
    got = scores.get(timeout=30)
    assert got.score == pytest.approx(a.score(item.tensor[None])[0])
    worker.stop(timeout=10)
    assert sink.scores == {item.header.sop_uid: None}  # the shadow failed: no score
    assert failures == [] and counted == Counter({"shadow_failed": 1})
    worker.take_shadow(b.info)  # closed already: not closed again
    worker.close_engines()


def test_shadow_scores_survive_a_restart_in_the_journal(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path, device="box-1")
    plain = image_score(tmp_path / "a.dcm", sop_uid="1.1", study_uid="1.9")
    candidate = dataclasses.replace(plain.engine, version="B", sha256="b" * 64)
    other = image_score(tmp_path / "b.dcm", sop_uid="1.2", study_uid="1.9", view="MLO")
    journal.image_scored(plain)
    journal.image_scored(other)
    journal.image_shadowed("1.2", ShadowScore(candidate, 0.75, 0.4))
    journal.close()
    reopened = Journal.open(tmp_path, device="box-1")
    assert reopened.open_shadow_scores() == {"1.2": ShadowScore(candidate, 0.75, 0.4)}
    companions: list[tuple[ShadowResult, JournalledResult]] = []
    gathered = ShadowCompanions(lambda *companion: companions.append(companion))
    gathered.restore(reopened.open_shadow_scores())
    assembler = StudyAssembler(30, lambda _engine: 0.5)
    assembler.serve(plain.engine)
    assert assembler.restore(reopened.open_study_scores()) == []  # two views: still open
    reopened.close()
    (result,) = assembler.due(now=1e12)
    gathered.journalled(JournalledResult.of(result, 1, "c" * 32))
    ((shadow, _),) = companions
    assert shadow.engine == candidate
    assert shadow.skipped == 1 and shadow.images == (("1.2", 0.75),)


def test_a_companion_is_journalled_sent_again_on_request_and_forgotten_with_its_result(
    tmp_path: Path,
) -> None:
    journal = Journal.open(tmp_path, device="box-1")
    for seq, sop in ((1, "1.1"), (2, "1.2")):
        score = image_score(tmp_path / f"{sop}.dcm", sop_uid=sop, study_uid=f"1.9.{seq}")
        journal.image_scored(score)
        result = assembler_result([score])
        journal.record_result(result, "t/results", lambda n: (f"{n:032x}", b"{}"))
    assert journal.record_companion(f"{2:032x}", "t/shadow", lambda n: f"c{n}".encode()) == 2
    assert journal.record_companion("0" * 32, "t/shadow", lambda n: b"") is None  # no result
    (waiting,) = journal.companions_waiting(10)
    assert (waiting.seq, waiting.topic, waiting.payload) == (2, "t/shadow", b"c2")
    journal.companion_delivered(waiting.entry)
    assert journal.companions_waiting(10) == []
    assert journal.resend_companions(1, 1) == 0  # seq 1 has none
    assert journal.resend_companions(2, None) == 1
    assert journal.companions_waiting(10) == [waiting]
    for entry in (1, 2):
        journal.acknowledge(entry)
    journal.record_result(result, "t/results", lambda n: (f"{n:032x}", b"{}"))  # seq 3: kept
    assert journal.forget_results(before=time.time() + 1, limit=10)[0] == 2
    assert journal.companions_waiting(10) == []
    journal.close()


def test_edge_engines_shadow_names_checks_and_clears_the_candidate(tmp_path: Path) -> None:
    config = write_config(tmp_path, 1883, engine={"bundle": None, "backend": "onnxruntime"})
    a = make_bundle(tmp_path / "bundles" / "A", version="A")
    b = make_bundle(tmp_path / "bundles" / "B", version="B", scale=2.0)
    for bundle in (a, b):
        done = edge_cli("engines", "install", bundle, "--allow-unsigned", "--config", config)
        assert done.returncode == 0, done.stderr
    assert edge_cli("engines", "activate", "A", "--config", config).returncode == 0
    store = EngineStore(tmp_path / "state" / "engines")
    refused = edge_cli("engines", "shadow", "A", "--config", config)
    assert refused.returncode != 0 and "is the current engine" in refused.stderr
    done = edge_cli("engines", "shadow", "B", "--config", config)
    assert done.returncode == 0, done.stderr
    assert "self-test" in done.stdout and (store.root / SHADOW).read_text() == "test-engine/B\n"
    listing = edge_cli("engines", "list", "--config", config).stdout
    assert "shadow   test-engine/B" in listing and "current  test-engine/A" in listing
    removal = edge_cli("engines", "remove", "B", "--config", config)
    assert removal.returncode != 0 and "scores in shadow" in removal.stderr
    off = edge_cli("engines", "shadow", "--off", "--config", config)
    assert off.returncode == 0 and not (store.root / SHADOW).exists()
    assert edge_cli("engines", "shadow", "B", "--config", config).returncode == 0
    activation = edge_cli("engines", "activate", "B", "--config", config)
    assert activation.returncode == 0, activation.stderr
    assert "no longer scores in shadow" in activation.stdout
    assert not (store.root / SHADOW).exists() and str(store.current()) == "test-engine/B"


def test_an_invalid_shadow_budget_fails_at_load_with_its_key(tmp_path: Path) -> None:
    path = write_config(tmp_path, 1883, engine={"shadow": {"max_share": 0}})
    with pytest.raises(ConfigError, match=r"engine\.shadow\.max_share"):
        load_config(path)
    path = write_config(tmp_path, 1883, engine={"shadow": {"idle": True}})
    with pytest.raises(ConfigError, match=r"engine\.shadow\.idle"):
        load_config(path)


def test_a_recovered_journal_keeps_the_shadow_scores_and_the_companions(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    journal = Journal.open(state, device="box-1")
    serving = image_score(tmp_path / "x.dcm", sop_uid="9", study_uid="9").engine
    candidate = dataclasses.replace(serving, version="B", sha256="b" * 64)
    closed = image_score(tmp_path / "a.dcm", sop_uid="1.1", study_uid="1.9")
    still_open = image_score(tmp_path / "b.dcm", sop_uid="1.2", study_uid="1.8")
    for score in (closed, still_open):
        journal.image_scored(score)
        journal.image_shadowed(score.header.sop_uid, ShadowScore(candidate, 0.75, 0.4))
    journal.record_result(assembler_result([closed]), "t/results", lambda n: ("a" * 32, b"{}"))
    journal.record_companion("a" * 32, "t/shadow", lambda n: b"companion")
    journal.close()
    db = sqlite3.connect(state / FILENAME)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    overwrite_root_pages(state / FILENAME, *FILES_PAGES)

    recovered, recovery = open_journal(state, device="box-1", outbox_max=10)
    assert recovery is not None
    (companion,) = recovered.companions_waiting(10)
    assert (companion.seq, companion.payload) == (1, b"companion")
    assert recovered.open_shadow_scores() == {"1.2": ShadowScore(candidate, 0.75, 0.4)}
    recovered.close()


def test_a_result_journalled_without_its_companion_is_found_at_the_next_start(
    tmp_path: Path,
) -> None:
    journal = Journal.open(tmp_path, device="box-1")
    serving = image_score(tmp_path / "x.dcm", sop_uid="9", study_uid="9").engine
    candidate = dataclasses.replace(serving, version="B", sha256="b" * 64)
    scores = [
        image_score(tmp_path / f"{sop}.dcm", sop_uid=sop, study_uid="1.9", view=view)
        for sop, view in (("1.1", "CC"), ("1.2", "MLO"))
    ]
    for score in scores:
        journal.image_scored(score)
    journal.image_shadowed("1.1", ShadowScore(candidate, 0.75, 0.4))  # 1.2's never came
    result = assembler_result(scores)
    journal.record_result(result, "t/results", lambda n: ("a" * 32, b"{}"))
    plain = image_score(tmp_path / "p.dcm", sop_uid="2.1", study_uid="2.9")
    journal.image_scored(plain)  # a result nobody shadowed
    journal.record_result(assembler_result([plain]), "t/results", lambda n: ("b" * 32, b"{}"))
    journal.close()

    reopened = Journal.open(tmp_path, device="box-1")
    (pending,) = reopened.unaccompanied()
    assert (pending.seq, pending.id, pending.study_uid) == (1, "a" * 32, "1.9")
    assert [image.header.sop_uid for image in pending.images] == ["1.1", "1.2"]
    shadow = shadow_result(pending.images, pending.shadows)
    assert shadow is not None and shadow.skipped == 1 and shadow.images == (("1.1", 0.75),)
    reopened.record_companion("a" * 32, "t/shadow", lambda n: b"companion")
    assert reopened.unaccompanied() == []
    reopened.close()
