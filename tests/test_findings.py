"""From a suspicion map to findings in the source image's own pixels (SCOORD convention).

The round-trip tests draw a bright disc at a known place on a source image of another
shape than the model's input, run the real preprocessing (resize, flip), take a map the
way a model would (the mean of each cell), and check that the finding lands back on the
disc, for both breasts and for a Patient Orientation that overrides the laterality.
"""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np
import pytest
from engine_bundles import image_header
from pydicom.dataset import Dataset

from edge.bundle.manifest import OutputSpec, Preprocessing
from edge.engines.engine import checked_maps
from edge.errors import EngineError
from edge.pipeline.findings import (
    Geometry,
    Peak,
    find_peaks,
    findings_from_map,
    geometry_of,
    to_source,
)
from edge.pipeline.preprocess import prepare
from edge.types import ImageHeader

SPEC = Preprocessing(height=256, width=208, orientation="chest_wall_left", intensity="minmax")
CELL = 16  # input pixels per map cell in these tests


def spike(rows: int, columns: int, *cells: tuple[int, int, float]) -> np.ndarray:
    grid = np.zeros((rows, columns), dtype=np.float32)
    for row, column, value in cells:
        grid[row, column] = value
    return grid


# -- peaks on the map ------------------------------------------------------------------------


def test_a_lone_cell_is_a_peak_at_its_centre() -> None:
    (peak,) = find_peaks(spike(8, 6, (3, 2, 0.9)), threshold=0.5, limit=4)
    assert (peak.row, peak.column, peak.value) == (3.5, 2.5, pytest.approx(0.9))
    assert peak.radius == pytest.approx(math.sqrt(1 / math.pi))  # a disc of one cell's area


def test_only_peaks_at_or_above_the_threshold_strongest_first_and_at_most_limit() -> None:
    grid = spike(10, 10, (1, 1, 0.6), (5, 5, 0.95), (8, 2, 0.5), (2, 8, 0.49), (8, 8, 0.7))
    peaks = find_peaks(grid, threshold=0.5, limit=3)
    assert [p.value for p in peaks] == pytest.approx([0.95, 0.7, 0.6])
    assert [p.value for p in find_peaks(grid, threshold=0.5, limit=10)][-1] == 0.5


def test_a_plateau_or_two_touching_peaks_are_one_finding() -> None:
    grid = spike(6, 6, (2, 2, 0.8), (2, 3, 0.8), (3, 3, 0.7))
    assert len(find_peaks(grid, threshold=0.5, limit=4)) == 1


def test_the_position_is_refined_between_cells() -> None:
    rows, columns = np.mgrid[0:12, 0:12].astype(np.float32) + 0.5
    centre = (5.3, 6.8)  # in cells
    grid = np.exp(-((rows - centre[0]) ** 2 + (columns - centre[1]) ** 2) / 2.0)
    (peak,) = find_peaks(grid.astype(np.float32), threshold=0.5, limit=4)
    assert math.dist((peak.row, peak.column), centre) < 0.15
    assert 1.0 < peak.radius < 2.0  # half-maximum radius of sigma 1: 1.18 cells


# -- the mapping back to the source -------------------------------------------------------------


def test_the_map_scales_to_input_then_source_pixels_without_a_flip() -> None:
    geometry = Geometry(
        source_rows=3000, source_columns=2400, input_height=256, input_width=208, flipped=False
    )
    peak = Peak(row=4.0, column=2.5, radius=1.0, value=0.8)
    finding = to_source(peak, (16, 13), geometry)
    assert finding.row == pytest.approx(4.0 * 16 * 3000 / 256)
    assert finding.column == pytest.approx(2.5 * 16 * 2400 / 208)
    assert finding.radius == pytest.approx(16 * math.sqrt((3000 / 256) * (2400 / 208)))
    assert finding.score == pytest.approx(0.8)


