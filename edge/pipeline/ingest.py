"""Read a file's DICOM header and decide what to do with it.

Only the header is read here (up to Pixel Data, see :mod:`edge.pipeline.dicomfile`):
a file that will be skipped or quarantined costs no pixel decoding, and a header
that claims more pixels than ``max_pixels`` is refused before anything is
allocated for them. A usable mammogram becomes an :class:`~edge.types.ImageHeader`;
anything else raises :class:`~edge.errors.Skip` (a valid object this appliance
does not score) or :class:`~edge.errors.IngestError` (a file to quarantine).
"""

from __future__ import annotations

import re
import time

from pydicom.dataset import Dataset, FileDataset

from edge.bundle.manifest import Accepts
from edge.common.privacy import closed
from edge.errors import IngestError, Skip
from edge.pipeline import dicomfile
from edge.pipeline.terms import MODALITIES, PHOTOMETRIC_INTERPRETATIONS
from edge.pipeline.views import (
    check_patient_view,
    image_laterality,
    is_screening_view,
    row_direction,
    view_position,
)
from edge.types import ImageHeader, IncomingFile

#: Media Storage Directory Storage: a DICOMDIR index, not an image (PS3.4 Annex B.5)
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
#: Digital Mammography X-Ray and Breast Projection X-Ray Image Storage, For Processing
FOR_PROCESSING_SOP_CLASSES = frozenset(
    {"1.2.840.10008.5.1.4.1.1.1.2.1", "1.2.840.10008.5.1.4.1.1.13.1.5"}
)
#: Breast Tomosynthesis Image Storage and Breast Projection X-Ray Image Storage (PS3.4 B.5)
TOMOSYNTHESIS_SOP_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.13.1.3",
        "1.2.840.10008.5.1.4.1.1.13.1.4",
        "1.2.840.10008.5.1.4.1.1.13.1.5",
    }
)
GREYSCALE = frozenset({"MONOCHROME1", "MONOCHROME2"})
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")


def read_header(
    incoming: IncomingFile, *, max_pixels: int, accepts: Accepts | None = None
) -> ImageHeader:
    """Read and check the header of ``incoming``.

    Parameters
    ----------
    incoming
        The file the watcher handed on.
    max_pixels
        The most pixels (rows x columns x frames) an image may claim.
    accepts
        What the active engine takes beyond For Presentation 2D mammograms
        (the manifest's ``accepts``); by default nothing more.

    Raises
    ------
    Skip
        An image of another modality than MG; a For Processing or tomosynthesis
        image that the engine does not accept; a quality-control image or any
        other that names no patient's view (``not_patient_view``).
    IngestError
        Not DICOM, a DICOMDIR, empty, truncated, missing a required attribute,
        too large, not grey scale, or of an unknown laterality or view.
    """
    started = time.perf_counter()
    found = dicomfile.read_header(incoming.path)
    return image_header(incoming, found, max_pixels, accepts, started)


def read_image(
    incoming: IncomingFile, *, max_pixels: int, accepts: Accepts | None = None
) -> tuple[ImageHeader, FileDataset]:
    """The header of ``incoming`` checked as :func:`read_header` checks it, then the
    whole data set, in one reading of the file (a decode worker's own reading).

    Raises
    ------
    Skip, IngestError
        As :func:`read_header`, and as a full reading of the file does.
    """
    started = time.perf_counter()

    def check(found: dicomfile.Header) -> tuple[ImageHeader, dicomfile.Limits]:
        header = image_header(incoming, found, max_pixels, accepts, started)
        return header, dicomfile.Limits.for_pixels(header.rows * header.columns * header.frames)

    return dicomfile.read_checked(incoming.path, check)


def image_header(
    incoming: IncomingFile,
    found: dicomfile.Header,
    max_pixels: int,
    accepts: Accepts | None,
    started: float,
) -> ImageHeader:
    """Check a header pass of ``incoming`` (started at ``started``) and describe the image."""
    dataset = found.dataset
    _check_kind(dataset, found.reached_pixels, accepts or Accepts())
    sop_uid = _required_uid(dataset, "SOPInstanceUID")
    study_uid = _required_uid(dataset, "StudyInstanceUID")
    rows, columns = check_pixel_description(dataset, max_pixels)
    return ImageHeader(
        source=incoming,
        sop_uid=sop_uid,
        study_uid=study_uid,
        accession=str(dataset.get("AccessionNumber", "") or ""),
        laterality=image_laterality(dataset),
        view=view_position(dataset),
        rows=rows,
        columns=columns,
        transfer_syntax=str(dataset.file_meta.get("TransferSyntaxUID", "")),
        row_direction=row_direction(dataset),
        screening=is_screening_view(dataset),
        frames=max(_int(dataset, "NumberOfFrames", 1), 1),
        timings_ms={"header": (time.perf_counter() - started) * 1000},
    )


