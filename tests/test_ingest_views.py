"""Laterality, view, screening status and the kinds of object ingest lets through.

Each file is a real mammogram with its view attributes set as one vendor or
another writes them (PS3.3 C.8.11.7; codes from PS3.16 CID 4014 and 4015).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from mammo_files import build, header
from pydicom.dataset import Dataset, FileDataset
from pydicom.sequence import Sequence

from edge.bundle.manifest import Accepts
from edge.errors import IngestError, Skip
from edge.types import ImageHeader

VIEW_ATTRIBUTES = ("ImageLaterality", "Laterality", "ViewPosition", "PatientOrientation")


def code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def bare(**attributes: object) -> Callable[[FileDataset], None]:
    """An edit that removes every view attribute, then sets ``attributes``."""

    def edit(ds: FileDataset) -> None:
        for keyword in VIEW_ATTRIBUTES:
            if keyword in ds:
                delattr(ds, keyword)
        for keyword, value in attributes.items():
            setattr(ds, keyword, value)

    return edit


def view_code(value: str, scheme: str, meaning: str, *modifiers: Dataset) -> Sequence:
    item = code(value, scheme, meaning)
    if modifiers:
        item.ViewModifierCodeSequence = Sequence(list(modifiers))
    return Sequence([item])


def read(tmp_path: Path, edit: Callable[[FileDataset], object] | None) -> ImageHeader:
    return header(build(tmp_path / "image.dcm", edit=edit))


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        ({"ImageLaterality": "R", "Laterality": "L"}, "R"),  # Image Laterality wins
        ({"Laterality": "R"}, "R"),
        ({"PatientOrientation": ["P", "L"]}, "R"),  # RCC: column direction to the left
        ({"PatientOrientation": ["A", "FR"]}, "L"),  # LMLO
        ({"ViewCodeSequence": view_code("399162004", "SCT", "Right cranio-caudal")}, "R"),
    ],
)
def test_laterality_sources_in_order(
    tmp_path: Path, attributes: dict[str, object], expected: str
) -> None:
    attributes = {"ViewPosition": "CC", **attributes}
    assert read(tmp_path, bare(**attributes)).laterality == expected


def test_frame_laterality_of_an_enhanced_object(tmp_path: Path) -> None:
    anatomy = Dataset()
    anatomy.FrameLaterality = "R"
    group = Dataset()
    group.FrameAnatomySequence = Sequence([anatomy])
    edit = bare(ViewPosition="MLO", SharedFunctionalGroupsSequence=Sequence([group]))
    assert read(tmp_path, edit).laterality == "R"


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        ({"ViewPosition": "MLO"}, "MLO"),
        ({"ViewPosition": "XCCL"}, "XCCL"),
        ({"ViewPosition": "RCC"}, "CC"),  # an exporter that prefixed the side
        ({"ViewPosition": "LM"}, "LM"),  # not L + M
        ({"ViewCodeSequence": view_code("399368009", "SCT", "medio-lateral oblique")}, "MLO"),
        ({"ViewCodeSequence": view_code("R-10242", "SRT", "cranio-caudal")}, "CC"),
        ({"ViewCodeSequence": view_code("399260004", "SCT", "medial-lateral")}, "ML"),
        ({"ViewCodeSequence": view_code("R-1024A", "SRT", "exaggerated laterally")}, "XCCL"),
        ({"PatientOrientation": "MLO"}, "MLO"),  # CBIS-DDSM writes the view here
        ({"ViewPosition": "", "ViewCodeSequence": view_code("399162004", "SCT", "cc")}, "CC"),
    ],
)
def test_view_sources_in_order(
    tmp_path: Path, attributes: dict[str, object], expected: str
) -> None:
    assert read(tmp_path, bare(ImageLaterality="L", **attributes)).view == expected


def test_unknown_laterality_is_refused_with_that_reason(tmp_path: Path) -> None:
    with pytest.raises(IngestError) as caught:
        read(tmp_path, bare(ViewPosition="CC"))
    assert caught.value.reason == "unknown_laterality"


def test_unknown_view_is_refused_with_that_reason(tmp_path: Path) -> None:
    with pytest.raises(IngestError) as caught:
        read(tmp_path, bare(ImageLaterality="L"))
    assert caught.value.reason == "unknown_view"


@pytest.mark.parametrize(
    ("modifier", "screening"),
    [
        (code("399055006", "SCT", "Spot Compression"), False),
        (code("R-102D6", "SRT", "Magnification"), False),
        (code("399161006", "SCT", "Cleavage"), True),
    ],
)
def test_spot_and_magnification_views_are_kept_out_of_screening(
    tmp_path: Path, modifier: Dataset, screening: bool
) -> None:
    views = view_code("399162004", "SCT", "cranio-caudal", modifier)
    image = read(tmp_path, bare(ImageLaterality="R", ViewPosition="CC", ViewCodeSequence=views))
    assert (image.laterality, image.view, image.screening) == ("R", "CC", screening)


def test_an_ordinary_view_is_a_screening_view(tmp_path: Path) -> None:
    assert read(tmp_path, None).screening


@pytest.mark.parametrize(
    ("edit", "reason", "accepts"),
    [
        (
            lambda ds: setattr(ds, "PresentationIntentType", "FOR PROCESSING"),
            "for_processing",
            Accepts(for_processing=True),
        ),
        (
            lambda ds: setattr(ds, "SOPClassUID", "1.2.840.10008.5.1.4.1.1.1.2.1"),
            "for_processing",
            Accepts(for_processing=True),
        ),
        (
            lambda ds: setattr(ds, "SOPClassUID", "1.2.840.10008.5.1.4.1.1.13.1.3"),
            "tomosynthesis",
            Accepts(tomosynthesis=True),
        ),
    ],
)
def test_for_processing_and_tomosynthesis_are_skipped_unless_the_engine_accepts_them(
    tmp_path: Path, edit: Callable[[FileDataset], object], reason: str, accepts: Accepts
) -> None:
    path = build(tmp_path / "image.dcm", edit=edit)
    with pytest.raises(Skip) as caught:
        header(path)
    assert caught.value.reason == reason
    assert header(path, accepts=accepts).view == "CC"


def test_other_modalities_are_skipped(tmp_path: Path) -> None:
    with pytest.raises(Skip) as caught:
        read(tmp_path, lambda ds: setattr(ds, "Modality", "CT"))
    assert caught.value.reason == "not_mg"


@pytest.mark.parametrize("keyword", ["SOPInstanceUID", "StudyInstanceUID", "Rows"])
def test_missing_required_attributes_are_refused(tmp_path: Path, keyword: str) -> None:
    with pytest.raises(IngestError) as caught:
        read(tmp_path, lambda ds: delattr(ds, keyword))
    assert caught.value.reason == "missing_tag"


def test_a_colour_image_is_not_a_mammogram(tmp_path: Path) -> None:
    with pytest.raises(IngestError) as caught:
        read(tmp_path, lambda ds: setattr(ds, "PhotometricInterpretation", "RGB"))
    assert caught.value.reason == "not_greyscale"
