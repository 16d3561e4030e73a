"""The Mammography CAD SR of a real four-view study: valid, in the study, with its marks."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pydicom
import pytest
from dicom_checks import needs_validators, validate
from pydicom.dataset import Dataset

from edge.config import Config
from edge.delivery.cad_reports import CadReports
from edge.delivery.dicom_store import DicomStore
from edge.dicom import cad_sr
from edge.dicom.cad_tree import Algorithm
from edge.dicom.sources import SourceError, read_sources
from edge.journal import Journal
from edge.journal.schema import SCHEMA as database_schema
from edge.pipeline.ingest import read_header
from edge.pipeline.study import StudyAssembler
from edge.tools.samples import sample_cases, write_study
from edge.types import EngineInfo, Finding, ImageScore, IncomingFile, StudyResult

pytestmark = needs_validators

ENGINE = EngineInfo("demo", "1.0.0", "ab" * 32, "onnxruntime")
DEMO = Algorithm("demo", "1.0.0", "ab" * 32, 0.541, demonstration=True)
MARK = Finding(column=812.5, row=1403.25, radius=60.0, score=0.87)


def scored_study(
    folder: Path,
    *,
    marks: dict[str, tuple[Finding, ...]] | None = None,
    views: tuple[str, ...] = (),
) -> tuple[StudyResult, dict[str, Path]]:
    """A real study's result as the assembler makes it; ``views`` limits the views scored."""
    files = write_study(sample_cases()[0], folder, accession="ACC42", patient="SR^PATIENT")
    assembler = StudyAssembler(30, lambda engine: DEMO.threshold)
    assembler.serve(ENGINE)
    result = None
    for index, (view, path) in enumerate(sorted(files.items())):
        if views and view not in views:
            continue
        info = path.stat()
        incoming = IncomingFile(path, info.st_size, info.st_mtime_ns, time.monotonic(), "scan")
        header = read_header(incoming, max_pixels=10**9, accepts=None)
        assembler.arrived(header)
        findings = (marks or {}).get(view, ())
        result = assembler.scored(ImageScore(header, 0.2 + 0.2 * index, ENGINE, findings=findings))
    if result is None:
        (result,) = assembler.due(time.monotonic() + 60)
    return result, files


def written(result: StudyResult, folder: Path, **overrides: object) -> tuple[Path, Dataset]:
    options: dict[str, object] = {
        "sop_uid": cad_sr.sr_uid("0" * 32),
        "series": cad_sr.series_uid("clinic-1", "box-1", result.study_uid),
        "version": cad_sr.Version(1),
        "station": "box-1",
        **overrides,
    }
    dataset = cad_sr.build(result, read_sources(result.images), DEMO, **options)  # type: ignore[arg-type]
    path = folder / "sr.dcm"
    path.write_bytes(cad_sr.encode(dataset))
    return path, pydicom.dcmread(path)


def items(dataset: Dataset) -> list[Dataset]:
    """Every content item of the tree, depth first."""
    found = []
    for item in dataset.get("ContentSequence", []):
        found.append(item)
        found.extend(items(item))
    return found


def named(dataset: Dataset, meaning: str) -> list[Dataset]:
    return [
        item
        for item in items(dataset)
        if "ConceptNameCodeSequence" in item
        and item.ConceptNameCodeSequence[0].CodeMeaning == meaning
    ]


def value(item: Dataset) -> str:
    return str(item.ConceptCodeSequence[0].CodeMeaning)


def test_four_views_with_a_mark_give_a_valid_sr_in_the_study(tmp_path: Path) -> None:
    result, files = scored_study(tmp_path / "study", marks={"lcc": (MARK,)})
    path, sr = written(result, tmp_path)
    validate(path)

    source = pydicom.dcmread(files["lcc"], stop_before_pixels=True)
    assert sr.SOPClassUID == cad_sr.MAMMOGRAPHY_CAD_SR
    assert sr.Modality == "SR"
    assert sr.StudyInstanceUID == source.StudyInstanceUID
    assert sr.SeriesInstanceUID not in {
        pydicom.dcmread(p, stop_before_pixels=True).SeriesInstanceUID for p in files.values()
    }
    assert (sr.PatientName, sr.PatientID) == (source.PatientName, source.PatientID)
    assert sr.AccessionNumber == "ACC42"
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "4000"

    library = named(sr, "Image Library")[0].ContentSequence
    referenced = {image.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for image in library}
    sops = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in files.values()}
    assert referenced == sops
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0]
    assert {
        ref.ReferencedSOPInstanceUID
        for series in evidence.ReferencedSeriesSequence
        for ref in series.ReferencedSOPSequence
    } == sops

    assert value(named(sr, "CAD Processing and Findings Summary")[0]) == (
        "All algorithms succeeded; with findings"
    )
    (finding,) = named(sr, "Single Image Finding")
    (centre,) = named(finding, "Center")
    assert list(centre.GraphicData) == [MARK.column, MARK.row]
    assert centre.GraphicType == "POINT"
    (outline,) = named(finding, "Outline")
    assert list(outline.GraphicData) == [MARK.column, MARK.row, MARK.column + MARK.radius, MARK.row]
    # Both SCOORDs point at the image the mark was found on, in the library.
    lcc_index = [image.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for image in library]
    position = lcc_index.index(source.SOPInstanceUID) + 1
    for scoord in (centre, outline):
        assert list(scoord.ContentSequence[0].ReferencedContentItemIdentifier) == [1, 2, position]
    (certainty,) = named(finding, "Certainty of Finding")
    assert float(certainty.MeasuredValueSequence[0].NumericValue) == pytest.approx(87.0)
    (breast,) = named(sr, "Individual Impression/Recommendation")
    assert "left breast" in named(breast, "Impression Description")[0].TextValue


