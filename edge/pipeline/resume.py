"""What a restarted daemon takes back from its journal before it looks at the folder.

Open studies are rebuilt from their journalled scores (and go out at once where
they are complete or quiet); files taken but not scored are not resubmitted here:
they are still in the watch folder, and the watcher's start-up scan hands them on
again. Those that have left the folder meanwhile are noted as gone.
"""

from __future__ import annotations

import logging
from pathlib import Path

from edge.errors import JournalError
from edge.health.incidents import Incidents
from edge.journal import Journal
from edge.pipeline.results import ResultJournal
from edge.pipeline.shadow_study import JournalledResult, shadow_result
from edge.pipeline.study import StudyAssembler

log = logging.getLogger(__name__)


def resume_from_journal(
    journal: Journal, assembler: StudyAssembler, results: ResultJournal, incidents: Incidents
) -> None:
    """Rebuild open studies from journalled scores; forget files that vanished."""
    unfinished = journal.unfinished_files()
    for record in unfinished:
        if not Path(record.path).exists():
            _note_gone(journal, incidents, Path(record.path))
    scores = journal.open_study_scores()
    # Before the studies close: a restored study's companion is made of these.
    results.companions.restore(journal.open_shadow_scores())
    for result in assembler.restore(scores):
        results.assembled(result)
    _companions_not_journalled(journal, results)
    if unfinished or scores:
        log.info(
            "resuming: %d scored images of open studies, %d files not yet scored",
            len(scores),
            len(unfinished),
        )


def _companions_not_journalled(journal: Journal, results: ResultJournal) -> None:
    """Make the companions the daemon stopped before journalling (between its result's
    commit and the last shadow score, a few milliseconds), from the journalled scores."""
    for pending in journal.unaccompanied():
        engine = pending.images[0].engine
        shadow = shadow_result(pending.images, pending.shadows)
        if shadow is None:
            continue
        journalled = JournalledResult(
            pending.seq, pending.id, pending.study_uid, engine, pending.images
        )
        log.info("result seq %d: its shadow companion made again after the restart", pending.seq)
        results.companion(shadow, journalled)


def _note_gone(journal: Journal, incidents: Incidents, path: Path) -> None:
    try:
        journal.set_file_state(path, "gone", "missing_at_start")
    except JournalError as exc:
        incidents.journal_failed("ingest", exc)