def test_a_flip_mirrors_about_the_edges_not_the_pixel_centres() -> None:
    geometry = Geometry(
        source_rows=200, source_columns=100, input_height=20, input_width=10, flipped=True
    )
    # The left edge of the input is the right edge of the source and vice versa.
    assert to_source(Peak(0.0, 0.0, 1.0, 1.0), (20, 10), geometry).column == pytest.approx(100.0)
    assert to_source(Peak(0.0, 10.0, 1.0, 1.0), (20, 10), geometry).column == pytest.approx(0.0)
    # The centre of the first input column is the centre of the last source column band.
    assert to_source(Peak(5.0, 0.5, 1.0, 1.0), (20, 10), geometry).column == pytest.approx(95.0)
    assert to_source(Peak(5.0, 0.5, 1.0, 1.0), (20, 10), geometry).row == pytest.approx(50.0)


@pytest.mark.parametrize(
    ("laterality", "row_direction", "flipped"),
    [("L", None, False), ("R", None, True), ("L", "P", True), ("R", "A", False)],
)
def test_the_geometry_follows_the_flip_preprocessing_makes(
    laterality: str, row_direction: str | None, flipped: bool
) -> None:
    header = _header(laterality, row_direction, rows=3000, columns=2400)
    geometry = geometry_of(header, SPEC)
    assert geometry == Geometry(3000, 2400, 256, 208, flipped)


@pytest.mark.parametrize(
    ("laterality", "row_direction"), [("L", None), ("R", None), ("L", "P"), ("R", "A")]
)
@pytest.mark.parametrize(("rows", "columns"), [(1200, 900), (700, 1000)])
def test_a_spot_on_the_source_comes_back_to_the_spot(
    laterality: str, row_direction: str | None, rows: int, columns: int
) -> None:
    """Through the real prepare(): a disc at (row, column) of the source is found there."""
    spot = (0.37 * rows, 0.21 * columns)  # off-centre in both axes, so a flip would show
    pixels = np.full((rows, columns), 400, dtype=np.uint16)
    centre = (round(spot[1]), round(spot[0]))
    cv2.circle(pixels, centre, radius=max(rows, columns) // 30, color=3000, thickness=-1)
    header = _header(laterality, row_direction, rows=rows, columns=columns)
    tensor = prepare(header, _monochrome2(), pixels, SPEC).tensor[0]
    suspicion = cv2.resize(tensor, (208 // CELL, 256 // CELL), interpolation=cv2.INTER_AREA)
    (finding,) = findings_from_map(suspicion, 0.02, 4, geometry_of(header, SPEC))
    # cv2.circle centres the disc on pixel (cx, cy): in SCOORD terms (cx + 0.5, cy + 0.5).
    truth = (centre[1] + 0.5, centre[0] + 0.5)
    cell_in_source = CELL * max(rows / 256, columns / 208)
    assert math.dist((finding.row, finding.column), truth) < 0.5 * cell_in_source


def test_maps_of_the_wrong_shape_or_range_are_refused() -> None:
    spec = OutputSpec(
        name="suspicion",
        shape=("batch", 1, 4, 3),
        dtype="float32",
        meaning="suspicion_map",
        threshold=0.5,
        max_findings=4,
    )
    good = np.zeros((2, 1, 4, 3), dtype=np.float32)
    assert checked_maps(good, spec, 2).shape == (2, 4, 3)
    with pytest.raises(EngineError, match="expected"):
        checked_maps(good[:, :, :3], spec, 2)
    with pytest.raises(EngineError, match="outside"):
        checked_maps(good + 1.5, spec, 2)
    with pytest.raises(EngineError, match="outside"):
        checked_maps(np.full_like(good, np.nan), spec, 2)


def _header(laterality: str, row_direction: str | None, *, rows: int, columns: int) -> ImageHeader:
    return dataclasses.replace(
        image_header("sop"),
        laterality=laterality,
        row_direction=row_direction,
        rows=rows,
        columns=columns,
    )


def _monochrome2() -> Dataset:
    dataset = Dataset()
    dataset.PhotometricInterpretation = "MONOCHROME2"
    return dataset
