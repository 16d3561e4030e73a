"""The hub's comparison of two engines, from stored rows, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hub_support import hub_table, postgres_database, result_document, shadow_companion
from schemas import conforms
from sqlalchemy import Engine, func, select

from edge.hub.commands import read_outcomes
from edge.hub.compare import auc_interval, compare_engines, wilson
from edge.hub.database import open_database
from edge.hub.errors import HubError
from edge.hub.messages import Rejected, decode
from edge.hub.outcomes import parse_outcome, record_outcomes
from edge.hub.queries import missing_companions
from edge.hub.store import Store
from edge.hub.tables import shadow_scores

NOW = datetime(2025, 3, 1, 12, 0, 0)
SHA_B = "b" * 64


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    url = f"sqlite:///{tmp_path / 'hub.db'}" if request.param == "sqlite" else postgres_database()
    instance = open_database(url, writer=True)
    yield instance
    instance.dispose()


def shadowed(seq: int, score: float, shadow: float, *, skipped: int = 0) -> dict[str, Any]:
    """A result of engine ``1`` (threshold 0.5) with engine ``2``'s (threshold 0.4) shadow."""
    document = result_document("clinic-1", "box-1", seq, score=score)
    document["shadow"] = {
        "model": {"name": "demo", "version": "2", "sha256": SHA_B, "backend": "onnxruntime"},
        "study": {"score": shadow, "suspicious": shadow >= 0.4, "threshold": 0.4},
        "breasts": {"L": {"score": shadow, "suspicious": shadow >= 0.4}},
        "images": [{"sop_uid": document["images"][0]["sop_uid"], "score": shadow}],
        "skipped": skipped,
    }
    return document


def store(engine: Engine, documents: list[dict[str, Any]]) -> None:
    """Store each result, and after it its companion (``edge.shadow/1``) from its
    ``shadow`` key, as the box sends them."""
    messages = []
    for document in documents:
        result = {key: value for key, value in document.items() if key != "shadow"}
        messages.append(("results", result))
        if "shadow" in document:
            messages.append(("shadow", companion(result, document["shadow"])))
    records = [
        decode(f"edge/clinic-1/box-1/{leaf}", json.dumps(d).encode(), "edge")
        for leaf, d in messages
    ]
    Store(engine).write(records, NOW)


def companion(result: dict[str, Any], shadow: dict[str, Any]) -> dict[str, Any]:
    document = shadow_companion(result, shadow)
    conforms(document)
    return document


# (A's score, B's score): A calls >= 0.5, B calls >= 0.4
PAIRS = [(0.9, 0.8), (0.6, 0.3), (0.2, 0.45), (0.1, 0.05), (0.3, 0.2), (0.7, 0.9)]


def test_the_comparison_is_computed_from_the_stored_rows(engine: Engine) -> None:
    documents = [shadowed(i + 1, a, b) for i, (a, b) in enumerate(PAIRS)]
    documents.append(shadowed(len(PAIRS) + 1, 0.9, 0.1, skipped=2))  # partial: left out
    documents.append(result_document("clinic-1", "box-1", len(PAIRS) + 2, score=0.9))  # no shadow
    store(engine, documents)
    with engine.connect() as connection:
        stored = connection.execute(select(func.count()).select_from(shadow_scores)).scalar()
        found = compare_engines(connection, site="clinic-1", engine="1", other="2")
        reverse = compare_engines(connection, site="clinic-1", engine="2", other="1")
        elsewhere = compare_engines(connection, site="clinic-2", engine="1", other="2")
    assert stored == len(PAIRS) + 1
    assert (found.studies, found.partial) == (6, 1)
    assert (found.both, found.engine_only, found.other_only, found.neither) == (2, 1, 1, 2)
    assert found.agreement == pytest.approx(4 / 6)
    assert found.suspicious_rate == pytest.approx(3 / 6)
    assert found.other_suspicious_rate == pytest.approx(3 / 6)
    assert found.rate_change_pp == pytest.approx(0.0)
    assert found.kappa == pytest.approx((4 / 6 - 0.5) / 0.5)
    a, b = zip(*PAIRS, strict=True)
    assert found.pearson == pytest.approx(float(np.corrcoef(a, b)[0, 1]))
    assert found.accuracy is None
    assert (reverse.engine_only, reverse.other_only) == (found.other_only, found.engine_only)
    assert elsewhere.studies == 0 and elsewhere.agreement is None


