"""No element value in a reason, a log line, an event or a result, unless from a closed set.

A misfiled element can carry a patient's name. Here one real mammogram per text
attribute that ingest reads is written with a patient's name in that attribute
(or, for a number or a UID, in its place in the file's bytes), and the daemon
takes them all. Then every log line, every event and result on the broker and
every quarantine reason file is searched for the name.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from daemons import start_daemon, wait_for
from mammo_files import build
from pydicom import config as pydicom_config
from pydicom.dataset import Dataset, FileDataset
from support import Broker, Subscriber

__all__ = ["start_daemon"]  # a fixture

NAME = "DOEJANE^MARY"
#: written in place of a value that pydicom would refuse to encode, then patched to NAME
NUMBER = "123456789012"

Edit = Callable[[FileDataset], Any]


def _set(keyword: str, value: str = NAME, *, drop: tuple[str, ...] = ()) -> Edit:
    def edit(dataset: FileDataset) -> None:
        for other in drop:
            if other in dataset:
                delattr(dataset, other)
        setattr(dataset, keyword, value)

    return edit


def _view_code(field: str, *, drop: tuple[str, ...]) -> Edit:
    def edit(dataset: FileDataset) -> None:
        for other in drop:
            if other in dataset:
                delattr(dataset, other)
        item = Dataset()
        item.CodeValue = NAME if field == "CodeValue" else "399162004"
        item.CodingSchemeDesignator = "SCT"
        item.CodeMeaning = NAME if field == "CodeMeaning" else "cranio-caudal"
        dataset.ViewCodeSequence = [item]

    return edit


def _frame_laterality(dataset: FileDataset) -> None:
    for keyword in ("ImageLaterality", "PatientOrientation"):
        delattr(dataset, keyword)
    anatomy = Dataset()
    anatomy.FrameLaterality = NAME
    group = Dataset()
    group.FrameAnatomySequence = [anatomy]
    dataset.SharedFunctionalGroupsSequence = [group]


def _meta(keyword: str) -> Edit:
    def edit(dataset: FileDataset) -> None:
        setattr(dataset.file_meta, keyword, NAME)

    return edit


#: attribute -> the edit that puts the name there (text VRs directly; numbers by patching)
TEXT_EDITS: dict[str, Edit] = {
    "Modality": _set("Modality"),
    "SOPClassUID": _set("SOPClassUID"),
    "MediaStorageSOPClassUID": _meta("MediaStorageSOPClassUID"),
    "SOPInstanceUID": _set("SOPInstanceUID"),
    "StudyInstanceUID": _set("StudyInstanceUID"),
    "PresentationIntentType": _set("PresentationIntentType"),
    "PhotometricInterpretation": _set("PhotometricInterpretation"),
    "ImageLaterality": _set("ImageLaterality", drop=("PatientOrientation",)),
    "Laterality": _set("Laterality", drop=("ImageLaterality", "PatientOrientation")),
    "ViewPosition": _set("ViewPosition", drop=("PatientOrientation",)),
    "PatientOrientation": _set("PatientOrientation", drop=("ViewPosition", "ImageLaterality")),
    "ViewCodeSequence.CodeValue": _view_code("CodeValue", drop=("ViewPosition",)),
    "ViewCodeSequence.CodeMeaning": _view_code(
        "CodeMeaning", drop=("ImageLaterality", "PatientOrientation")
    ),
    "FrameLaterality": _frame_laterality,
    "PresentationLUTShape": _set("PresentationLUTShape"),
    "VOILUTFunction": _set("VOILUTFunction"),
    "AccessionNumber": _set("AccessionNumber"),
}
NUMBER_EDITS: dict[str, Edit] = {
    keyword: _set(keyword, NUMBER)
    for keyword in (
        "NumberOfFrames",
        "RescaleSlope",
        "RescaleIntercept",
        "WindowCenter",
        "WindowWidth",
    )
}


def write_with_name(folder: Path, attribute: str, edit: Edit) -> Path:
    path = build(folder / f"{attribute}.dcm", edit=edit)
    data = path.read_bytes()
    if attribute in NUMBER_EDITS:
        assert data.count(NUMBER.encode()) == 1
        data = data.replace(NUMBER.encode(), NAME.encode())
    path.write_bytes(data)
    return path


def write_transfer_syntax_named(folder: Path) -> Path:
    """The file meta's Transfer Syntax UID replaced by the name, same length."""
    path = build(folder / "TransferSyntaxUID.dcm")
    data = path.read_bytes()
    explicit = b"1.2.840.10008.1.2.1\0"
    assert data.count(explicit) == 1
    path.write_bytes(data.replace(explicit, NAME.encode().ljust(len(explicit), b"\0")))
    return path


@pytest.fixture
def named_files(tmp_path: Path) -> list[Path]:
    folder = tmp_path / "made"
    folder.mkdir()
    settings = pydicom_config.settings
    previous = settings.reading_validation_mode, settings.writing_validation_mode
    settings.reading_validation_mode = settings.writing_validation_mode = pydicom_config.IGNORE
    try:
        files = [
            write_with_name(folder, attribute, edit)
            for attribute, edit in {**TEXT_EDITS, **NUMBER_EDITS}.items()
        ]
    finally:
        settings.reading_validation_mode, settings.writing_validation_mode = previous
    return [*files, write_transfer_syntax_named(folder)]


def test_a_patients_name_in_any_attribute_ingest_reads_is_never_echoed(
    broker: Broker, tmp_path: Path, named_files: list[Path], start_daemon: Any
) -> None:
    everything = Subscriber(broker.port, ["edge/#"])
    daemon = start_daemon(broker.port, study={"quiet_s": 1}, log={"level": "DEBUG"})
    export = tmp_path / "export"
    for path in named_files:
        path.rename(export / path.name.replace(".dcm", ""))
    messages: list[tuple[str, bytes]] = []

    def settled() -> bool:
        while not everything.messages.empty():
            topic, payload, _retain = everything.messages.get_nowait()
            messages.append((topic, payload))
        healths = [payload for topic, payload in messages if topic.endswith("/health")]
        if not healths:
            return False
        counters = json.loads(healths[-1])["counters"]
        handled = sum(counters[key] for key in ("processed", "quarantined", "skipped"))
        results = sum(topic.endswith("/results") for topic, _ in messages)
        return handled == len(named_files) and results == counters["processed"]

    wait_for(settled, 180, "every file handled and every study published", daemon)
    daemon.stop()
    everything.close()

    needle = NAME.encode()
    for part in (b"DOEJANE", b"MARY"):
        assert part not in daemon.log().encode(), _lines_with(daemon.log(), part)
    reasons = list((tmp_path / "state" / "quarantine").glob("*.reason.txt"))
    assert reasons, "nothing was quarantined: the test proves nothing"
    for reason in reasons:
        assert needle.split(b"^")[0] not in reason.read_bytes(), reason.read_text()
    results = [payload for topic, payload in messages if topic.endswith("/results")]
    assert results, "nothing was scored: the test proves nothing"
    for topic, payload in messages:
        if topic.endswith("/results"):
            document = json.loads(payload)
            # The accession number is the result's link to the PACS order: it is part
            # of the result by design (edge.result/1), and nowhere else.
            document.pop("accession", None)
            payload = json.dumps(document).encode()
        assert b"DOEJANE" not in payload, (topic, payload[:2000])


def _lines_with(log: str, part: bytes) -> str:
    return "\n".join(line for line in log.splitlines() if part.decode() in line)[:4000]
