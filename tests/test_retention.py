"""Retention: the journal forgets old delivered results and files that have left the folder."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from daemons import wait_for
from journal_builders import four_views, incoming, journalled, read_journal, score_all, study_result
from support import Subscriber

from edge.journal import Journal
from edge.journal.retention import Retention
from edge.tools.samples import sample_cases, write_study

KEEP_S = 0.5


def test_old_delivered_results_and_departed_files_are_forgotten_and_nothing_else(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "export"
    folder.mkdir()
    (tmp_path / "state").mkdir()
    journal = Journal.open(tmp_path / "state", device="box-1")
    studies = {}
    for name in ("gone", "kept", "waiting", "open"):
        scores = four_views(folder, f"1.2.{name}")
        score_all(journal, scores)
        studies[name] = scores
    entries = {
        name: journalled(journal, study_result(studies[name]))
        for name in ("gone", "kept", "waiting")
    }
    for name in ("gone", "kept"):
        journal.acknowledge(entries[name])  # delivered; "waiting" never is
    for score in studies["kept"]:
        score.header.source.path.write_bytes(b"still in the watch folder")
    quarantined, skipped = folder / "truncated.dcm", folder / "ct.dcm"
    for path, state in ((quarantined, "quarantined"), (skipped, "skipped")):
        journal.file_seen(incoming(path))
        journal.set_file_state(path, state, "reason")
    skipped.write_bytes(b"a CT image the PACS also exports")
    time.sleep(KEEP_S + 0.1)

    forgotten = Retention(journal, KEEP_S / 86400, batch=3).run_pass()

    assert (forgotten.results, forgotten.images) == (2, 8)
    # the four files of "gone" and the quarantined file left the folder
    assert forgotten.files == 5
    assert journal.file(quarantined) is None
    assert journal.file(skipped) is not None
    for score in studies["gone"]:
        assert journal.file(score.header.source.path) is None
    # "kept"'s files are still there: taken again at a restart's scan, they are done
    for score in studies["kept"]:
        assert journal.finished(score.header.source) is not None
    # results waiting for the broker stay, however old, and so do open studies
    backlog = journal.backlog()
    assert (backlog.outbox, backlog.last_seq) == (1, 3)
    assert [s.header.sop_uid for s in journal.open_study_scores()] == [
        s.header.sop_uid for s in studies["open"]
    ]
    assert [r.seq for r in journal.recent_results()] == [3]
    # an image of a forgotten study sent again is scored as a new read
    again = studies["gone"][0].header
    journal.file_seen(again.source)
    assert journal.claim_sop(again.source.path, again.sop_uid, again.study_uid)
    journal.close()


def test_the_newest_result_is_kept_so_that_entries_only_grow(tmp_path: Path) -> None:
    """SQLite numbers a new row one above the highest: were the newest result forgotten,
    the next one would reuse its entry, and a publisher past that entry would skip it."""
    journal = Journal.open(tmp_path, device="box-1")
    entries = []
    for name in ("a", "b"):
        scores = four_views(tmp_path, f"1.2.{name}")
        score_all(journal, scores)
        journalled(journal, study_result(scores))
        (entry,) = [e.entry for e in journal.outbox_after(0)]
        journal.acknowledge(entry)
        entries.append(entry)
    time.sleep(KEEP_S + 0.1)
    forgotten = Retention(journal, KEEP_S / 86400).run_pass()
    assert forgotten.results == 1
    assert [r.seq for r in journal.recent_results()] == [2]
    scores = four_views(tmp_path, "1.2.c")
    score_all(journal, scores)
    journalled(journal, study_result(scores))
    assert [e.seq for e in journal.outbox_after(entries[-1])] == [3]
    journal.close()


def test_nothing_is_forgotten_within_the_retention_period(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path, device="box-1")
    scores = four_views(tmp_path, "1.2.3")
    score_all(journal, scores)
    journal.acknowledge(journalled(journal, study_result(scores)))
    forgotten = Retention(journal, 30.0).run_pass()
    assert not forgotten
    assert len(journal.recent_results()) == 1
    journal.close()


def test_the_daemon_forgets_a_study_once_its_files_are_cleaned_up_and_reads_it_again(
    daemon_factory: Any, subscriber: Subscriber, study_files: dict[str, Path], tmp_path: Path
) -> None:
    daemon = daemon_factory(journal={"keep_days": 2 / 86400})
    assert subscriber.next("/status", 10) == b"online"
    export = tmp_path / "export"
    other = write_study(sample_cases()[1], tmp_path / "other", accession="ACC0002")
    first = {}
    for files in (study_files, other):
        for path in files.values():
            shutil.copy(path, export / path.name)
        result = subscriber.next("/results", 60)
        assert isinstance(result, dict)
        first[result["study_uid"]] = result
    for path in export.iterdir():
        path.unlink()  # the clinic's own clean-up of the export folder
    # The newest result is kept whatever its age (the journal's numbering goes on from it).
    state = tmp_path / "state"
    wait_for(lambda: read_journal(state, Journal.file_counts) == {}, 30, "files forgotten", daemon)
    assert [r.seq for r in read_journal(state, Journal.recent_results)] == [2]
    assert "journal: forgot what is older than" in daemon.log()
    # The first study sent again: read again, a new result the hub stores beside the first.
    for path in study_files.values():
        shutil.copy(path, export / path.name)
    again = subscriber.next("/results", 60)
    assert isinstance(again, dict) and again["seq"] == 3
    earlier = first[again["study_uid"]]
    assert earlier["seq"] == 1
    assert again["id"] != earlier["id"]
    daemon.stop()
