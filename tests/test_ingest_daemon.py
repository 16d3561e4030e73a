"""The daemon with hostile files in its watch folder: each quarantined, and it keeps serving.

A real daemon process, a real broker, real files. Then a real study under odd
file names goes through, and the same study sent again is counted as duplicates.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pydicom
from mammo_files import build
from support import Subscriber

PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"


def write_hostile_files(
    export: Path, outside: Path, study_files: dict[str, Path]
) -> dict[str, str]:
    """Drop one file of each hostile kind; return name -> the reason expected for it."""
    expected = {}
    (export / "empty").touch()
    expected["empty"] = "empty"
    (export / "notes.txt").write_text("a note, not a mammogram\n" * 50)
    expected["notes.txt"] = "not_dicom"
    shutil.copy(PYDICOM_FILES / "dicomdirtests" / "DICOMDIR", export / "DICOMDIR")
    expected["DICOMDIR"] = "dicomdir"
    data = study_files["lcc"].read_bytes()
    (export / "cut\nin half.dcm").write_bytes(data[: len(data) // 2])
    expected["cut\nin half.dcm"] = "truncated"

    def huge(ds: pydicom.Dataset) -> None:
        ds.Rows = ds.Columns = 60000

    build(outside / "huge.dcm", edit=huge)
    shutil.move(outside / "huge.dcm", export / "huge.dcm")
    expected["huge.dcm"] = "too_large"

    def blobs(ds: pydicom.Dataset) -> None:
        block = ds.private_block(0x0009, "EDGE TEST", create=True)
        for index in range(96):
            block.add_new(index, "OB", bytes(1 << 20))

    build(outside / "bomb.dcm", edit=blobs, encoding="deflated")
    shutil.move(outside / "bomb.dcm", export / "bomb.dcm")
    expected["bomb.dcm"] = "deflate_bomb"
    build(outside / "nouid.dcm", edit=lambda ds: delattr(ds, "SOPInstanceUID"))
    shutil.move(outside / "nouid.dcm", export / "nouid.dcm")
    expected["nouid.dcm"] = "missing_tag"
    (export / "link.dcm").symlink_to(study_files["rcc"])
    expected["link.dcm"] = "symlink"
    locked = outside / "locked.dcm"
    shutil.copy(study_files["rmlo"], locked)
    locked.chmod(0)
    shutil.move(locked, export / "locked.dcm")
    expected["locked.dcm"] = "unreadable"
    return expected


def test_hostile_files_are_quarantined_and_the_daemon_keeps_serving(
    daemon_factory: Any, subscriber: Subscriber, study_files: dict[str, Path], tmp_path: Path
) -> None:
    daemon = daemon_factory()
    export = tmp_path / "export"
    outside = tmp_path / "outside"
    outside.mkdir()
    expected = write_hostile_files(export, outside, study_files)
    wanted: dict[str, int] = {}
    for reason in expected.values():
        wanted[reason] = wanted.get(reason, 0) + 1

    health = subscriber.wait_health(
        lambda h: h["counters"].get("quarantined", 0) >= len(expected), timeout=90
    )
    assert health["counters"]["quarantined_by_reason"] == wanted
    reasons = sorted((tmp_path / "state" / "quarantine").glob("*.reason.txt"))
    assert len(reasons) == len(expected)
    assert all(len(path.read_text().splitlines()) == 5 for path in reasons)
    assert study_files["rcc"].is_file()  # the symlink's target is untouched
    assert not any(export.iterdir())

    # Still serving: a real study, under names with spaces, a newline, non-ASCII, no extension.
    names = {"lcc": "L CC", "lmlo": "L\nMLO", "rcc": "Müller_右", "rmlo": "rmlo"}
    for view, path in study_files.items():
        shutil.copy(path, outside / names[view])
        os.replace(outside / names[view], export / names[view])
    result = subscriber.next("/results", 90)
    assert isinstance(result, dict)
    assert len(result["images"]) == 4
    assert result["missing_views"] == []
    assert daemon.alive()
    assert "Müller" not in daemon.log()


def test_an_image_already_scored_is_counted_as_a_duplicate_not_scored_again(
    daemon_factory: Any, subscriber: Subscriber, study_files: dict[str, Path], tmp_path: Path
) -> None:
    daemon_factory()
    export = tmp_path / "export"
    for path in study_files.values():
        shutil.copy(path, export / path.name)
    first = subscriber.next("/results", 90)
    assert isinstance(first, dict)
    resent = export / "again"
    resent.mkdir()
    for path in study_files.values():
        shutil.copy(path, resent / path.name)
    health = subscriber.wait_health(lambda h: h["counters"].get("duplicates", 0) >= 4)
    assert health["counters"]["duplicates"] == 4
    assert health["counters"]["processed"] == 4
    assert health["counters"].get("quarantined", 0) == 0