def test_scores_algorithm_and_operating_point_are_stated(tmp_path: Path) -> None:
    result, _ = scored_study(tmp_path / "study")
    path, sr = written(result, tmp_path)
    validate(path)
    overall = named(sr, "CAD Processing and Findings Summary")[0]
    assert value(overall) == "All algorithms succeeded; without findings"
    assert not named(sr, "Single Image Finding")
    certainty = named(overall, "Certainty of Impression")[0].MeasuredValueSequence[0]
    assert float(certainty.NumericValue) == pytest.approx(100 * result.score)
    impression = named(overall, "Impression Description")[0].TextValue
    for side, name in (("L", "left breast"), ("R", "right breast")):
        assert f"{name} {result.breasts[side].score:.3f}" in impression
    parameters = [item.TextValue for item in named(sr, "Algorithm Parameters")]
    assert f"model sha256 {ENGINE.sha256}" in parameters
    assert any("0.541" in text for text in parameters)
    assert {item.TextValue for item in named(sr, "Algorithm Name")} == {"demo"}
    assert {item.TextValue for item in named(sr, "Algorithm Version")} == {"1.0.0"}
    # A demonstration engine says so in the series and in the document.
    assert "NOT FOR CLINICAL USE" in sr.SeriesDescription
    assert impression.startswith("NOT FOR CLINICAL USE")


def test_a_study_missing_views_is_reported_partial(tmp_path: Path) -> None:
    result, _ = scored_study(tmp_path / "study", views=("lcc", "lmlo", "rcc"))
    assert result.missing_views == ("RMLO",)
    path, sr = written(result, tmp_path)
    validate(path)
    assert value(named(sr, "CAD Processing and Findings Summary")[0]) == (
        "Not all algorithms succeeded; without findings"
    )
    assert value(named(sr, "Summary of Detections")[0]) == "Partially Succeeded"
    assert len(named(sr, "Image Library")[0].ContentSequence) == 3


def test_a_study_scored_again_gives_a_new_version_of_its_sr(tmp_path: Path) -> None:
    result, _ = scored_study(tmp_path / "study", views=("lcc", "lmlo"))
    store = DicomStore.open(tmp_path)
    config = Config.model_validate(
        {"site": "c", "device": "d", "state_dir": tmp_path, "watch": {"dir": tmp_path},
         "engine": {}, "dicom": {"sr": {"folder": str(tmp_path / "out")}}}
    )  # fmt: skip
    reports = CadReports(config, store, lambda engine, threshold: DEMO)
    first = reports.commit(reports.prepare(result), "1" * 32)
    assert reports.commit(reports.prepare(result), "1" * 32) == first  # a rebuild: the same SR
    second = reports.commit(reports.prepare(result), "2" * 32)
    assert second != first
    old, new = (pydicom.dcmread(tmp_path / "out" / f"{uid}.dcm") for uid in (first, second))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        [f"{first}.dcm", f"{second}.dcm"]
    )
    assert (old.InstanceNumber, new.InstanceNumber) == (1, 2)
    assert new.SeriesInstanceUID == old.SeriesInstanceUID
    predecessor = new.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0]
    assert predecessor.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == first
    validate(tmp_path / "out" / f"{second}.dcm")
    store.close()


def test_an_image_gone_from_the_folder_is_a_named_failure(tmp_path: Path) -> None:
    result, files = scored_study(tmp_path / "study")
    files["rmlo"].unlink()
    with pytest.raises(SourceError, match="left the watch folder"):
        read_sources(result.images)


def test_a_study_rebuilt_after_a_restart_keeps_its_marks(tmp_path: Path) -> None:
    """The journal keeps each image's findings, so an SR made after a restart has them."""
    result, _ = scored_study(tmp_path / "study", marks={"lcc": (MARK,)}, views=("lcc",))
    journal = Journal.open(tmp_path, device="box-1")
    try:
        for image in result.images:
            journal.image_scored(image)
        (restored,) = journal.open_study_scores()
    finally:
        journal.close()
    assert restored.findings == (MARK,)


def test_a_journal_from_before_findings_gains_the_column(tmp_path: Path) -> None:
    before, _, after = database_schema.partition("    result_entry INTEGER,\n")
    old = before + "    result_entry INTEGER\n" + after.split("\n", 2)[2]  # the table without it
    assert "findings" not in old
    database = sqlite3.connect(tmp_path / "journal.sqlite3")
    database.executescript(old + "PRAGMA user_version = 1;")
    database.close()
    Journal.open(tmp_path, device="box-1").close()
    database = sqlite3.connect(tmp_path / "journal.sqlite3")
    columns = [row[1] for row in database.execute("PRAGMA table_info(images)")]
    database.close()
    assert columns[-1] == "findings"
