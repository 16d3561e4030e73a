"""Which breast and which view a mammogram shows, from whatever its header offers.

Vendors fill different attributes, so each answer has a chain of sources, most
specific first:

- laterality: Image Laterality (0020,0062), Laterality (0020,0060), Frame
  Laterality (0020,9072) of an enhanced object, Patient Orientation (0020,0020),
  then the View Code Sequence (0054,0220);
- view: View Position (0018,5101), the View Code Sequence (CID 4014, with the
  modifiers of CID 4015, PS3.16), then Patient Orientation;
- a spot compression or magnification modifier (CID 4015) marks a diagnostic
  work-up view, reported but kept out of the screening score.

Before any of that, :func:`check_patient_view` refuses what is not a patient's
view at all: a quality-control exposure (flat field, phantom, calibration) that
a unit stores as MG. When the header names a view, that name is the answer: a
View Position or view code that names no mammographic view is never replaced
by a guess from another attribute.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from pydicom.dataset import Dataset

from edge.errors import IngestError, Skip

LATERALITIES = frozenset({"L", "R"})

#: View Position defined terms for mammography (PS3.3 C.8.11.7, ACR MQCM names)
KNOWN_VIEWS = frozenset(
    {
        "CC",
        "MLO",
        "ML",
        "LM",
        "LMO",
        "XCC",
        "XCCL",
        "XCCM",
        "FB",
        "SIO",
        "ISO",
        "CV",
        "AT",
        "SPECIMEN",
    }
)

#: CID 4014 "View for Mammography" (PS3.16): its SNOMED CT, legacy SNOMED-RT (SRT) and
#: UMLS codes, and the codes earlier editions used, -> view. The group is closed: a code
#: outside it names no mammographic view.
VIEW_CODES: dict[str, str] = {
    "399162004": "CC",  # cranio-caudal
    "R-10242": "CC",
    "C0442215": "CC",
    "399368009": "MLO",  # medio-lateral oblique
    "R-10226": "MLO",
    "C1302345": "MLO",
    "399260004": "ML",  # medio-lateral
    "R-10224": "ML",
    "C1302283": "ML",
    "399352003": "LM",  # latero-medial
    "R-10228": "LM",
    "C1302336": "LM",
    "399099002": "LMO",  # latero-medial oblique
    "R-10230": "LMO",
    "C1302201": "LMO",
    "399265009": "XCC",  # cranio-caudal exaggerated (an earlier edition)
    "399192008": "XCCL",  # cranio-caudal exaggerated laterally
    "R-1024A": "XCCL",
    "C1302247": "XCCL",
    "Y-X1770": "XCCL",  # deprecated (PS3.16 CID 4014, note 1)
    "399101009": "XCCM",  # cranio-caudal exaggerated medially
    "R-1024B": "XCCM",
    "C1302202": "XCCM",
    "Y-X1771": "XCCM",  # deprecated (PS3.16 CID 4014, note 1)
    "399196006": "FB",  # caudo-cranial (from below)
    "R-10244": "FB",
    "C1302249": "FB",
    "399188001": "SIO",  # superolateral to inferomedial oblique
    "R-102D0": "SIO",
    "C1302245": "SIO",
    "441555000": "ISO",  # inferomedial to superolateral oblique
    "R-40AAA": "ISO",
    "C2711617": "ISO",
    "127457009": "SPECIMEN",  # tissue specimen from breast
    "G-8310": "SPECIMEN",
    "C0444070": "SPECIMEN",
}

#: Words with which units name a quality-control protocol or series: Hologic Selenia
#: "Flat Field", Selenia Dimensions "Flat Field Conv", the ACR and CDMAM phantoms, QC
#: and calibration series (docs/ingest.md lists the sources).
_QC_WORDS = re.compile(
    r"\b(FLAT[\s_-]?FIELDS?|PHANTOM|CDMAM|QC|QUALITY[\s_-]CONTROL|CALIBRATION)\b"
)
#: the attributes that name the protocol or series of an image
_PROTOCOL_KEYWORDS = ("ProtocolName", "SeriesDescription")

#: CID 4015 modifiers that make a view diagnostic, not screening: spot compression, magnification
WORK_UP_MODIFIERS = frozenset({"399055006", "R-102D7", "399163009", "R-102D6"})

#: a laterality written at the start of a code meaning by some exporters ("Left CC")
_SIDE_WORD = re.compile(r"^(LEFT|RIGHT|L|R)\b[\s_-]*", re.IGNORECASE)


def check_patient_view(dataset: Dataset) -> None:
    """Refuse an image that shows no patient's breast in a mammographic view.

    Quality Control Image (0028,0300, PS3.3 C.7.6.1) YES, a View Position that
    is present but is no mammographic view, a View Code Sequence whose codes are
    all outside CID 4014, or a protocol or series named as QC. The detail names
    the attribute, never its value.

    Raises
    ------
    Skip
        ``not_patient_view``.
    """
    if _text(dataset, "QualityControlImage") == "YES":
        _not_a_patient_view("Quality Control Image is YES (a QC or phantom exposure)")
    position = _text(dataset, "ViewPosition")
    if position and not _known_view(position):
        _not_a_patient_view("its View Position names no mammographic view")
    codes = _view_code_values(dataset)
    if codes and not any(code in VIEW_CODES for code in codes):
        _not_a_patient_view("its View Code Sequence holds no CID 4014 view")
    for keyword in _PROTOCOL_KEYWORDS:
        if _QC_WORDS.search(_text(dataset, keyword)):
            _not_a_patient_view(f"its {keyword} names a quality-control exposure")


def _not_a_patient_view(why: str) -> None:
    raise Skip("not_patient_view", f"not a patient's view: {why}")


def _view_code_values(dataset: Dataset) -> list[str]:
    values = (str(item.get("CodeValue", "") or "").strip() for item in _view_items(dataset))
    return [value for value in values if value]


def image_laterality(dataset: Dataset) -> str:
    """The breast an image shows: ``L`` or ``R``.

    Raises
    ------
    IngestError
        ``unknown_laterality`` when no source says.
    """
    for keyword in ("ImageLaterality", "Laterality"):
        value = _text(dataset, keyword)
        if value in LATERALITIES:
            return value
    for value in _frame_lateralities(dataset):
        if value in LATERALITIES:
            return value
    side = _laterality_from_orientation(patient_orientation(dataset))
    if side:
        return side
    for item in _view_items(dataset):
        match = _SIDE_WORD.match(str(item.get("CodeMeaning", "") or "").strip())
        if match:
            return match.group(1)[0].upper()
    raise IngestError(
        "unknown_laterality",
        "no Image Laterality, Laterality, Frame Laterality, Patient Orientation "
        "or View Code Sequence says which breast this is",
    )


def _laterality_from_orientation(orientation: list[str]) -> str:
    """The breast from Patient Orientation (PS3.3 C.8.11.7.1.1).

    The column direction of a mammogram runs across the body from the breast's
    lateral edge: LCC is ``A\\R``, RMLO is ``P\\FL``. The R or L it ends with
    names the other breast.
    """
    if len(orientation) != 2:
        return ""
    last = orientation[1][-1:]
    if last not in LATERALITIES:
        return ""
    return "R" if last == "L" else "L"


def view_position(dataset: Dataset) -> str:
    """The view: ``CC``, ``MLO``, ``ML``, ``LM``, ``XCCL``, ...

    Raises
    ------
    IngestError
        ``unknown_view`` when no source names a known view.
    """
    position = _text(dataset, "ViewPosition")
    if position:  # a name present is the answer (check_patient_view refused the others)
        view = _known_view(position)
        if view:
            return view
        raise IngestError("unknown_view", "the View Position names no mammographic view")
    for code in _view_code_values(dataset):
        if code in VIEW_CODES:
            return VIEW_CODES[code]
    # Some exports (CBIS-DDSM among them) put the view's name in Patient Orientation.
    view = _known_view("\\".join(patient_orientation(dataset)))
    if view:
        return view
    raise IngestError(
        "unknown_view", "no View Position, View Code Sequence or Patient Orientation names the view"
    )


def _known_view(value: str) -> str:
    """``value`` if it names a view, also when an exporter prefixed the side (``RCC``)."""
    value = re.sub(r"[\s_-]", "", value).upper()
    if value in KNOWN_VIEWS:
        return value
    for side in ("LEFT", "RIGHT", "L", "R"):
        if value.startswith(side) and value[len(side) :] in KNOWN_VIEWS:
            return value[len(side) :]
    return ""


def is_screening_view(dataset: Dataset) -> bool:
    """False for a spot compression or magnification view (CID 4015 modifiers).

    The View Modifier Code Sequence (0054,0222) sits inside the View Code
    Sequence item; some writers put it at the top level, which is read too.
    """
    modifiers = list(_sequence(dataset, "ViewModifierCodeSequence"))
    for item in _view_items(dataset):
        modifiers.extend(_sequence(item, "ViewModifierCodeSequence"))
    codes = {str(item.get("CodeValue", "") or "").strip() for item in modifiers}
    return not (codes & WORK_UP_MODIFIERS)


def patient_orientation(dataset: Dataset) -> list[str]:
    """Patient Orientation (0020,0020) as upper-case parts; empty when absent."""
    value = dataset.get("PatientOrientation", None)
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [part.strip().upper() for part in value.split("\\") if part.strip()]
    return [str(part).strip().upper() for part in value]


def row_direction(dataset: Dataset) -> str | None:
    """The anterior/posterior direction of the rows, when Patient Orientation states it."""
    orientation = patient_orientation(dataset)
    if len(orientation) == 2 and orientation[0] and orientation[0][0] in "AP":
        return orientation[0][0]
    return None


def _frame_lateralities(dataset: Dataset) -> Iterator[str]:
    """Frame Laterality of an enhanced or tomosynthesis object (PS3.3 C.7.6.16.2.8)."""
    for group in _sequence(dataset, "SharedFunctionalGroupsSequence"):
        for anatomy in _sequence(group, "FrameAnatomySequence"):
            yield _text(anatomy, "FrameLaterality")


def _view_items(dataset: Dataset) -> Iterator[Dataset]:
    yield from _sequence(dataset, "ViewCodeSequence")


def _sequence(dataset: Dataset, keyword: str) -> Iterator[Dataset]:
    value = dataset.get(keyword, None)
    if value is None:
        return
    try:
        items = list(value)
    except TypeError:
        return  # a malformed element that is not a sequence
    yield from (item for item in items if isinstance(item, Dataset))


def _text(dataset: Dataset, keyword: str) -> str:
    value = dataset.get(keyword, "")
    if value is None or not isinstance(value, str):
        return ""
    return value.strip().upper()