def test_accuracy_with_outcomes_has_intervals(engine: Engine, tmp_path: Path) -> None:
    documents = [shadowed(i + 1, a, b) for i, (a, b) in enumerate(PAIRS)]
    store(engine, documents)
    outcomes_file = tmp_path / "outcomes.csv"
    lines = ["study,cancer"] + [
        f"{d['accession']},{1 if d['study']['score'] >= 0.6 else 0}" for d in documents
    ]
    outcomes_file.write_text("\n".join(lines) + "\n")
    outcomes = read_outcomes(outcomes_file)
    with engine.connect() as connection:
        found = compare_engines(
            connection, site="clinic-1", engine="1", other="2", outcomes=outcomes
        )
    assert (found.with_outcome, found.cancers) == (6, 3)
    assert found.accuracy is not None and found.other_accuracy is not None
    assert found.accuracy.sensitivity is not None and found.accuracy.sensitivity.value == 1.0
    assert found.accuracy.auc is not None and found.accuracy.auc.value == 1.0
    assert found.other_accuracy.sensitivity is not None
    assert found.other_accuracy.sensitivity.value == pytest.approx(2 / 3)
    low, high = found.other_accuracy.sensitivity.low, found.other_accuracy.sensitivity.high
    assert 0 < low < 2 / 3 < high < 1


def test_wilson_and_auc_follow_their_definitions() -> None:
    interval = wilson(8, 10)
    assert interval is not None
    assert (round(interval.low, 3), round(interval.high, 3)) == (0.490, 0.943)
    assert wilson(0, 0) is None
    auc = auc_interval([0.1, 0.4, 0.35, 0.8], [False, False, True, True])
    assert auc is not None and auc.value == pytest.approx(0.75)
    assert auc_interval([0.1, 0.2], [True, True]) is None


def test_an_outcome_file_that_does_not_say_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "outcomes.csv"
    path.write_text("study,cancer\nA1,maybe\n")
    with pytest.raises(HubError, match="line 2"):
        read_outcomes(path)


def test_edge_hub_compare_prints_the_comparison(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    engine = open_database(url, writer=True)
    store(engine, [shadowed(i + 1, a, b) for i, (a, b) in enumerate(PAIRS)])
    engine.dispose()
    text = hub_table(url, "compare", "--site", "clinic-1", "--engine", "1", "--with", "2")
    assert "on 6 studies scored by both" in text and "agreement 66.7%" in text
    assert "outcomes: none known" in text


def test_accuracy_comes_from_the_hubs_recorded_outcomes(engine: Engine) -> None:
    documents = [shadowed(i + 1, a, b) for i, (a, b) in enumerate(PAIRS)]
    store(engine, documents)
    records = [
        parse_outcome(
            {
                "study_uid": d["study_uid"],
                "decision": "recall" if d["study"]["score"] >= 0.6 else "no_recall",
                "pathology": "malignant" if d["study"]["score"] >= 0.6 else None,
                "read_at": "2025-03-02T09:00:00Z",
            },
            index,
        )
        for index, d in enumerate(documents[:5])  # the sixth has no outcome yet
    ]
    record_outcomes(engine, records, "quality-lead", NOW)
    with engine.connect() as connection:
        found = compare_engines(connection, site="clinic-1", engine="1", other="2")
    assert (found.with_outcome, found.cancers) == (5, 2)
    assert found.accuracy is not None and found.accuracy.sensitivity is not None
    assert found.accuracy.sensitivity.value == 1.0


def test_a_missing_companion_is_a_gap_until_it_is_stored_once(engine: Engine) -> None:
    result = result_document("clinic-1", "box-1", 1, score=0.7)
    result["shadow_follows"] = True
    plain = result_document("clinic-1", "box-1", 2, score=0.2)  # nothing follows it
    Store(engine).write(
        [
            decode("edge/clinic-1/box-1/results", json.dumps(d).encode(), "edge")
            for d in (result, plain)
        ],
        NOW,
    )
    later = datetime.fromisoformat(result["created_at"].replace("Z", "+00:00")).replace(tzinfo=None)
    with engine.connect() as connection:
        (gap,) = missing_companions(connection, now=later, window_s=3600)
    assert (gap.site, gap.device, gap.first, gap.last, gap.what) == (
        "clinic-1",
        "box-1",
        1,
        1,
        "shadow",
    )
    shadow = shadowed(1, 0.7, 0.3)["shadow"]
    payload = json.dumps(companion(result, shadow)).encode()
    for _ in range(2):  # a re-delivery is stored once
        Store(engine).write([decode("edge/clinic-1/box-1/shadow", payload, "edge")], NOW)
    with engine.connect() as connection:
        assert missing_companions(connection, now=later, window_s=3600) == []
        stored = connection.execute(select(func.count()).select_from(shadow_scores)).scalar()
    assert stored == 1


def test_a_companion_that_speaks_for_another_box_is_refused() -> None:
    result = result_document("clinic-1", "box-1", 1, score=0.7)
    document = companion(result, shadowed(1, 0.7, 0.3)["shadow"])
    record = decode("edge/clinic-1/box-2/shadow", json.dumps(document).encode(), "edge")
    assert isinstance(record, Rejected) and record.reason == "topic_mismatch"
    broken = decode(
        "edge/clinic-1/box-1/shadow", json.dumps({**document, "seq": 0}).encode(), "edge"
    )
    assert isinstance(broken, Rejected) and broken.reason == "invalid"
