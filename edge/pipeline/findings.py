"""From an engine's suspicion map to findings on the source image: pure functions, no I/O.

An engine that declares a suspicion map gives, for every image, a grid of values in [0, 1]
laid over its input tensor (cell ``[i, j]`` covers input rows ``i * H / h`` to
``(i + 1) * H / h``). A finding is a peak of that map at or above the map's threshold: a
cell no smaller than its eight neighbours, the strongest of any peaks closer than
:data:`MIN_SEPARATION_CELLS`. Its position is refined between cells by a parabola through
the peak and its two neighbours on each axis, its radius is that of the area around it
above half its height, and it is then carried back through preprocessing (the left/right
flip, then the resize of the whole image, which crops and pads nothing) into the source
image's pixels, in the SCOORD convention of :class:`edge.types.Finding`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from edge.bundle.manifest import OutputSpec, Preprocessing
from edge.pipeline.preprocess import needs_flip
from edge.types import Finding, ImageHeader

FloatMap = npt.NDArray[np.float32]

#: peaks closer than this (in map cells) are one region; the weaker is dropped
MIN_SEPARATION_CELLS = 2.0
#: half-width, in cells, of the window whose half-maximum area gives a finding's radius
RADIUS_WINDOW = 2


@dataclass(frozen=True)
class Peak:
    """A peak of the suspicion map, in map cells; ``(0, 0)`` is the map's top left corner."""

    row: float
    column: float
    radius: float
    value: float


@dataclass(frozen=True)
class Geometry:
    """How preprocessing placed one source image onto the model's input tensor.

    The whole image is resized to the input (no crop, no padding), after which it is
    mirrored left to right when ``flipped``; rows are never reversed.
    """

    source_rows: int
    source_columns: int
    input_height: int
    input_width: int
    flipped: bool


def geometry_of(header: ImageHeader, spec: Preprocessing) -> Geometry:
    """How :func:`edge.pipeline.preprocess.prepare` placed this image on the input."""
    return Geometry(
        source_rows=header.rows,
        source_columns=header.columns,
        input_height=spec.height,
        input_width=spec.width,
        flipped=needs_flip(header, spec.orientation),
    )


def find_peaks(suspicion: FloatMap, threshold: float, limit: int) -> tuple[Peak, ...]:
    """The map's peaks at or above ``threshold``, strongest first, at most ``limit``."""
    grid = np.asarray(suspicion, dtype=np.float32)
    neighbourhood_max = cv2.dilate(grid, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_REPLICATE)
    rows, columns = np.nonzero((grid >= neighbourhood_max) & (grid >= threshold))
    order = np.argsort(-grid[rows, columns], kind="stable")
    kept: list[tuple[int, int]] = []
    for index in order:
        cell = (int(rows[index]), int(columns[index]))
        if all(math.dist(cell, other) >= MIN_SEPARATION_CELLS for other in kept):
            kept.append(cell)
        if len(kept) == limit:
            break
    return tuple(_peak(grid, row, column) for row, column in kept)


def _peak(grid: FloatMap, row: int, column: int) -> Peak:
    return Peak(
        row=row + 0.5 + _subcell_offset(grid[:, column], row),
        column=column + 0.5 + _subcell_offset(grid[row, :], column),
        radius=_half_maximum_radius(grid, row, column),
        value=float(grid[row, column]),
    )


def _subcell_offset(line: FloatMap, index: int) -> float:
    """Vertex of the parabola through a peak and its two neighbours, in [-0.5, 0.5]."""
    if index == 0 or index == len(line) - 1:
        return 0.0
    before, centre, after = (float(v) for v in line[index - 1 : index + 2])
    curvature = before - 2.0 * centre + after
    if curvature >= 0.0:  # flat: no better guess than the cell's centre
        return 0.0
    return float(np.clip(0.5 * (before - after) / curvature, -0.5, 0.5))


def _half_maximum_radius(grid: FloatMap, row: int, column: int) -> float:
    """Radius (cells) of a disc with the area of the window's cells above half the peak."""
    window = grid[
        max(row - RADIUS_WINDOW, 0) : row + RADIUS_WINDOW + 1,
        max(column - RADIUS_WINDOW, 0) : column + RADIUS_WINDOW + 1,
    ]
    cells = int(np.count_nonzero(window >= 0.5 * grid[row, column]))
    return max(math.sqrt(cells / math.pi), 0.5)


def to_source(peak: Peak, map_shape: tuple[int, int], geometry: Geometry) -> Finding:
    """Carry a peak from map cells to the source image's pixels (SCOORD convention).

    Map cells scale to input pixels, the flip is undone about the input's width (a point
    at ``x`` came from ``W - x``: edges, not pixel centres, are what mirror onto each
    other), and input pixels scale to source pixels. The radius is scaled by the geometric
    mean of the two axes' scales, since the resize need not keep the aspect ratio.
    """
    map_rows, map_columns = map_shape
    input_row = peak.row * geometry.input_height / map_rows
    input_column = peak.column * geometry.input_width / map_columns
    if geometry.flipped:
        input_column = geometry.input_width - input_column
    row_scale = geometry.source_rows / geometry.input_height
    column_scale = geometry.source_columns / geometry.input_width
    cell = math.sqrt((geometry.input_height / map_rows) * (geometry.input_width / map_columns))
    return Finding(
        column=input_column * column_scale,
        row=input_row * row_scale,
        radius=peak.radius * cell * math.sqrt(row_scale * column_scale),
        score=peak.value,
    )


def locate(
    spec: OutputSpec, suspicion: FloatMap, header: ImageHeader, preprocessing: Preprocessing
) -> tuple[Finding, ...]:
    """One image's findings from its map, as the map's declaration ``spec`` says to read it."""
    assert spec.threshold is not None and spec.max_findings is not None  # the manifest checks
    geometry = geometry_of(header, preprocessing)
    return findings_from_map(suspicion, spec.threshold, spec.max_findings, geometry)


def findings_from_map(
    suspicion: FloatMap, threshold: float, limit: int, geometry: Geometry
) -> tuple[Finding, ...]:
    """The findings of one image: its map's peaks, strongest first, in source pixels."""
    grid = np.asarray(suspicion, dtype=np.float32)
    shape = (int(grid.shape[0]), int(grid.shape[1]))
    return tuple(to_source(peak, shape, geometry) for peak in find_peaks(grid, threshold, limit))
