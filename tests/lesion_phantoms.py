"""A four-view phantom study with one lesion at a known place on every image, as DICOM.

Each phantom is drawn by scripts/phantoms.py in the engine's canonical orientation (chest
wall left, 1024 x 832), with one mass centred where the test asks (radius 30 pixels, peak
contrast 0.30: well inside what the demo engine was trained on, and conspicuous enough that
a test of *where* its findings land does not turn on *whether* it sees a faint one; its
sensitivity is measured in engines/demo/README.md), then scaled up to a
detector's size of another aspect ratio (``SOURCE``) and stored as a 12-bit Digital
Mammography image the way a modality would: a right breast mirrored so its chest wall is
on the right, Patient Orientation saying so, and one of the files JPEG 2000 (which the box
decodes at reduced resolution). Where the lesion ends up in each file's own pixels (SCOORD
convention) is worked out independently of the box's code, from the scale and the mirror.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from pydicom.uid import generate_uid

from edge.tools.decode_bench import mammogram, write_encoded

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from phantoms import (  # scripts/ holds it: a script, not a package
    Lesion,
    LesionSite,
    make_phantom_with_lesions,
)

#: the canonical phantom, as the demo engine's input
CANONICAL = (1024, 832)
#: the stored image: rows, columns (a scale of 2.24 down, 2.30 across)
SOURCE = (2294, 1914)
#: the masses' radius (canonical pixels) and peak contrast; training draws 15-50 and 0.15-0.35
MASS_RADIUS = 30.0
MASS_CONTRAST = 0.30


@dataclass(frozen=True)
class PlacedLesion:
    """A lesion's centre and radius in the stored file's own pixels (SCOORD convention)."""

    kind: str
    row: float
    column: float
    radius: float


@dataclass(frozen=True)
class View:
    laterality: str
    view: str
    #: the lesion, on the canonical phantom
    lesion: LesionSite
    encoding: str
    seed: int


#: one lesion on each of the four views; sites lie in breast tissue for every phantom shape
VIEWS = (
    View("L", "CC", LesionSite("mass", 430, 210, MASS_RADIUS, MASS_CONTRAST), "explicit-le", 11),
    View("L", "MLO", LesionSite("mass", 640, 150, MASS_RADIUS, MASS_CONTRAST), "j2k-lossless", 12),
    View("R", "CC", LesionSite("mass", 560, 260, MASS_RADIUS, MASS_CONTRAST), "explicit-le", 14),
    View("R", "MLO", LesionSite("mass", 500, 120, MASS_RADIUS, MASS_CONTRAST), "explicit-le", 13),
)


def write_lesion_study(folder: Path, views: tuple[View, ...] = VIEWS) -> dict[Path, PlacedLesion]:
    """Write one study of ``views`` into ``folder``; each file's lesion in its own pixels."""
    folder.mkdir(parents=True, exist_ok=True)
    study_uid = generate_uid()
    placed = {}
    for view in views:
        pixels, lesion = stored_pixels(view)
        dataset = mammogram(pixels, laterality=view.laterality, view=view.view)
        dataset.StudyInstanceUID = study_uid
        column_direction = "F" if view.view == "MLO" else ("R" if view.laterality == "L" else "L")
        dataset.PatientOrientation = ["A" if view.laterality == "L" else "P", column_direction]
        path = folder / f"{view.laterality}{view.view}.dcm"
        write_encoded(dataset, view.encoding, path)
        placed[path] = lesion
    return placed


def stored_pixels(view: View) -> tuple[np.ndarray, PlacedLesion]:
    """The 12-bit image a modality would store, and where its lesion is in it."""
    rng = np.random.default_rng([20240611, 7, view.seed])
    image, (lesion,) = make_phantom_with_lesions(rng, *CANONICAL, lesion=True, at=view.lesion)
    rows, columns = SOURCE
    big = cv2.resize(image, (columns, rows), interpolation=cv2.INTER_LINEAR)
    if view.laterality == "R":
        big = big[:, ::-1]  # displayed chest wall right, as the modality stores it
    pixels = np.round(np.clip(big, 0.0, 1.0) * 4095.0).astype(np.uint16)
    return pixels, placed(lesion, flipped=view.laterality == "R")


def placed(lesion: Lesion, *, flipped: bool) -> PlacedLesion:
    """Scale the canonical centre (SCOORD, so edges map to edges) and mirror it if stored so."""
    row_scale, column_scale = SOURCE[0] / CANONICAL[0], SOURCE[1] / CANONICAL[1]
    column = lesion.column * column_scale
    return PlacedLesion(
        kind=lesion.kind,
        row=lesion.row * row_scale,
        column=SOURCE[1] - column if flipped else column,
        radius=lesion.radius * float(np.sqrt(row_scale * column_scale)),
    )
