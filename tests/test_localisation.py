"""The demo engine's findings land on the lesions of real DICOM files, in their own pixels.

A four-view phantom study (tests/lesion_phantoms.py: one mass at a known place on each
view, both breasts, both views, a right breast stored mirrored, a 2294 x 1914 detector,
one file JPEG 2000) goes through the real stages: ingest reads the header, decode and
preprocess make the input, the inference worker scores it with the demo bundle on ONNX
Runtime and maps the suspicion map's peaks back. Every finding must lie within reach of
its image's lesion: its radius, or 32 model-input pixels (73 source pixels) if larger,
the same rule engines/demo/README.md measures the demo's localisation with.
"""

from __future__ import annotations

import dataclasses
import math
import queue
from pathlib import Path

import pytest
from lesion_phantoms import CANONICAL, SOURCE, PlacedLesion, write_lesion_study
from mammo_files import header
from support import DEMO_BUNDLE

from edge.bundle.manifest import load_bundle
from edge.engines.engine import Engine
from edge.pipeline.decode import load_model_input
from edge.pipeline.infer import InferenceWorker
from edge.types import ImageScore

#: the hit rule of the demo's training record, in model-input pixels
HIT_MIN_INPUT_PX = 32.0
#: model-input pixels to source pixels (the geometric mean of the two axes' scales)
SCALE = math.sqrt(SOURCE[0] / CANONICAL[0] * SOURCE[1] / CANONICAL[1])


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> dict[Path, PlacedLesion]:
    return write_lesion_study(tmp_path_factory.mktemp("lesions"))


@pytest.fixture(scope="module")
def scored(study: dict[Path, PlacedLesion]) -> dict[str, ImageScore]:
    """Each file's ImageScore, by file name, from the real stages and the demo engine."""
    engine = Engine.load(load_bundle(DEMO_BUNDLE), backend="onnxruntime", threads=1)
    assert engine.suspicion_map is not None, "the demo engine gives no map"
    results: queue.Queue[ImageScore] = queue.Queue()
    failures: queue.Queue[str] = queue.Queue()
    worker = InferenceWorker(engine, results.put, lambda item, why, error: failures.put(why))
    worker.start()
    try:
        for path in study:
            prepared = load_model_input(header(path), engine.preprocessing)
            worker.submit(dataclasses.replace(prepared, engine=engine.info))
        scores = [results.get(timeout=120) for _ in study]
    finally:
        worker.stop(timeout=30)
        worker.close_engines()
    assert failures.empty()
    return {score.header.source.path.name: score for score in scores}


def reach(lesion: PlacedLesion) -> float:
    return max(lesion.radius, HIT_MIN_INPUT_PX * SCALE)


@pytest.mark.parametrize("name", ["LCC.dcm", "LMLO.dcm", "RCC.dcm", "RMLO.dcm"])
def test_every_finding_lies_on_the_lesion_in_the_files_own_pixels(
    name: str, study: dict[Path, PlacedLesion], scored: dict[str, ImageScore]
) -> None:
    lesion = next(placed for path, placed in study.items() if path.name == name)
    score = scored[name]
    assert (score.header.rows, score.header.columns) == SOURCE
    assert score.findings, f"{name}: no finding for a mass of radius {lesion.radius:.0f} px"
    for finding in score.findings:
        distance = math.dist((finding.row, finding.column), (lesion.row, lesion.column))
        assert distance <= reach(lesion), (
            f"{name}: finding at ({finding.row:.0f}, {finding.column:.0f}) is {distance:.0f} px "
            f"from the lesion at ({lesion.row:.0f}, {lesion.column:.0f}); reach {reach(lesion):.0f}"
        )
        assert 0.0 < finding.score <= 1.0 and finding.radius > 0.0


def test_the_test_would_see_a_missing_flip(study: dict[Path, PlacedLesion]) -> None:
    """Every lesion's mirror image lies far out of reach, so a finding mapped back without
    undoing the flip (or undoing one that was not made) would fail the test above."""
    for lesion in study.values():
        mirrored = SOURCE[1] - lesion.column
        assert abs(mirrored - lesion.column) > 3 * reach(lesion)


def test_both_breasts_and_both_views_were_read_as_stored(
    scored: dict[str, ImageScore],
) -> None:
    seen = {(s.header.laterality, s.header.view, s.header.row_direction) for s in scored.values()}
    assert seen == {("L", "CC", "A"), ("L", "MLO", "A"), ("R", "CC", "P"), ("R", "MLO", "P")}
    transfer_syntaxes = {s.header.transfer_syntax for s in scored.values()}
    assert len(transfer_syntaxes) == 2  # one file is JPEG 2000, decoded at reduced resolution
