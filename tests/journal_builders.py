"""Scored images, results and journal contents, for tests of the journal and the messages."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge.journal import Journal
from edge.pipeline.study import StudyAssembler
from edge.types import EngineInfo, ImageHeader, ImageScore, IncomingFile, StudyResult

ENGINE = EngineInfo("demo", "1.0.0", "ab" * 32, "onnxruntime")


def image_score(
    path: Path,
    *,
    sop_uid: str,
    study_uid: str,
    laterality: str = "L",
    view: str = "CC",
    score: float = 0.25,
) -> ImageScore:
    """A scored image as the inference stage hands it to the study assembler."""
    source = IncomingFile(path, 1000, 1_700_000_000_000_000_000, time.monotonic(), "scan")
    header = ImageHeader(
        source=source,
        sop_uid=sop_uid,
        study_uid=study_uid,
        accession="ACC1",
        laterality=laterality,
        view=view,
        rows=4000,
        columns=3000,
        transfer_syntax="1.2.840.10008.1.2.5",
        row_direction="A",
        timings_ms={"header": 1.5},
    )
    return ImageScore(header, score, ENGINE, {"header": 1.5, "decode": 80.0, "infer": 20.0})


# -- journal contents, for tests of the journal itself ----------------------------------------

TOPIC = "edge/clinic-1/box-1/results"


def incoming(
    path: Path, size: int = 1000, mtime_ns: int = 1_700_000_000_000_000_000
) -> IncomingFile:
    return IncomingFile(path, size, mtime_ns, 0.0, "scan")


def study_result(scores: list, closed_by: str = "complete") -> StudyResult:
    assembler = StudyAssembler(30.0, lambda _engine: 0.5)
    for score in scores:
        assembler.arrived(score.header)
    results = [assembler.scored(score) for score in scores]
    result = results[-1] or assembler.due(now=1e12)[0]
    assert result is not None
    return result


def journalled(journal: Journal, result: StudyResult) -> int:
    return journal.record_result(
        result, TOPIC, lambda seq: (f"id-{seq}", json.dumps({"seq": seq}).encode())
    )


def four_views(folder: Path, study: str) -> list:
    return [
        image_score(
            folder / f"{study}-{lat}{view}",
            sop_uid=f"{study}.{i}",
            study_uid=study,
            laterality=lat,
            view=view,
        )
        for i, (lat, view) in enumerate((("L", "CC"), ("L", "MLO"), ("R", "CC"), ("R", "MLO")))
    ]


def score_all(journal: Journal, scores: list) -> None:
    for score in scores:
        journal.file_seen(score.header.source)
        assert journal.claim_sop(
            score.header.source.path, score.header.sop_uid, score.header.study_uid
        )
        journal.image_scored(score)


def read_journal(state_dir: Path, read: Callable[[Journal], Any]) -> Any:
    """``read`` applied to the journal in ``state_dir``, opened read-only beside its daemon."""
    journal = Journal.open_read_only(state_dir, device="box-1")
    try:
        return read(journal)
    finally:
        journal.close()
