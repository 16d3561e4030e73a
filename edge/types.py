"""Frozen records passed from one pipeline stage to the next.

watch -> :class:`IncomingFile` -> ingest -> :class:`ImageHeader` ->
decode/preprocess -> :class:`ModelInput` -> infer -> :class:`ImageScore` ->
study -> :class:`StudyResult` -> publish.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

#: The four views of a standard screening study: (laterality, view).
STANDARD_VIEWS: tuple[tuple[str, str], ...] = (("L", "CC"), ("L", "MLO"), ("R", "CC"), ("R", "MLO"))


@dataclass(frozen=True)
class IncomingFile:
    """A complete file to ingest: from the watch folder, or received by C-STORE and
    durable in the receiver's spool (:mod:`edge.dicom.receiver`)."""

    path: Path
    size: int
    mtime_ns: int
    #: monotonic time at which the watcher saw the file complete
    detected_at: float
    #: what made the watcher take it: ``close_write``, ``moved``, ``arrived`` (moved or
    #: linked in from outside the folder), ``settled`` or ``scan`` (found at start-up, in
    #: the folder or the spool); ``received`` for an instance the receiver acknowledged
    trigger: str


@dataclass(frozen=True)
class ImageHeader:
    """What ingest learnt from a file's header, before any pixel is read."""

    source: IncomingFile
    sop_uid: str
    study_uid: str
    accession: str
    laterality: str  # "L" or "R"
    view: str  # "CC", "MLO", "ML", ...
    rows: int
    columns: int
    transfer_syntax: str
    #: row direction of Patient Orientation ("A", "P", ...) when the file states it
    row_direction: str | None
    #: a spot or magnification view, reported but kept out of the screening score
    screening: bool = True
    #: Number of Frames (a tomosynthesis object the engine accepts has more than one)
    frames: int = 1
    timings_ms: dict[str, float] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class ModelInput:
    """One image decoded and preprocessed to the engine's input tensor layout (C, H, W)."""

    header: ImageHeader
    tensor: npt.NDArray[np.float32]
    timings_ms: dict[str, float] = field(default_factory=dict, compare=False)
    #: the engine it was prepared for and must be scored by (its study's engine)
    engine: EngineInfo | None = field(default=None, compare=False)
    #: why the GPU decoder failed on it before the CPU decoded it ("": it did not)
    gpu_fallback: str = field(default="", compare=False)


@dataclass(frozen=True)
class EngineInfo:
    """Identity of the model that produced a score; every result names it."""

    name: str
    version: str
    sha256: str
    backend: str


@dataclass(frozen=True)
class Finding:
    """A suspicious region the engine located on one image.

    Coordinates are in the source image's own pixel grid, as a DICOM SCOORD gives them
    (PS3.3 C.18.6.1.1): ``(0, 0)`` is the top left corner of the top left pixel, so the
    centre of that pixel is ``(0.5, 0.5)``; already mapped back through the resize and
    any left/right flip of preprocessing."""

    #: horizontal position (column), in source pixels
    column: float
    #: vertical position (row), in source pixels
    row: float
    #: the region's radius, in source pixels
    radius: float
    #: the engine's suspicion at this region, 0..1
    score: float


@dataclass(frozen=True)
class ShadowScore:
    """A candidate engine's score for an image, scored in shadow after the serving one.

    It never changes the image's serving score or its study's ``suspicious``."""

    engine: EngineInfo
    score: float
    #: the shadow engine's own suspicion threshold (its manifest's)
    threshold: float


@dataclass(frozen=True)
class ImageScore:
    """The engine's score for one image."""

    header: ImageHeader
    score: float
    engine: EngineInfo
    timings_ms: dict[str, float] = field(default_factory=dict, compare=False)
    #: regions the engine located, strongest first (empty for an engine without a map)
    findings: tuple[Finding, ...] = ()


@dataclass(frozen=True)
class BreastScore:
    score: float
    suspicious: bool


@dataclass(frozen=True)
class ShadowResult:
    """A study as the shadow engine scored it, at its own threshold: the companion of
    its serving result (``edge.shadow/1``). ``skipped`` counts the study's images it
    did not score."""

    engine: EngineInfo
    score: float
    suspicious: bool
    threshold: float
    breasts: dict[str, BreastScore]
    #: (SOP Instance UID, score) of every image it scored
    images: tuple[tuple[str, float], ...]
    skipped: int


@dataclass(frozen=True)
class StudyResult:
    """A study's assembled result, ready to publish (schema ``edge.result/1``).

    Its ``id`` is given with its ``seq`` when it is journalled
    (:func:`edge.messages.result.result_id`)."""

    study_uid: str
    accession: str
    engine: EngineInfo
    score: float
    suspicious: bool
    threshold: float
    breasts: dict[str, BreastScore]
    images: tuple[ImageScore, ...]
    missing_views: tuple[str, ...]
    #: why the study was closed: ``complete`` (four views) or ``quiet`` (timer)
    closed_by: str
    timings_ms: dict[str, float]
    created_at: str
    #: monotonic time of assembly (the start of the ``publish`` timing)
    assembled_at: float = field(default_factory=time.monotonic, compare=False)
