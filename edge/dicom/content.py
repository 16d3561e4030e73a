"""SR content items as pydicom data sets (PS3.3 C.17.3, Table C.17-6).

One small function per value type; a content item's children go into its
Content Sequence. Relationships by reference (PS3.3 C.17.3.2.5) point at an
item by its position in the tree, from the root (1) down.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.sr.coding import Code
from pydicom.valuerep import format_number_as_ds


def code_item(code: Code) -> Dataset:
    """A Code Sequence item: value, scheme, meaning (PS3.3 Table 8.8-1)."""
    item = Dataset()
    item.CodeValue = code.value
    item.CodingSchemeDesignator = code.scheme_designator
    item.CodeMeaning = code.meaning
    return item


def _item(relationship: str | None, value_type: str, concept: Code | None) -> Dataset:
    item = Dataset()
    if relationship is not None:
        item.RelationshipType = relationship
    item.ValueType = value_type
    if concept is not None:
        item.ConceptNameCodeSequence = [code_item(concept)]
    return item


def with_children(item: Dataset, children: Iterable[Dataset]) -> Dataset:
    """Attach ``children`` (none: no Content Sequence at all, as PS3.3 asks)."""
    kids = list(children)
    if kids:
        item.ContentSequence = DicomSequence(kids)
    return item


def container(relationship: str | None, concept: Code, children: Iterable[Dataset] = ()) -> Dataset:
    item = _item(relationship, "CONTAINER", concept)
    item.ContinuityOfContent = "SEPARATE"
    return with_children(item, children)


def code(
    relationship: str, concept: Code, value: Code, children: Iterable[Dataset] = ()
) -> Dataset:
    item = _item(relationship, "CODE", concept)
    item.ConceptCodeSequence = [code_item(value)]
    return with_children(item, children)


def text(relationship: str, concept: Code, value: str) -> Dataset:
    item = _item(relationship, "TEXT", concept)
    item.TextValue = value
    return item


def num(relationship: str, concept: Code, value: float, unit: Code) -> Dataset:
    """A NUM item; the value as a DS of at most 16 characters."""
    item = _item(relationship, "NUM", concept)
    measured = Dataset()
    measured.NumericValue = format_number_as_ds(float(value))
    measured.MeasurementUnitsCodeSequence = [code_item(unit)]
    item.MeasuredValueSequence = [measured]
    return item


def date(relationship: str, concept: Code, value: str) -> Dataset:
    item = _item(relationship, "DATE", concept)
    item.Date = value
    return item


def time(relationship: str, concept: Code, value: str) -> Dataset:
    item = _item(relationship, "TIME", concept)
    item.Time = value
    return item


def image(
    relationship: str, sop_class: str, sop_instance: str, children: Iterable[Dataset] = ()
) -> Dataset:
    """An IMAGE item without a concept name, as TID 4020 lists images."""
    item = _item(relationship, "IMAGE", None)
    reference = Dataset()
    reference.ReferencedSOPClassUID = sop_class
    reference.ReferencedSOPInstanceUID = sop_instance
    item.ReferencedSOPSequence = [reference]
    return with_children(item, children)


def scoord(
    relationship: str,
    concept: Code,
    graphic_type: str,
    points: Sequence[float],
    children: Iterable[Dataset] = (),
) -> Dataset:
    """A SCOORD item: ``points`` are (column, row) pairs in image pixels (PS3.3 C.18.6.1.1)."""
    item = _item(relationship, "SCOORD", concept)
    item.GraphicType = graphic_type
    item.GraphicData = [float(value) for value in points]
    return with_children(item, children)


def by_reference(relationship: str, position: Sequence[int]) -> Dataset:
    """A relationship to the item at ``position`` (root is ``[1]``), PS3.3 C.17.3.2.5."""
    item = Dataset()
    item.RelationshipType = relationship
    item.ReferencedContentItemIdentifier = [int(index) for index in position]
    return item
