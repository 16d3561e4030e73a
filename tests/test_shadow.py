"""Shadow scoring: a candidate engine scores beside the serving one and changes nothing.

Real engines (ONNX bundles from tests/engine_bundles.py) on ONNX Runtime, the real
inference worker, study assembler, journal and result message.
"""

from __future__ import annotations

import dataclasses
import queue
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from engine_bundles import edge_cli, image_header, make_bundle
from journal_builders import image_score
from schemas import conforms
from support import write_config

from edge.bundle.manifest import load_bundle
from edge.config import ShadowConfig, load_config
from edge.engines.engine import Engine
from edge.engines.shadow import SHADOW, ShadowBudget
from edge.engines.store import EngineStore
from edge.errors import ConfigError
from edge.journal import Journal
from edge.messages.result import result_message
from edge.pipeline.infer import InferenceWorker
from edge.pipeline.study import StudyAssembler
from edge.types import STANDARD_VIEWS, ImageScore, ModelInput, ShadowScore

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


def test_every_image_carries_both_scores_and_the_serving_answer_is_unchanged(
    tmp_path: Path,
) -> None:
    a = engine(tmp_path, "A", scale=4.0, bias=-1.0, threshold=0.5)
    b = engine(tmp_path, "B", scale=-3.0, bias=1.5, threshold=0.4)
    counted: Counter[str] = Counter()
    scores: queue.Queue[ImageScore] = queue.Queue()
    worker = InferenceWorker(
        a,
        scores.put,
        lambda i, r, e: None,
        budget=ShadowBudget(ShadowConfig(when_idle=False, max_share=1.0)),
        count=lambda name, amount: counted.update({name: amount}),
    )
    worker.set_shadow(b)
    worker.start()
    items = four_inputs("1.2.9", np.random.default_rng(3))
    for item in items:
        worker.submit(item)
    got = {s.header.sop_uid: s for s in (scores.get(timeout=30) for _ in items)}
    assembler = StudyAssembler(30, lambda _engine: 0.5)
    result = None
    for item in items:
        served, tensor = got[item.header.sop_uid], item.tensor[np.newaxis]
        assert served.engine == a.info and served.score == pytest.approx(a.score(tensor)[0])
        assert served.shadow == ShadowScore(b.info, pytest.approx(b.score(tensor)[0]), 0.4)
        assembler.arrived(item.header)
        result = assembler.scored(served) or result
    assert result is not None and result.shadow is not None
    plain = assembler_result([dataclasses.replace(s, shadow=None) for s in got.values()])
    assert (result.score, result.suspicious, result.breasts) == (
        plain.score,
        plain.suspicious,
        plain.breasts,
    )
    shadow = result.shadow
    assert shadow.engine == b.info and shadow.skipped == 0 and shadow.threshold == 0.4
    shadow_top = max(s.shadow.score for s in got.values() if s.shadow is not None)
    assert shadow.score == pytest.approx(shadow_top)
    assert shadow.suspicious == (shadow_top >= 0.4)
    message = result_message(result, site="clinic-1", device="box-1", seq=1)
    conforms(message)
    assert message["shadow"]["model"]["version"] == "B"
    assert len(message["shadow"]["images"]) == 4 and message["shadow"]["skipped"] == 0
    assert "shadow" not in result_message(plain, site="clinic-1", device="box-1", seq=2)
    assert counted == Counter({"shadow_scored": 4})
    worker.stop(timeout=10)
    worker.close_engines()


def assembler_result(scores: list[ImageScore]):  # type: ignore[no-untyped-def]
    assembler = StudyAssembler(30, lambda _engine: 0.5)
    for score in scores:
        assembler.arrived(score.header)
    done = [assembler.scored(score) for score in scores]
    assert done[-1] is not None
    return done[-1]


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
    worker = InferenceWorker(
        a,
        scores.put,
        lambda i, reason, e: failures.append(reason),
        budget=ShadowBudget(ShadowConfig(when_idle=False)),
        count=lambda name, amount: counted.update({name: amount}),
    )
    worker.set_shadow(b)
    worker.start()
    item = four_inputs("1.2.8", np.random.default_rng(1))[0]
    worker.submit(item)
    got = scores.get(timeout=30)
    assert got.shadow is None and got.score == pytest.approx(a.score(item.tensor[None])[0])
    assert failures == [] and counted == Counter({"shadow_failed": 1})
    worker.take_shadow(b.info)  # closed already: not closed again
    worker.stop(timeout=10)
    worker.close_engines()


def test_shadow_scores_survive_a_restart_in_the_journal(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path, device="box-1")
    plain = image_score(tmp_path / "a.dcm", sop_uid="1.1", study_uid="1.9")
    candidate = dataclasses.replace(plain.engine, version="B", sha256="b" * 64)
    shadowed = dataclasses.replace(
        image_score(tmp_path / "b.dcm", sop_uid="1.2", study_uid="1.9", view="MLO"),
        shadow=ShadowScore(candidate, 0.75, 0.4),
    )
    journal.image_scored(plain)
    journal.image_scored(shadowed)
    journal.close()
    reopened = Journal.open(tmp_path, device="box-1")
    restored = {s.header.sop_uid: s.shadow for s in reopened.open_study_scores()}
    assert restored == {"1.1": None, "1.2": ShadowScore(candidate, 0.75, 0.4)}
    assembler = StudyAssembler(30, lambda _engine: 0.5)
    assembler.serve(plain.engine)
    assert assembler.restore(reopened.open_study_scores()) == []  # two views: still open
    reopened.close()
    (result,) = assembler.due(now=1e12)
    assert result.shadow is not None and result.shadow.engine == candidate
    assert result.shadow.skipped == 1 and result.shadow.images == (("1.2", 0.75),)


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
