"""The content tree of a Mammography CAD SR: PS3.16 TID 4000 and its sub-templates.

    CONTAINER Mammography CAD Report                                  TID 4000
      HAS CONCEPT MOD  Language = English (United States)             TID 1204
      CONTAINS Image Library: one IMAGE per scored image              TID 4020
      CONTAINS CAD Processing and Findings Summary = CID 6047 value   TID 4001
        HAS PROPERTIES the study's impression, score, algorithm       TID 4002, 4019
        INFERRED FROM one Individual Impression per breast with marks TID 4003
          CONTAINS Single Image Finding per engine finding            TID 4006
            HAS PROPERTIES certainty, Center and Outline SCOORDs      TID 4021
      CONTAINS Summary of Detections = Succeeded | Partially ...      TID 4015, 4017
      CONTAINS Summary of Analyses = Succeeded | Partially ...        TID 4016, 4018

Scores go in as percent (the engine's 0..1 score x 100): the engine's suspicion,
not a calibrated probability of cancer, so they are "Certainty of" values and
never (111047, DCM, "Probability of cancer"). The operating point is the
engine's threshold on that score, stated in the Algorithm Parameters.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.sr.coding import Code

from edge.dicom import codes
from edge.dicom import content as sr
from edge.dicom.sources import SourceImage, SourceStudy
from edge.types import Finding, StudyResult

#: where the Image Library's entries sit: root (1), the library is the root's 2nd child
LIBRARY_POSITION = (1, 2)
SIDES = {"L": "left breast", "R": "right breast"}
NOT_FOR_CLINICAL_USE = "NOT FOR CLINICAL USE"


@dataclass(frozen=True)
class Algorithm:
    """The engine as the SR identifies it (TID 4019), with its operating point."""

    name: str
    version: str
    sha256: str
    threshold: float
    #: a demonstration engine: the document and its series say "not for clinical use"
    demonstration: bool


def content_tree(study: SourceStudy, result: StudyResult, algorithm: Algorithm) -> list[Dataset]:
    """The children of the root container, in TID 4000's order."""
    partial = bool(result.missing_views)
    status = codes.PARTIALLY_SUCCEEDED if partial else codes.SUCCEEDED
    return [
        sr.code("HAS CONCEPT MOD", codes.LANGUAGE, codes.ENGLISH),
        sr.container("CONTAINS", codes.IMAGE_LIBRARY, map(_library_entry, study.images)),
        _overall(study, result, algorithm),
        _summary(codes.SUMMARY_OF_DETECTIONS, codes.SUCCESSFUL_DETECTIONS,
                 codes.DETECTION_PERFORMED, codes.SELECTED_REGION, status, study, algorithm),
        _summary(codes.SUMMARY_OF_ANALYSES, codes.SUCCESSFUL_ANALYSES,
                 codes.ANALYSIS_PERFORMED, codes.OVERALL_ANALYSIS, status, study, algorithm),
    ]  # fmt: skip


def findings_summary(result: StudyResult) -> Code:
    """CID 6047: all succeeded or not (views missing), with findings or without."""
    marked = any(image.findings for image in result.images)
    if result.missing_views:
        return codes.NOT_ALL_SUCCEEDED_WITH_FINDINGS if marked else (
            codes.NOT_ALL_SUCCEEDED_WITHOUT_FINDINGS)  # fmt: skip
    return codes.ALL_SUCCEEDED_WITH_FINDINGS if marked else codes.ALL_SUCCEEDED_WITHOUT_FINDINGS


# -- TID 4020: the Image Library ---------------------------------------------------------------


def _library_entry(image: SourceImage) -> Dataset:
    header = image.score.header
    return sr.image("CONTAINS", image.sop_class, header.sop_uid, _acquisition_context(image))


def _acquisition_context(image: SourceImage) -> Iterator[Dataset]:
    header = image.score.header
    context = "HAS ACQ CONTEXT"
    yield sr.code(context, codes.IMAGE_LATERALITY, codes.BREAST[header.laterality])
    view = codes.VIEWS.get(header.view)
    if view is not None:
        yield sr.code(context, codes.IMAGE_VIEW, view)
    if image.orientation is not None:
        yield sr.text(context, codes.PATIENT_ORIENTATION_ROW, image.orientation[0])
        yield sr.text(context, codes.PATIENT_ORIENTATION_COLUMN, image.orientation[1])
    if image.content_date is not None:
        yield sr.date(context, codes.CONTENT_DATE, image.content_date)
    if image.content_time is not None:
        yield sr.time(context, codes.CONTENT_TIME, image.content_time)
    if image.spacing is not None:
        rows, columns = image.spacing
        yield sr.num(context, codes.HORIZONTAL_PIXEL_SPACING, columns, codes.MILLIMETRE)
        yield sr.num(context, codes.VERTICAL_PIXEL_SPACING, rows, codes.MILLIMETRE)


def _library_reference(relationship: str, index: int) -> Dataset:
    return sr.by_reference(relationship, (*LIBRARY_POSITION, index + 1))


# -- TID 4019: Algorithm Identification ----------------------------------------------------------


def _algorithm(algorithm: Algorithm, relationship: str = "HAS PROPERTIES") -> Iterator[Dataset]:
    """TID 4019; under a CONTAINER by CONTAINS (PS3.3 Table A.35.5-2 allows no other)."""
    yield sr.text(relationship, codes.ALGORITHM_NAME, algorithm.name)
    yield sr.text(relationship, codes.ALGORITHM_VERSION, algorithm.version)
    for parameter in _parameters(algorithm):
        yield sr.text(relationship, codes.ALGORITHM_PARAMETERS, parameter)