def _check_kind(dataset: FileDataset, reached_pixels: bool, accepts: Accepts) -> None:
    sop_class = sop_class_uid(dataset)
    if sop_class == DICOMDIR_SOP_CLASS or "DirectoryRecordSequence" in dataset:
        raise IngestError("dicomdir", "a DICOMDIR index, not an image")
    modality = _text(dataset, "Modality")
    if modality and modality != "MG":
        # Quoted only when it is a defined term: a misfiled name must not be echoed.
        raise Skip("not_mg", f"Modality is {closed(modality, MODALITIES, 'modality')}, not MG")
    if not reached_pixels:
        # A file still being written ends early too: the daemon retries this reason.
        raise IngestError("truncated", "the file ends before its Pixel Data")
    if not modality:
        raise Skip("not_mg", "Modality is absent, not MG")
    for_processing = (
        sop_class in FOR_PROCESSING_SOP_CLASSES
        or _text(dataset, "PresentationIntentType") == "FOR PROCESSING"
    )
    if for_processing and not accepts.for_processing:
        raise Skip("for_processing", "a For Processing image; the engine takes For Presentation")
    frames = _int(dataset, "NumberOfFrames", 1)
    if (sop_class in TOMOSYNTHESIS_SOP_CLASSES or frames > 1) and not accepts.tomosynthesis:
        raise Skip("tomosynthesis", "a tomosynthesis or multi-frame object; the engine takes 2D")
    check_patient_view(dataset)


def sop_class_uid(dataset: FileDataset) -> str:
    """SOP Class UID from the data set, else from the file meta information."""
    value = _text(dataset, "SOPClassUID")
    meta = getattr(dataset, "file_meta", None)
    if not value and meta is not None:
        value = str(meta.get("MediaStorageSOPClassUID", "") or "").strip()
    return value


def check_pixel_description(dataset: Dataset, max_pixels: int) -> tuple[int, int]:
    """Rows and Columns, once the Image Pixel Module (PS3.3 C.7.6.3) describes a grey image.

    Raises
    ------
    IngestError
        ``missing_tag``, ``too_large`` or ``not_greyscale``.
    """
    rows = _int(dataset, "Rows", 0)
    columns = _int(dataset, "Columns", 0)
    frames = max(_int(dataset, "NumberOfFrames", 1), 1)
    if rows <= 0 or columns <= 0:
        raise IngestError("missing_tag", f"image size {rows}x{columns} is not usable")
    if rows * columns * frames > max_pixels:
        raise IngestError(
            "too_large",
            f"header claims {rows}x{columns}x{frames} pixels, over the limit of {max_pixels}",
        )
    photometric = _text(dataset, "PhotometricInterpretation")
    samples = _int(dataset, "SamplesPerPixel", 1)
    if photometric not in GREYSCALE or samples != 1:
        named = (
            closed(photometric, PHOTOMETRIC_INTERPRETATIONS, "value") if photometric else "absent"
        )
        raise IngestError(
            "not_greyscale",
            f"Photometric Interpretation {named} with {samples} samples; "
            "a mammogram is MONOCHROME1 or MONOCHROME2",
        )
    allocated = _int(dataset, "BitsAllocated", 0)
    stored = _int(dataset, "BitsStored", allocated)
    if allocated not in (8, 16) or not 1 <= stored <= allocated:
        raise IngestError(
            "missing_tag", f"Bits Allocated {allocated} / Bits Stored {stored} are not usable"
        )
    if _int(dataset, "PixelRepresentation", -1) not in (0, 1):
        raise IngestError("missing_tag", "Pixel Representation is missing or not 0 or 1")
    return rows, columns


def _required_text(dataset: Dataset, keyword: str) -> str:
    value = _text(dataset, keyword, upper=False)
    if not value:
        raise IngestError("missing_tag", f"required attribute {keyword} is missing or empty")
    return value


def _required_uid(dataset: Dataset, keyword: str) -> str:
    """A UID as PS3.5 9.1 writes it: digits in dot-separated components, at most 64.

    The study UID travels in the result; text that is not a UID (a misfiled
    patient name) must not.
    """
    value = _required_text(dataset, keyword).rstrip("\0")
    if len(value) > 64 or not _UID.fullmatch(value):
        raise IngestError("invalid_uid", f"{keyword} is not a UID (digits and dots, at most 64)")
    return value


def _text(dataset: Dataset, keyword: str, *, upper: bool = True) -> str:
    try:
        value = dataset.get(keyword, "")
    except (ValueError, TypeError, KeyError, OverflowError) as exc:
        # The exception's text quotes the value: only the attribute is named.
        raise IngestError("malformed", f"{keyword} cannot be read ({type(exc).__name__})") from exc
    text = str(value or "").strip()
    return text.upper() if upper else text


def _int(dataset: Dataset, keyword: str, default: int) -> int:
    try:
        value = dataset.get(keyword, None)
        return default if value is None or value == "" else int(value)
    except (ValueError, TypeError, OverflowError) as exc:
        raise IngestError("missing_tag", f"{keyword} is not a number") from exc
