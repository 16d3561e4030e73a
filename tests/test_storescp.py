"""A real DICOM sender: dcmtk's storescu sends a study to storescp, which writes the export.

storescp is the receiving side of a PACS export: it writes each received image
into the watched folder under its own file name (``SC.<SOP Instance UID>``, no
extension), as the modality's transfer syntax (RLE here, accepted as is).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from dicom_senders import dcmtk
from support import Subscriber, free_port, wait_for_port

pytestmark = pytest.mark.skipif(
    dcmtk("storescp") is None or dcmtk("storescu") is None,
    reason="dcmtk's storescp/storescu not installed (scripts/bootstrap installs dcmtk)",
)


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """storescp on a free port, writing into the daemon's watch folder."""
    export = tmp_path / "export" / "pacs"
    export.mkdir(parents=True)
    port = free_port()
    with (tmp_path / "storescp.log").open("ab") as log:
        process = subprocess.Popen(
            # +xr: accept RLE as sent; default file names: SC.<uid>, no extension.
            [
                str(dcmtk("storescp")),
                "--output-directory",
                str(export),
                "+xr",
                "-aet",
                "EDGE",
                str(port),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_port(port)
        yield port, export
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_a_study_sent_by_storescu_is_scored(
    daemon_factory: Any,
    subscriber: Subscriber,
    study_files: dict[str, Path],
    storescp: tuple[int, Path],
) -> None:
    daemon_factory()
    port, export = storescp
    sent = subprocess.run(
        [
            str(dcmtk("storescu")),
            "-aec",
            "EDGE",
            "-xr",
            "127.0.0.1",
            str(port),
            *map(str, study_files.values()),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert sent.returncode == 0, sent.stderr

    result = subscriber.next("/results", 90)
    assert isinstance(result, dict)
    sops = {
        str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID)
        for p in study_files.values()
    }
    assert {image["sop_uid"] for image in result["images"]} == sops
    assert result["missing_views"] == []

    received = sorted(export.iterdir())
    assert len(received) == 4
    # Named SC.<SOP Instance UID>: no .dcm extension for the watcher to rely on.
    assert all(path.name.startswith("SC.") for path in received)
    assert not any(path.name.lower().endswith(".dcm") for path in received)
    meta = pydicom.dcmread(received[0], stop_before_pixels=True).file_meta
    assert meta.TransferSyntaxUID == pydicom.uid.RLELossless