def _parameters(algorithm: Algorithm) -> Iterator[str]:
    if algorithm.demonstration:
        yield f"{NOT_FOR_CLINICAL_USE}: a demonstration engine"
    yield f"model sha256 {algorithm.sha256}"
    yield (
        f"operating point: suspicious at a score of {algorithm.threshold:g} or more "
        "(scores 0 to 1; the certainty values here are the score in percent)"
    )


# -- TID 4001 / 4002 / 4003: impressions -------------------------------------------------------


def _overall(study: SourceStudy, result: StudyResult, algorithm: Algorithm) -> Dataset:
    breasts = [_individual(study, side, algorithm) for side in ("L", "R")]
    return sr.code(
        "CONTAINS",
        codes.PROCESSING_SUMMARY,
        findings_summary(result),
        [
            sr.text("HAS PROPERTIES", codes.IMPRESSION_DESCRIPTION,
                    _study_impression(result, algorithm)),
            sr.num("HAS PROPERTIES", codes.CERTAINTY_OF_IMPRESSION, _percent(result.score),
                   codes.PERCENT),
            *_algorithm(algorithm),
            *(breast for breast in breasts if breast is not None),
        ],
    )  # fmt: skip


def _study_impression(result: StudyResult, algorithm: Algorithm) -> str:
    verdict = "above it: suspicious" if result.suspicious else "below it"
    per_breast = ", ".join(
        f"{SIDES[side]} {breast.score:.3f}" for side, breast in sorted(result.breasts.items())
    )
    text = (
        f"AI suspicion score {result.score:.3f} for the study "
        f"({per_breast or 'no breast scored'}); operating point {algorithm.threshold:g}, {verdict}."
    )
    if result.missing_views:
        text += f" Views not scored: {', '.join(result.missing_views)}."
    if algorithm.demonstration:
        text = f"{NOT_FOR_CLINICAL_USE} (demonstration engine). {text}"
    return text


def _individual(study: SourceStudy, side: str, algorithm: Algorithm) -> Dataset | None:
    """TID 4003 for one breast: present only where the engine marked a region in it."""
    marks = [
        sr.code("CONTAINS", codes.SINGLE_IMAGE_FINDING, codes.SELECTED_REGION,
                _finding(finding, index, algorithm))
        for index, image in enumerate(study.images)
        if image.score.header.laterality == side
        for finding in image.score.findings
    ]  # fmt: skip
    if not marks:
        return None
    score = max(image.score.score for image in study.images
                if image.score.header.laterality == side)  # fmt: skip
    return sr.container(
        "INFERRED FROM",
        codes.INDIVIDUAL_IMPRESSION,
        [
            sr.code("HAS CONCEPT MOD", codes.RENDERING_INTENT, codes.PRESENTATION_REQUIRED),
            sr.text("CONTAINS", codes.IMPRESSION_DESCRIPTION,
                    f"AI suspicion score {score:.3f} for the {SIDES[side]}."),
            sr.num("CONTAINS", codes.CERTAINTY_OF_IMPRESSION, _percent(score), codes.PERCENT),
            *_algorithm(algorithm, "CONTAINS"),
            *marks,
        ],
    )  # fmt: skip


# -- TID 4006 / 4021: one marked region ---------------------------------------------------------


def _finding(finding: Finding, index: int, algorithm: Algorithm) -> Iterator[Dataset]:
    yield sr.code("HAS CONCEPT MOD", codes.RENDERING_INTENT, codes.PRESENTATION_REQUIRED)
    yield from _algorithm(algorithm)
    yield sr.num("HAS PROPERTIES", codes.CERTAINTY_OF_FINDING, _percent(finding.score),
                 codes.PERCENT)  # fmt: skip
    centre = (finding.column, finding.row)
    yield sr.scoord("HAS PROPERTIES", codes.CENTER, "POINT", centre,
                    [_library_reference("SELECTED FROM", index)])  # fmt: skip
    if finding.radius > 0:
        edge = (finding.column + finding.radius, finding.row)
        yield sr.scoord("HAS PROPERTIES", codes.OUTLINE, "CIRCLE", (*centre, *edge),
                        [_library_reference("SELECTED FROM", index)])  # fmt: skip


# -- TID 4015-4018: what was attempted -----------------------------------------------------------


def _summary(
    concept: Code,
    successful: Code,
    performed: Code,
    what: Code,
    status: Code,
    study: SourceStudy,
    algorithm: Algorithm,
) -> Dataset:
    """Summary of Detections or of Analyses: the engine ran on every image listed."""
    run = sr.code(
        "CONTAINS",
        performed,
        what,
        [
            *_algorithm(algorithm),
            *(_library_reference("INFERRED FROM", i) for i in range(len(study.images))),
        ],
    )
    return sr.code("CONTAINS", concept, status, [sr.container("INFERRED FROM", successful, [run])])


def _percent(score: float) -> float:
    return round(100.0 * score, 2)


def is_demonstration(description: str) -> bool:
    """An engine whose manifest says it is not for clinical use (the demo engine does)."""
    return NOT_FOR_CLINICAL_USE.lower() in description.lower()
