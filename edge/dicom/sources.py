"""What a CAD SR takes from the images it reports on: references and the patient module.

The SR goes into the images' own study at the PACS, so it carries their Patient,
Patient Study and General Study modules as they are (PS3.3 A.35.5): copied
element by element from the first image, never logged. The rest (SOP Class,
series, pixel spacing, orientation) is read per image, from the header only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue

from edge.errors import EdgeError
from edge.types import ImageScore

#: Patient (C.7.1.1), Patient Study (C.7.2.2) and General Study (C.7.2.1) attributes copied
COPIED = (
    "SpecificCharacterSet",
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "IssuerOfPatientIDQualifiersSequence",
    "TypeOfPatientID",
    "PatientBirthDate",
    "PatientBirthTime",
    "PatientSex",
    "OtherPatientIDsSequence",
    "OtherPatientNames",
    "PatientComments",
    "PatientIdentityRemoved",
    "DeidentificationMethod",
    "PatientAge",
    "PatientSize",
    "PatientWeight",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
    "IssuerOfAccessionNumberSequence",
    "StudyDescription",
    "ProcedureCodeSequence",
    "PhysiciansOfRecord",
)
#: Type 2 attributes of those modules: present, empty when the images lack them
TYPE_2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
          "ReferringPhysicianName", "StudyID", "AccessionNumber")  # fmt: skip


class SourceError(EdgeError):
    """A source image could not be read back to build the SR (moved away, damaged)."""


@dataclass(frozen=True)
class SourceImage:
    """One scored image as the SR references it."""

    score: ImageScore
    sop_class: str
    series_uid: str
    #: Patient Orientation (row direction, column direction), when the image states both
    orientation: tuple[str, str] | None
    #: (row spacing, column spacing) in mm: Imager Pixel Spacing, else Pixel Spacing
    spacing: tuple[float, float] | None
    content_date: str | None
    content_time: str | None


@dataclass(frozen=True)
class SourceStudy:
    images: tuple[SourceImage, ...]
    #: the copied patient and study attributes, ready to merge into the SR
    header: Dataset


def read_sources(images: tuple[ImageScore, ...]) -> SourceStudy:
    """Read the header of every image of a study result.

    Raises
    ------
    SourceError
        When an image cannot be read, or does not belong to the study.
    """
    headers = [_read(score.header.source.path) for score in images]
    study_uid = images[0].header.study_uid
    if any(str(h.get("StudyInstanceUID", "")) != study_uid for h in headers):
        raise SourceError("a source image no longer belongs to the study it was scored in")
    return SourceStudy(
        images=tuple(_source(score, h) for score, h in zip(images, headers, strict=True)),
        header=_copied(headers[0]),
    )


def _read(path: Path) -> Dataset:
    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except FileNotFoundError as exc:
        raise SourceError("a source image has left the watch folder") from exc
    except (OSError, InvalidDicomError, ValueError) as exc:
        raise SourceError(f"a source image cannot be read again: {type(exc).__name__}") from exc


def _source(score: ImageScore, header: Dataset) -> SourceImage:
    if str(header.get("SOPInstanceUID", "")) != score.header.sop_uid:
        raise SourceError("a source image was replaced since it was scored")
    orientation = header.get("PatientOrientation")
    if not isinstance(orientation, MultiValue):  # one value (a view name) says nothing
        orientation = None
    return SourceImage(
        score=score,
        sop_class=str(header.SOPClassUID),
        series_uid=str(header.get("SeriesInstanceUID", "")),
        orientation=(str(orientation[0]), str(orientation[1]))
        if orientation is not None and len(orientation) == 2
        else None,
        spacing=_spacing(header),
        content_date=str(header.ContentDate) if header.get("ContentDate") else None,
        content_time=str(header.ContentTime) if header.get("ContentTime") else None,
    )


def _spacing(header: Dataset) -> tuple[float, float] | None:
    for keyword in ("ImagerPixelSpacing", "PixelSpacing"):
        value = header.get(keyword)
        if value is not None and len(value) == 2 and all(float(v) > 0 for v in value):
            return float(value[0]), float(value[1])
    return None


def _copied(header: Dataset) -> Dataset:
    copied = Dataset()
    for keyword in COPIED:
        if keyword in header:
            setattr(copied, keyword, header.data_element(keyword).value)  # type: ignore[union-attr]
    for keyword in TYPE_2:
        if keyword not in copied:
            setattr(copied, keyword, "")
    return copied
