"""The journal on a real SQLite database: files, scores, results, the outbox, a full disk."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from journal_builders import (
    ENGINE,
    TOPIC,
    four_views,
    image_score,
    incoming,
    journalled,
    score_all,
    study_result,
)
from tmpfs import fill, small_state_dir

__all__ = ["small_state_dir"]  # a fixture

from edge.errors import JournalError
from edge.journal import Journal
from edge.pipeline.study import StudyAssembler


def test_seq_increases_by_one_and_survives_reopening(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path, device="box-1")
    seqs = []
    for n in range(3):
        scores = four_views(tmp_path, f"1.2.{n}")
        score_all(journal, scores)
        seqs.append(journalled(journal, study_result(scores)))
    journal.close()
    journal = Journal.open(tmp_path, device="box-1")
    scores = four_views(tmp_path, "1.2.9")
    score_all(journal, scores)
    seqs.append(journalled(journal, study_result(scores)))
    assert seqs == [1, 2, 3, 4]
    # Another device name has its own counter.
    other = Journal.open(tmp_path, device="box-2")
    scores = four_views(tmp_path, "1.2.10")
    score_all(other, scores)
    assert journalled(other, study_result(scores)) == 1


def test_outbox_is_bounded_and_the_rest_waits_in_order(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path, device="box-1", outbox_max=3)
    for n in range(5):
        scores = four_views(tmp_path, f"1.3.{n}")
        score_all(journal, scores)
        journalled(journal, study_result(scores))
    outbox = journal.outbox_after(0)
    assert [row.seq for row in outbox] == [1, 2, 3]
    backlog = journal.backlog()
    assert (backlog.outbox, backlog.waiting, backlog.last_seq) == (3, 2, 5)

    journal.acknowledge(outbox[0].entry)
    assert [row.seq for row in journal.outbox_after(0)] == [2, 3, 4]
    assert [row.seq for row in journal.outbox_after(outbox[-1].entry)] == [4]
    for row in journal.outbox_after(0):
        journal.acknowledge(row.entry)
    assert [row.seq for row in journal.outbox_after(0)] == [5]
    journal.acknowledge(journal.outbox_after(0)[0].entry)
    backlog = journal.backlog()
    assert (backlog.outbox, backlog.waiting) == (0, 0)
    recent = journal.recent_results(10)
    assert [r.seq for r in recent] == [5, 4, 3, 2, 1]
    assert all(r.delivered_at is not None for r in recent)
    # Every file of a delivered study is "published".
    assert journal.file_counts() == {"published": 20}


def test_payload_is_replayed_exactly_after_reopening(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path, device="box-1")
    scores = four_views(tmp_path, "1.4.1")
    score_all(journal, scores)
    journalled(journal, study_result(scores))
    before = journal.outbox_after(0)
    journal.close()
    after = Journal.open(tmp_path, device="box-1").outbox_after(0)
    assert after == before
    assert json.loads(after[0].payload)["seq"] == 1


def test_a_file_is_finished_only_at_the_same_size_and_mtime(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path, device="box-1")
    score = image_score(tmp_path / "a.dcm", sop_uid="1.5.1", study_uid="1.5")
    version = score.header.source
    assert journal.finished(version) is None
    journal.file_seen(version)
    assert journal.finished(version) is None  # seen, not scored: taken again after a crash
    assert [r.path for r in journal.unfinished_files()] == [str(version.path)]
    assert journal.claim_sop(version.path, "1.5.1", "1.5")
    journal.image_scored(score)
    record = journal.finished(version)
    assert record is not None and record.state == "scored"
    assert journal.unfinished_files() == []
    # The same path written again with other content is new work.
    assert journal.finished(incoming(version.path, size=2000)) is None


def test_a_sop_instance_uid_is_scored_once_even_across_restarts(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path, device="box-1")
    first, copy, later = (tmp_path / name for name in ("a.dcm", "copy.dcm", "later.dcm"))
    for path in (first, copy):
        journal.file_seen(incoming(path))
    assert journal.claim_sop(first, "1.6.1", "1.6")
    assert not journal.claim_sop(copy, "1.6.1", "1.6")  # while the first is in flight
    copy_record = journal.file(copy)
    assert copy_record is not None and copy_record.state == "duplicate"
    journal.image_scored(image_score(first, sop_uid="1.6.1", study_uid="1.6"))
    journal.close()

    journal = Journal.open(tmp_path, device="box-1")
    journal.file_seen(incoming(later))
    assert not journal.claim_sop(later, "1.6.1", "1.6")
    # The same file taken again after a crash keeps its claim.
    journal.file_seen(incoming(tmp_path / "b.dcm"))
    assert journal.claim_sop(tmp_path / "b.dcm", "1.6.2", "1.6")
    journal.file_seen(incoming(tmp_path / "b.dcm"))
    assert journal.claim_sop(tmp_path / "b.dcm", "1.6.2", "1.6")


def test_open_studies_are_rebuilt_from_scores_without_decoding(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path, device="box-1")
    scores = four_views(tmp_path, "1.7.1")
    score_all(journal, scores[:3])
    journal.close()

    journal = Journal.open(tmp_path, device="box-1")
    restored = journal.open_study_scores()
    assert [(s.header.sop_uid, s.header.laterality, s.header.view, s.score) for s in restored] == [
        (s.header.sop_uid, s.header.laterality, s.header.view, s.score) for s in scores[:3]
    ]
    assert restored[0].engine == scores[0].engine
    assert restored[0].timings_ms == scores[0].timings_ms
    assembler = StudyAssembler(30.0, lambda _engine: 0.5)
    assembler.serve(ENGINE)
    assert assembler.restore(restored) == []  # three views: stays open
    score_all(journal, scores[3:])
    assembler.arrived(scores[3].header)
    result = assembler.scored(journal.open_study_scores()[-1])
    assert result is not None and result.missing_views == ()
    journalled(journal, result)
    assert journal.open_study_scores() == []


def test_a_complete_study_found_at_restart_closes_at_once(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path, device="box-1")
    score_all(journal, four_views(tmp_path, "1.8.1"))
    assembler = StudyAssembler(30.0, lambda _e: 0.5)
    assembler.serve(ENGINE)
    (result,) = assembler.restore(journal.open_study_scores())
    assert result.closed_by == "complete"
    assert len(result.images) == 4


def test_an_open_study_of_an_engine_no_longer_serving_closes_at_once(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path, device="box-1")
    score_all(journal, four_views(tmp_path, "1.8.2")[:2])
    assembler = StudyAssembler(30.0, lambda _e: 0.5)
    assembler.serve(dataclasses.replace(ENGINE, version="2.0.0", sha256="cd" * 32))
    (result,) = assembler.restore(journal.open_study_scores())
    # Never scored by two engines: it goes out with the two views its engine scored.
    assert (result.closed_by, result.missing_views) == ("quiet", ("RCC", "RMLO"))
    assert result.engine == ENGINE
    assert assembler.open_studies == 0


def test_a_full_disk_fails_writes_loudly_and_keeps_what_was_written(
    tmp_path: Path, small_state_dir: Path
) -> None:
    journal = Journal.open(small_state_dir, device="box-1")
    scores = four_views(tmp_path, "1.9.1")
    score_all(journal, scores)
    journalled(journal, study_result(scores))
    filler = fill(small_state_dir)
    with pytest.raises(JournalError, match="full"):
        for n in range(200):  # every write grows the WAL until one cannot
            more = four_views(tmp_path, f"1.9.{n + 2}")
            score_all(journal, more)
            journal.record_result(study_result(more), TOPIC, lambda _seq: b"x" * 65536)
    assert journal.write_error is not None
    assert journal.outbox_after(0)[0].seq == 1  # what was journalled is still there
    filler.unlink()
    more = four_views(tmp_path, "1.9.999")
    score_all(journal, more)
    assert journalled(journal, study_result(more)) > 1
    assert journal.write_error is None
    journal.close()


def test_the_score_that_completes_a_study_is_journalled_in_its_result_s_commit(
    tmp_path: Path, small_state_dir: Path
) -> None:
    journal = Journal.open(small_state_dir, device="box-1")
    scores = four_views(tmp_path, "1.10.1")
    score_all(journal, scores[:3])
    last = scores[3]
    journal.file_seen(last.header.source)
    assert journal.claim_sop(last.header.source.path, last.header.sop_uid, "1.10.1")
    result = study_result(scores)

    def too_big(seq: int) -> tuple[str, bytes]:
        return f"id-{seq}", b"x" * (1 << 20)  # more than the full disk has

    filler = fill(small_state_dir)
    with pytest.raises(JournalError, match="full"):
        journal.record_result(result, TOPIC, too_big, completing=last)
    # All or nothing: the refused commit took the last image's score with it.
    assert [s.header.sop_uid for s in journal.open_study_scores()] == [
        "1.10.1.0",
        "1.10.1.1",
        "1.10.1.2",
    ]
    assert journal.finished(last.header.source) is None
    assert journal.outbox_after(0) == []

    filler.unlink()
    assert (
        journal.record_result(result, TOPIC, lambda seq: (f"id-{seq}", b"{}"), completing=last) == 1
    )
    assert journal.open_study_scores() == []  # all four belong to the result
    record = journal.finished(last.header.source)
    assert record is not None and record.state == "scored"
    journal.close()
