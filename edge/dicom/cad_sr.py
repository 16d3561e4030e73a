"""A study's result as a Mammography CAD SR document (PS3.3 A.35.5, PS3.16 TID 4000).

The SR goes into the source images' study (their Study Instance UID, patient
and study modules) as a new series, Modality SR, of one instance per version:
a study scored again (late images after its result went out) gives a new
document, Instance Number one higher, whose Predecessor Documents Sequence
names the version it replaces. Its SOP Instance UID is derived from the
result's ``id``, so the same result always gives the same UID, and a resend
after a restart or a PACS outage is stored once.
"""

from __future__ import annotations

import io
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone

from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian

from edge import __version__
from edge.dicom import codes
from edge.dicom import content as sr
from edge.dicom.cad_tree import NOT_FOR_CLINICAL_USE, Algorithm, content_tree
from edge.dicom.sources import SourceStudy
from edge.types import StudyResult

#: Mammography CAD SR Storage (PS3.4 B.5)
MAMMOGRAPHY_CAD_SR = "1.2.840.10008.5.1.4.1.1.88.50"
#: the Series Number the box gives its SR series, out of the way of a modality's
SERIES_NUMBER = 9901
_NAMESPACE = uuid.UUID("5b0c3f61-9d0e-4c3a-9a43-2f0b3d6e7a10")


@dataclass(frozen=True)
class Version:
    """Which version of its study's SR a document is, and the one it replaces."""

    number: int
    #: (Series Instance UID, SOP Instance UID) of the previous version, if any
    predecessor: tuple[str, str] | None = None


def sr_uid(result_id: str) -> str:
    """The SOP Instance UID of the SR of the result ``result_id`` (32 hex digits).

    A UUID-derived UID (PS3.5 B.2): the id's 128 bits as a name-based UUID."""
    return f"2.25.{uuid.uuid5(_NAMESPACE, result_id).int}"


def series_uid(site: str, device: str, study_uid: str) -> str:
    """One SR series per study and box: every version of the study's SR goes in it."""
    return f"2.25.{uuid.uuid5(_NAMESPACE, f'{site}/{device}/{study_uid}').int}"


def build(
    result: StudyResult,
    sources: SourceStudy,
    algorithm: Algorithm,
    *,
    sop_uid: str,
    series: str,
    version: Version,
    station: str,
) -> FileDataset:
    """The SR data set, ready to write or send."""
    now = datetime.now(timezone.utc)
    ds = FileDataset("", Dataset(), file_meta=_meta(sop_uid), preamble=b"\0" * 128)
    ds.update(sources.header)
    ds.SOPClassUID = MAMMOGRAPHY_CAD_SR
    ds.SOPInstanceUID = sop_uid
    ds.InstanceCreationDate = ds.ContentDate = now.strftime("%Y%m%d")
    ds.InstanceCreationTime = ds.ContentTime = now.strftime("%H%M%S.%f")
    ds.TimezoneOffsetFromUTC = "+0000"
    _series(ds, series, algorithm)
    _equipment(ds, algorithm, station)
    _document(ds, sources, version)
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = [sr.code_item(codes.MAMMOGRAPHY_CAD_REPORT)]
    ds.ContinuityOfContent = "SEPARATE"
    template = Dataset()
    template.MappingResource = "DCMR"
    template.TemplateIdentifier = "4000"
    ds.ContentTemplateSequence = [template]
    ds.ContentSequence = DicomSequence(content_tree(sources, result, algorithm))
    return ds


def encode(ds: FileDataset) -> bytes:
    """The SR as a DICOM file (Part 10), explicit VR little endian."""
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def series_description(algorithm: Algorithm) -> str:
    text = f"AI CAD {algorithm.name} {algorithm.version}"
    if algorithm.demonstration:
        text += f" - {NOT_FOR_CLINICAL_USE}"
    return text[:64]


def _meta(sop_uid: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(MAMMOGRAPHY_CAD_SR)
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = f"EDGE_{__version__}"[:16]
    return meta


def _series(ds: Dataset, series: str, algorithm: Algorithm) -> None:
    """SR Document Series (PS3.3 C.17.1)."""
    ds.Modality = "SR"
    ds.SeriesInstanceUID = series
    ds.SeriesNumber = SERIES_NUMBER
    ds.SeriesDescription = series_description(algorithm)
    ds.ReferencedPerformedProcedureStepSequence = DicomSequence()


def _equipment(ds: Dataset, algorithm: Algorithm, station: str) -> None:
    """General Equipment (PS3.3 C.7.5.1): the box, its software and the engine."""
    ds.Manufacturer = "edge"
    ds.ManufacturerModelName = "edge AI mammography appliance"
    ds.SoftwareVersions = [f"edge {__version__}", f"{algorithm.name} {algorithm.version}"]
    ds.StationName = station[:16]


def _document(ds: Dataset, sources: SourceStudy, version: Version) -> None:
    """SR Document General (PS3.3 C.17.2)."""
    ds.InstanceNumber = version.number
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "UNVERIFIED"
    ds.PerformedProcedureCodeSequence = DicomSequence()
    ds.CurrentRequestedProcedureEvidenceSequence = [_evidence(sources)]
    if version.predecessor is not None:
        series, sop = version.predecessor
        ds.PredecessorDocumentsSequence = [
            _hierarchy(str(ds.StudyInstanceUID), {series: [(ds.SOPClassUID, sop)]})
        ]


def _evidence(sources: SourceStudy) -> Dataset:
    by_series: dict[str, list[tuple[str, str]]] = {}
    for image in sources.images:
        by_series.setdefault(image.series_uid, []).append(
            (image.sop_class, image.score.header.sop_uid)
        )
    return _hierarchy(sources.images[0].score.header.study_uid, by_series)


def _hierarchy(study_uid: str, by_series: dict[str, list[tuple[str, str]]]) -> Dataset:
    """A Hierarchical SOP Instance Reference (PS3.3 C.17.2.1): study, series, instances."""
    study = Dataset()
    study.StudyInstanceUID = study_uid
    study.ReferencedSeriesSequence = DicomSequence()
    for uid, instances in by_series.items():
        series = Dataset()
        series.SeriesInstanceUID = uid
        series.ReferencedSOPSequence = DicomSequence()
        for sop_class, sop_uid in instances:
            reference = Dataset()
            reference.ReferencedSOPClassUID = sop_class
            reference.ReferencedSOPInstanceUID = sop_uid
            series.ReferencedSOPSequence.append(reference)
        study.ReferencedSeriesSequence.append(series)
    return study
