"""Read a file's DICOM header and decide what to do with it.

Only the header is read here (``stop_before_pixels``): a file that will be skipped
or quarantined costs no pixel decoding. A usable mammogram becomes an
:class:`~edge.types.ImageHeader`; anything else raises :class:`~edge.errors.Skip`
(a valid file this appliance does not score) or :class:`~edge.errors.IngestError`
(a file to quarantine).
"""

from __future__ import annotations

import time
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from edge.errors import IngestError, Skip
from edge.types import ImageHeader, IncomingFile

#: Media Storage Directory Storage: a DICOMDIR index, not an image (PS3.4 Annex B.5)
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"

LATERALITIES = frozenset({"L", "R"})


def read_header(incoming: IncomingFile, *, max_pixels: int) -> ImageHeader:
    """Read and check the header of ``incoming``.

    Raises
    ------
    Skip
        A DICOMDIR, or an image of another modality than MG.
    IngestError
        Not DICOM, empty, missing a required attribute, too large, or of an
        unknown laterality or view.
    """
    started = time.perf_counter()
    dataset = _read(incoming.path)
    _check_kind(dataset)
    sop_uid = _required_text(dataset, "SOPInstanceUID")
    study_uid = _required_text(dataset, "StudyInstanceUID")
    rows, columns = _dimensions(dataset, max_pixels)
    laterality = image_laterality(dataset)
    view = view_position(dataset)
    return ImageHeader(
        source=incoming,
        sop_uid=sop_uid,
        study_uid=study_uid,
        accession=str(dataset.get("AccessionNumber", "") or ""),
        laterality=laterality,
        view=view,
        rows=rows,
        columns=columns,
        transfer_syntax=str(dataset.file_meta.get("TransferSyntaxUID", "")),
        row_direction=_row_direction(dataset),
        timings_ms={"header": (time.perf_counter() - started) * 1000},
    )


def _read(path: Path) -> Dataset:
    try:
        if path.stat().st_size == 0:
            raise IngestError("empty", "the file is empty (0 bytes)")
        return pydicom.dcmread(path, stop_before_pixels=True)
    except InvalidDicomError as exc:
        raise IngestError("not_dicom", f"not a DICOM file: {exc}") from exc
    except PermissionError as exc:
        raise IngestError("unreadable", f"permission denied: {exc.strerror}") from exc
    except (EOFError, OSError) as exc:
        raise IngestError("truncated", f"the header ends early: {exc}") from exc
    except (ValueError, KeyError, TypeError, AttributeError, NotImplementedError) as exc:
        # pydicom raises these for malformed elements; the reason is in the text.
        raise IngestError("malformed", f"the header cannot be parsed: {exc}") from exc


def _check_kind(dataset: Dataset) -> None:
    meta = getattr(dataset, "file_meta", None)
    sop_class = str(meta.get("MediaStorageSOPClassUID", "")) if meta is not None else ""
    if sop_class == DICOMDIR_SOP_CLASS or "DirectoryRecordSequence" in dataset:
        raise Skip("dicomdir", "a DICOMDIR index, not an image")
    modality = str(dataset.get("Modality", "") or "")
    if modality != "MG":
        raise Skip("not_mg", f"Modality is {modality or 'absent'}, not MG")


def _required_text(dataset: Dataset, keyword: str) -> str:
    value = str(dataset.get(keyword, "") or "").strip()
    if not value:
        raise IngestError("missing_tag", f"required attribute {keyword} is missing or empty")
    return value


def _dimensions(dataset: Dataset, max_pixels: int) -> tuple[int, int]:
    try:
        rows = int(dataset.Rows)
        columns = int(dataset.Columns)
        frames = int(dataset.get("NumberOfFrames", 1) or 1)
    except (AttributeError, TypeError, ValueError) as exc:
        raise IngestError("missing_tag", f"Rows, Columns or NumberOfFrames: {exc}") from exc
    if rows <= 0 or columns <= 0:
        raise IngestError("missing_tag", f"image size {rows}x{columns} is not usable")
    if rows * columns * max(frames, 1) > max_pixels:
        raise IngestError(
            "too_large",
            f"header claims {rows}x{columns}x{frames} pixels, over the limit of {max_pixels}",
        )
    return rows, columns


def image_laterality(dataset: Dataset) -> str:
    """The breast an image shows: ``L`` or ``R``.

    From Image Laterality (0020,0062), else Laterality (0020,0060), else the
    column direction of Patient Orientation (0020,0020), which for a mammogram
    points to the patient's right or left (PS3.3 C.8.11.7.1).
    """
    for keyword in ("ImageLaterality", "Laterality"):
        value = str(dataset.get(keyword, "") or "").strip().upper()
        if value in LATERALITIES:
            return value
    orientation = _orientation(dataset)
    if len(orientation) == 2:
        column = orientation[1]
        # The column direction of a mammogram runs from the lateral edge across
        # the body: LCC is "A\\R", RMLO is "P\\FL". Its R/L is the other breast.
        side = column[-1:] if column[-1:] in LATERALITIES else ""
        if side:
            return "R" if side == "L" else "L"
    raise IngestError(
        "unknown_laterality", "no Image Laterality, Laterality or Patient Orientation"
    )


def view_position(dataset: Dataset) -> str:
    """The view: ``CC``, ``MLO``, ``ML``, ``LM``, ``XCCL``, ...

    From View Position (0018,5101); some exports (CBIS-DDSM among them) put the
    view name in Patient Orientation instead, which is accepted when it is one.
    """
    value = str(dataset.get("ViewPosition", "") or "").strip().upper()
    if value:
        return value
    orientation = "\\".join(_orientation(dataset))
    if orientation in KNOWN_VIEWS:
        return orientation
    raise IngestError("unknown_view", "no View Position or usable Patient Orientation")


KNOWN_VIEWS = frozenset({"CC", "MLO", "ML", "LM", "LMO", "XCCL", "XCCM", "FB", "SIO", "CV", "AT"})


def _orientation(dataset: Dataset) -> list[str]:
    value = dataset.get("PatientOrientation", None)
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [part.strip().upper() for part in value.split("\\") if part.strip()]
    return [str(part).strip().upper() for part in value]


def _row_direction(dataset: Dataset) -> str | None:
    orientation = _orientation(dataset)
    if len(orientation) == 2 and orientation[0] and orientation[0][0] in "AP":
        return orientation[0][0]
    return None
