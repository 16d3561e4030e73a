"""Study assembly: completion, the quiet timer, scores per breast and study, result ids."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.errors import JournalError
from edge.messages.result import result_id
from edge.pipeline.study import StudyAssembler
from edge.types import EngineInfo, ImageHeader, ImageScore, IncomingFile

ENGINE = EngineInfo("demo", "1", "a" * 64, "onnxruntime")


def header(
    sop: str, lat: str, view: str, *, at: float = 0.0, screening: bool = True
) -> ImageHeader:
    return ImageHeader(
        source=IncomingFile(Path(sop), 1, 1, at, "scan"),
        sop_uid=sop,
        study_uid="1.2.3",
        accession="A1",
        laterality=lat,
        view=view,
        rows=10,
        columns=10,
        transfer_syntax="",
        row_direction=None,
        screening=screening,
    )


def scored(assembler: StudyAssembler, h: ImageHeader, score: float):  # type: ignore[no-untyped-def]
    return assembler.scored(ImageScore(h, score, ENGINE, {"infer": 1.0}))


def test_four_views_close_the_study_with_max_scores() -> None:
    assembler = StudyAssembler(30, lambda _e: 0.5)
    views = [
        ("1", "L", "CC", 0.2),
        ("2", "L", "MLO", 0.7),
        ("3", "R", "CC", 0.1),
        ("4", "R", "MLO", 0.3),
    ]
    headers = [header(sop, lat, view) for sop, lat, view, _ in views]
    for h in headers:
        assembler.arrived(h)
    results = [scored(assembler, h, s) for h, (*_, s) in zip(headers, views, strict=True)]
    assert results[:3] == [None, None, None]
    result = results[3]
    assert result is not None
    assert result.closed_by == "complete"
    assert result.breasts["L"].score == 0.7 and result.breasts["L"].suspicious
    assert result.breasts["R"].score == 0.3 and not result.breasts["R"].suspicious
    assert result.score == 0.7 and result.suspicious
    assert result.missing_views == ()
    assert assembler.open_studies == 0


def test_study_waits_for_images_still_in_flight() -> None:
    assembler = StudyAssembler(30, lambda _e: 0.5)
    headers = [
        header(str(i), lat, view)
        for i, (lat, view) in enumerate(
            [("L", "CC"), ("L", "MLO"), ("R", "CC"), ("R", "MLO"), ("R", "MLO")]
        )
    ]
    for h in headers:
        assembler.arrived(h)
    for h in headers[:4]:
        assert scored(assembler, h, 0.1) is None
    result = scored(assembler, headers[4], 0.9)
    assert result is not None and len(result.images) == 5
    assert result.breasts["R"].score == 0.9


def test_quiet_timer_closes_incomplete_study_listing_missing_views() -> None:
    assembler = StudyAssembler(10, lambda _e: 0.5)
    h = header("1", "L", "CC", at=100.0)
    assembler.arrived(h)
    scored(assembler, h, 0.4)
    assert assembler.due(now=105.0) == []
    (result,) = assembler.due(now=110.5)
    assert result.closed_by == "quiet"
    assert result.missing_views == ("LMLO", "RCC", "RMLO")
    assert "R" not in result.breasts


def test_spot_views_are_reported_but_not_scored() -> None:
    assembler = StudyAssembler(1, lambda _e: 0.5)
    spot = header("9", "L", "CC", screening=False)
    normal = header("1", "L", "CC")
    for h in (spot, normal):
        assembler.arrived(h)
    scored(assembler, spot, 0.99)
    scored(assembler, normal, 0.2)
    (result,) = assembler.due(now=10.0)
    assert len(result.images) == 2
    assert result.score == 0.2


def test_result_id_is_stable_for_one_result_and_never_shared_by_two() -> None:
    one = result_id("clinic-1", "box-1", 7, "1.2", ["3", "4"], "a" * 64)
    assert one == result_id("clinic-1", "box-1", 7, "1.2", ["4", "3"], "a" * 64)
    others = [
        result_id("clinic-1", "box-1", 7, "1.2", ["3", "4"], "b" * 64),  # another model
        result_id("clinic-1", "box-1", 7, "1.2", ["3"], "a" * 64),  # fewer images
        result_id("clinic-1", "box-1", 8, "1.2", ["3", "4"], "a" * 64),  # read again later
        result_id("clinic-1", "box-2", 7, "1.2", ["3", "4"], "a" * 64),  # by another box
        result_id("clinic-2", "box-1", 7, "1.2", ["3", "4"], "a" * 64),  # at another site
    ]
    assert one not in others


def test_only_scores_that_leave_a_study_open_are_kept_before_it_holds_them() -> None:
    assembler = StudyAssembler(quiet_s=30.0, threshold=lambda _engine: 0.5)
    views = [("L", "CC"), ("L", "MLO"), ("R", "CC"), ("R", "MLO")]
    images = [header(f"1.{i}", lat, view) for i, (lat, view) in enumerate(views)]
    for image in images:
        assembler.arrived(image)
    kept: list[str] = []

    def keep(score: ImageScore) -> None:
        kept.append(score.header.sop_uid)

    def refuse(score: ImageScore) -> None:
        raise JournalError("journal write failed: database or disk is full")

    for image in images[:2]:
        assert assembler.scored(ImageScore(image, 0.1, ENGINE), keep) is None
    # A refused keep leaves the study as it was: the image is still in flight.
    with pytest.raises(JournalError):
        assembler.scored(ImageScore(images[2], 0.7, ENGINE), refuse)
    assert assembler.due(now=1e12) == []
    assert assembler.scored(ImageScore(images[2], 0.7, ENGINE), keep) is None
    result = assembler.scored(ImageScore(images[3], 0.2, ENGINE), keep)
    # The completing score is not kept: it goes with the result.
    assert kept == ["1.0", "1.1", "1.2"]
    assert result is not None and [s.header.sop_uid for s in result.images] == [
        "1.0",
        "1.1",
        "1.2",
        "1.3",
    ]
    assert result.score == pytest.approx(0.7)
    assert assembler.open_studies == 0
