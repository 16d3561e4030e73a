"""The whole appliance, for real: a daemon process, a mosquitto broker, real mammograms."""

from __future__ import annotations

import json
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import jsonschema
import pydicom
import pydicom.data
import yaml
from support import DEMO_BUNDLE, Subscriber

SCHEMA = json.loads((Path(__file__).parents[1] / "edge/schemas/result.schema.json").read_text())
EXPECTED_VIEWS = {
    "lcc": ("L", "CC"),
    "lmlo": ("L", "MLO"),
    "rcc": ("R", "CC"),
    "rmlo": ("R", "MLO"),
}


def test_four_view_study_gives_one_valid_result(
    daemon_factory: Any, subscriber: Subscriber, study_files: dict[str, Path], tmp_path: Path
) -> None:
    daemon = daemon_factory()
    assert subscriber.next("/status", 10) == b"online"
    export = tmp_path / "export" / "incoming"
    export.mkdir()
    for path in study_files.values():
        shutil.copy(path, export / path.name)

    result = subscriber.next("/results", 60)
    assert isinstance(result, dict)
    jsonschema.validate(result, SCHEMA)

    sops = {
        name: str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID)
        for name, p in study_files.items()
    }
    by_sop = {image["sop_uid"]: image for image in result["images"]}
    assert set(by_sop) == set(sops.values())
    for name, sop in sops.items():
        assert (by_sop[sop]["laterality"], by_sop[sop]["view"]) == EXPECTED_VIEWS[name]
    assert result["missing_views"] == []
    assert result["closed_by"] == "complete"
    assert result["study"]["score"] == max(i["score"] for i in result["images"])
    for side in ("L", "R"):
        side_scores = [i["score"] for i in result["images"] if i["laterality"] == side]
        assert result["breasts"][side]["score"] == max(side_scores)

    manifest = yaml.safe_load((DEMO_BUNDLE / "manifest.yaml").read_text())
    assert result["model"]["sha256"] == manifest["files"][manifest["model"]]
    assert result["model"]["version"] == str(manifest["version"])
    assert result["model"]["backend"] == "onnxruntime"
    assert result["study"]["threshold"] == manifest["threshold"]
    # No patient identifiers leave the box, in the message or in the log.
    assert "TEST^" not in json.dumps(result)
    assert "TEST^" not in daemon.log()

    daemon.stop()
    assert subscriber.next("/status", 10) == b"offline"


def test_killed_daemon_is_reported_offline_by_the_broker(
    daemon_factory: Any, subscriber: Subscriber
) -> None:
    daemon = daemon_factory()
    assert subscriber.next("/status", 10) == b"online"
    daemon.stop(signal.SIGKILL)
    # The last will, sent by the broker once the keep-alive lapses or the socket drops.
    assert subscriber.next("/status", 60) == b"offline"


def test_slowly_written_files_are_processed_once_and_complete(
    daemon_factory: Any, subscriber: Subscriber, study_files: dict[str, Path], tmp_path: Path
) -> None:
    daemon_factory()
    export = tmp_path / "export"
    names = sorted(study_files)
    # Two views written in chunks over two seconds through one open file,
    # two reopened for every chunk (a writer that appends).
    for index, name in enumerate(names):
        data = study_files[name].read_bytes()
        chunks = [data[i : i + len(data) // 8 + 1] for i in range(0, len(data), len(data) // 8 + 1)]
        target = export / f"{name}.dcm"
        if index < 2:
            with target.open("wb") as stream:
                for chunk in chunks:
                    stream.write(chunk)
                    stream.flush()
                    time.sleep(2.0 / len(chunks))
        else:
            for chunk in chunks:
                with target.open("ab") as stream:
                    stream.write(chunk)
                time.sleep(2.0 / len(chunks))

    result = subscriber.next("/results", 60)
    assert isinstance(result, dict)
    assert len(result["images"]) == 4
    assert result["missing_views"] == []
    health = subscriber.wait_health(lambda h: h["counters"]["processed"] >= 4)
    assert health["counters"]["processed"] == 4
    assert health["counters"]["quarantined"] == 0
    assert health["counters"]["duplicates"] == 0
    assert not list((tmp_path / "state" / "quarantine").iterdir())


def test_non_mammogram_is_skipped_and_truncated_file_quarantined(
    daemon_factory: Any, subscriber: Subscriber, study_files: dict[str, Path], tmp_path: Path
) -> None:
    daemon = daemon_factory()
    export = tmp_path / "export"
    ct = Path(pydicom.data.get_testdata_file("CT_small.dcm"))  # type: ignore[arg-type]
    shutil.copy(ct, export / "ct.dcm")
    data = study_files["lcc"].read_bytes()
    (export / "truncated.dcm").write_bytes(data[: len(data) // 2])

    health = subscriber.wait_health(
        lambda h: h["counters"]["quarantined"] >= 1 and h["counters"]["skipped"] >= 1
    )
    assert health["counters"]["skipped_by_reason"] == {"not_mg": 1}
    assert health["counters"]["quarantined_by_reason"] == {"truncated": 1}
    quarantine = tmp_path / "state" / "quarantine"
    reasons = list(quarantine.glob("*.reason.txt"))
    assert len(reasons) == 1
    assert "reason: truncated" in reasons[0].read_text()
    assert not (export / "truncated.dcm").exists()
    assert (export / "ct.dcm").exists()  # skipped files are left alone

    # The daemon is still serving: a real study goes through afterwards.
    for path in study_files.values():
        shutil.copy(path, export / path.name)
    result = subscriber.next("/results", 60)
    assert isinstance(result, dict)
    assert len(result["images"]) == 4
    assert daemon.alive()


def test_incomplete_study_is_published_after_quiet_period_with_missing_views(
    daemon_factory: Any, subscriber: Subscriber, study_files: dict[str, Path], tmp_path: Path
) -> None:
    daemon_factory(study={"quiet_s": 1.5})
    export = tmp_path / "export"
    for name in ("lcc", "lmlo", "rcc"):
        shutil.copy(study_files[name], export / f"{name}.dcm")
    result = subscriber.next("/results", 60)
    assert isinstance(result, dict)
    jsonschema.validate(result, SCHEMA)
    assert result["missing_views"] == ["RMLO"]
    assert result["closed_by"] == "quiet"
    assert len(result["images"]) == 3


def test_files_already_in_the_folder_at_start_up_are_taken(
    broker: Any,
    subscriber: Subscriber,
    study_files: dict[str, Path],
    tmp_path: Path,
    daemon_factory: Any,
) -> None:
    export = tmp_path / "export"
    export.mkdir()
    for path in study_files.values():
        shutil.copy(path, export / path.name)
    daemon_factory()
    result = subscriber.next("/results", 60)
    assert isinstance(result, dict)
    assert len(result["images"]) == 4


def test_file_written_under_temporary_name_is_taken_at_rename(
    daemon_factory: Any,
    subscriber: Subscriber,
    study_files: dict[str, Path],
    tmp_path: Path,
) -> None:
    daemon_factory()
    export = tmp_path / "export"
    for path in study_files.values():
        partial = export / f"{path.stem}.part"
        shutil.copy(path, partial)
        partial.rename(export / path.stem)  # PACS exports often have no extension
    result = subscriber.next("/results", 60)
    assert isinstance(result, dict)
    assert len(result["images"]) == 4
