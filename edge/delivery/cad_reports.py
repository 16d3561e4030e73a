"""Makes the CAD SR of each study result and puts it in the DICOM outbox (and folder).

In two steps around the journal's transaction that gives the result its ``seq``
and ``id``: :meth:`CadReports.prepare` reads the source images (outside the
journal's lock), :meth:`CadReports.commit` builds the SR with the UID derived
from the result's ``id`` and keeps it durably before that transaction commits,
so a result that names an SR is never without it, and a rebuild of the same
result after a crash gives the same UID (stored once by the outbox).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edge.config import Config
from edge.delivery.dicom_store import DicomStore, SrDocument
from edge.dicom import cad_sr
from edge.dicom.cad_tree import Algorithm
from edge.dicom.sources import SourceStudy, read_sources
from edge.types import EngineInfo, StudyResult

log = logging.getLogger(__name__)

AlgorithmOf = Callable[[EngineInfo, float], Algorithm]


@dataclass(frozen=True)
class PreparedSr:
    result: StudyResult
    sources: SourceStudy


class CadReports:
    def __init__(self, config: Config, store: DicomStore, algorithm_of: AlgorithmOf) -> None:
        self._config = config
        self._store = store
        self._algorithm_of = algorithm_of
        self._destinations = [d.name for d in config.dicom.destinations]

    def prepare(self, result: StudyResult) -> PreparedSr:
        """Read what the SR copies from the images.

        Raises
        ------
        SourceError
            When an image cannot be read again.
        """
        return PreparedSr(result, read_sources(result.images))

    def commit(self, prepared: PreparedSr, result_id: str) -> str:
        """Build the result's SR, keep it for every destination; return its SOP Instance UID.

        Raises
        ------
        JournalError
            When the DICOM outbox cannot be written.
        """
        sop_uid = cad_sr.sr_uid(result_id)
        document = self._document(prepared, sop_uid, result_id)
        if self._store.queue(document, self._destinations):
            self._write_folder(document)
        return sop_uid

    def _document(self, prepared: PreparedSr, sop_uid: str, result_id: str) -> SrDocument:
        result = prepared.result
        config = self._config
        series = cad_sr.series_uid(config.site, config.device, result.study_uid)
        latest = self._store.latest(result.study_uid)
        if latest is not None and latest[2] == sop_uid:  # the same result built again
            version = cad_sr.Version(latest[0])
        elif latest is not None:
            version = cad_sr.Version(latest[0] + 1, (latest[1], latest[2]))
        else:
            version = cad_sr.Version(1)
        algorithm = self._algorithm_of(result.engine, result.threshold)
        dataset = cad_sr.build(
            result, prepared.sources, algorithm,
            sop_uid=sop_uid, series=series, version=version, station=config.device,
        )  # fmt: skip
        return SrDocument(
            sop_uid, result.study_uid, series, version.number, result_id, cad_sr.encode(dataset)
        )

    def _write_folder(self, document: SrDocument) -> None:
        """``dicom.sr.folder``: the file appears whole (written aside, then renamed)."""
        folder = self._config.dicom.sr.folder
        if folder is None:
            return
        target = folder / f"{document.sop_uid}.dcm"
        partial = folder / f".{document.sop_uid}.part"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            _write_synced(partial, document.payload)
            os.replace(partial, target)
        except OSError as exc:
            log.error("cannot write the SR into dicom.sr.folder %s: %s", folder, exc.strerror)


def _write_synced(path: Path, payload: bytes) -> None:
    with path.open("wb") as stream:
        stream.write(payload)
        stream.flush()
        os.fsync(stream.fileno())
