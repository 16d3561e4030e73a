"""Images that are not a patient's view: quality-control exposures, phantoms, other views.

Some units store their flat-field and phantom exposures as MG images, with a View
Position that names no mammographic view and often no laterality. Such an image
must never be scored: it is skipped as ``not_patient_view`` before laterality or
view are looked for, and no other attribute is asked for a view instead. The
values below are the ones vendors write (docs/ingest.md names the sources); the
first test uses a real Agfa header from pydicom's test files.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom
import pytest
from daemons import start_daemon
from mammo_files import build, header
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileDataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid
from support import Broker, Subscriber

from edge.errors import IngestError, Skip
from edge.tools.samples import sample_cases, write_study

__all__ = ["start_daemon"]  # a fixture

VIEW_ATTRIBUTES = ("ImageLaterality", "Laterality", "ViewPosition", "PatientOrientation")


def edited(**attributes: object) -> Callable[[FileDataset], None]:
    """Remove every view attribute of the mammogram, then set ``attributes``."""

    def edit(ds: FileDataset) -> None:
        for keyword in VIEW_ATTRIBUTES:
            if keyword in ds:
                delattr(ds, keyword)
        for keyword, value in attributes.items():
            setattr(ds, keyword, value)

    return edit


def view_codes(*values: tuple[str, str, str]) -> Sequence:
    items = []
    for value, scheme, meaning in values:
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
        items.append(item)
    return Sequence(items)


def skipped(tmp_path: Path, edit: Callable[[FileDataset], None]) -> Skip:
    with pytest.raises(Skip) as caught:
        header(build(tmp_path / "image.dcm", edit=edit))
    return caught.value


def test_a_real_agfa_header_whose_view_is_no_mammographic_view_is_skipped(
    tmp_path: Path,
) -> None:
    # pydicom's Agfa ADC CR image: View Position LL, no laterality. An Agfa reader
    # writes Modality MG for a mammography plate; the view attributes stay its own.
    source = get_testdata_file("77654033/CR1/6154", read=False)
    assert isinstance(source, str)
    dataset = pydicom.dcmread(source)
    assert dataset.ViewPosition == "LL" and "ImageLaterality" not in dataset
    dataset.Modality = "MG"
    path = tmp_path / "agfa.dcm"
    dataset.save_as(path, enforce_file_format=True)
    with pytest.raises(Skip) as caught:
        header(path)
    assert caught.value.reason == "not_patient_view"
    assert "LL" not in caught.value.detail  # no element value in what is logged


@pytest.mark.parametrize(
    "attributes",
    [
        # a flat-field exposure with a ViewPosition and no laterality
        {"ViewPosition": "FLATFIELD", "Manufacturer": "HOLOGIC, Inc."},
        # Hologic Selenia's and Selenia Dimensions' flat-field QC protocols
        {"ProtocolName": "Flat Field", "Manufacturer": "HOLOGIC, Inc."},
        {"ProtocolName": "Flat Field Conv", "Manufacturer": "HOLOGIC, Inc."},
        {"SeriesDescription": "ACR Phantom", "ViewPosition": "CC", "ImageLaterality": "L"},
        {"SeriesDescription": "CDMAM 3.4", "ImageLaterality": "R", "ViewPosition": "CC"},
        {"SeriesDescription": "QC", "ImageLaterality": "L", "ViewPosition": "MLO"},
        # Quality Control Image (0028,0300): a phantom image, whatever its view says
        {"QualityControlImage": "YES", "ImageLaterality": "L", "ViewPosition": "CC"},
        # DX view positions are no mammographic views
        {"ViewPosition": "AP", "ImageLaterality": "L"},
        {"ViewPosition": "PA"},
    ],
)
def test_quality_control_and_phantom_images_are_skipped_as_not_patient_view(
    tmp_path: Path, attributes: dict[str, object]
) -> None:
    assert skipped(tmp_path, edited(**attributes)).reason == "not_patient_view"


def test_a_view_position_naming_no_view_gets_no_view_from_another_source(
    tmp_path: Path,
) -> None:
    # Patient Orientation and the View Code Sequence both name CC; the View
    # Position, present, names no view: the image is not scored as a CC.
    edit = edited(
        ImageLaterality="L",
        ViewPosition="WHATEVER",
        PatientOrientation="CC",
        ViewCodeSequence=view_codes(("399162004", "SCT", "cranio-caudal")),
    )
    assert skipped(tmp_path, edit).reason == "not_patient_view"


def test_a_view_code_outside_cid_4014_is_not_a_patient_view(tmp_path: Path) -> None:
    edit = edited(
        ImageLaterality="L",
        PatientOrientation="MLO",
        ViewCodeSequence=view_codes(("FLATFIELD", "99HOLOGIC", "Flat field")),
    )
    assert skipped(tmp_path, edit).reason == "not_patient_view"


@pytest.mark.parametrize(
    ("attributes", "view"),
    [
        ({"QualityControlImage": "NO"}, "CC"),
        ({"QualityControlImage": "BOTH"}, "CC"),  # a patient image with a phantom beside
        ({"SeriesDescription": "L CC Implant Displaced"}, "CC"),
        ({"ProtocolName": "Screening Bilateral"}, "CC"),
        ({"ViewCodeSequence": view_codes(("C0442215", "UMLS", "cranio-caudal"))}, "CC"),
        ({"ViewCodeSequence": view_codes(("Y-X1771", "SRT", "exaggerated medially"))}, "XCCM"),
    ],
)
def test_patient_views_are_still_read(
    tmp_path: Path, attributes: dict[str, object], view: str
) -> None:
    if "ViewCodeSequence" not in attributes:
        attributes = {"ViewPosition": "CC", **attributes}
    path = build(tmp_path / "image.dcm", edit=edited(ImageLaterality="L", **attributes))
    assert header(path).view == view


def test_an_image_naming_no_view_at_all_is_still_quarantined_as_unknown_view(
    tmp_path: Path,
) -> None:
    with pytest.raises(IngestError) as caught:
        header(build(tmp_path / "image.dcm", edit=edited(ImageLaterality="L")))
    assert caught.value.reason == "unknown_view"


@pytest.mark.slow
def test_a_flat_field_in_a_study_is_never_scored_and_is_counted(
    broker: Broker, start_daemon: Any, tmp_path: Path
) -> None:
    """A unit's flat field sharing a real study's UID: the study has four images, not five."""
    results = Subscriber(broker.port, ["edge/+/+/results", "edge/+/+/health"])
    start_daemon(broker.port, study={"quiet_s": 120})
    staging, export = tmp_path / "staging", tmp_path / "export"
    views = write_study(sample_cases()[0], staging, accession="QC0001")
    # Hologic's flat-field QC protocol; the view attributes left as the unit had them
    flat = pydicom.dcmread(views["lcc"])
    flat.Manufacturer = "HOLOGIC, Inc."
    flat.ProtocolName = "Flat Field"
    flat.SOPInstanceUID = flat.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    flat.save_as(staging / "flat.dcm", enforce_file_format=True)
    shutil.copy(staging / "flat.dcm", export / "flat.dcm")  # the QC exposure first
    for view in ("rcc", "lcc", "rmlo", "lmlo"):
        shutil.copy(views[view], export / f"{view}.dcm")
    message = results.next("/results", timeout=120)
    assert isinstance(message, dict)
    assert len(message["images"]) == 4 and message["closed_by"] == "complete"
    health = results.wait_health(
        lambda h: h["counters"]["skipped_by_reason"].get("not_patient_view") == 1
    )
    assert health["counters"]["quarantined_by_reason"] == {}
    results.close()
