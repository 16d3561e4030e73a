"""A journal damaged on disk: never a file's fault, recovered at start, nothing it held lost.

Every journal here is a real SQLite file, filled through :class:`Journal` and then
damaged the way a failing eMMC or a power cut damages one: pages overwritten with
garbage, the file cut in half.
"""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from journal_builders import TOPIC, four_views, journalled, score_all, study_result

from edge.config import load_config
from edge.errors import JournalDamaged, JournalError
from edge.journal import FILENAME, Journal
from edge.journal.recovery import check, open_journal
from edge.messages.result import encode, result_message
from edge.tools.doctor.journal import check_journal
from edge.types import StudyResult

PAGE = 4096
NOBODY = 65534


def filled_journal(state_dir: Path, tmp_path: Path, studies: int = 3, delivered: int = 1) -> None:
    """A journal with ``studies`` results, the first ``delivered`` acknowledged, one open study."""
    journal = Journal.open(state_dir, device="box-1")
    for n in range(studies):
        scores = four_views(tmp_path, f"1.2.{n}")
        score_all(journal, scores)
        journalled(journal, study_result(scores))
    for entry in journal.outbox_after(0)[:delivered]:
        journal.acknowledge(entry.entry)
    score_all(journal, four_views(tmp_path, "1.2.99")[:2])  # an open study: 2 of 4 views
    journal.close()
    _checkpoint(state_dir / FILENAME)


def _checkpoint(path: Path) -> None:
    """Write the WAL into the main file, as a daemon's clean stop does."""
    db = sqlite3.connect(path)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


def overwrite_root_pages(path: Path, *names: str) -> None:
    """Overwrite the root page of each named table or index with garbage."""
    db = sqlite3.connect(path)
    pages = [
        int(page)
        for (page,) in db.execute(
            f"SELECT rootpage FROM sqlite_master WHERE name IN ({','.join('?' * len(names))})",
            names,
        )
    ]
    db.close()
    with path.open("r+b") as stream:
        for page in pages:
            stream.seek((page - 1) * PAGE)
            stream.write(b"\xa5" * PAGE)


FILES_PAGES = (
    "files",
    "sqlite_autoindex_files_1",
    "files_by_sop",
    "files_by_state",
    "files_by_age",
)


def test_every_sqlite_error_class_becomes_the_journals_own(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    filled_journal(state, tmp_path)
    overwrite_root_pages(state / FILENAME, *FILES_PAGES)
    # Opened without the start's check, as a journal damaged under a running daemon.
    journal = Journal(state / FILENAME, device="box-1", outbox_max=1000)
    scores = four_views(tmp_path, "1.2.50")
    with pytest.raises(JournalDamaged, match="malformed"):
        journal.file_seen(scores[0].header.source)  # a write: DatabaseError, not Operational
    with pytest.raises(JournalDamaged):
        journal.file(scores[0].header.source.path)  # a read
    assert journal.damaged is not None and journal.failure is not None
    # A constraint (IntegrityError) is the journal's too: the same image scored twice.
    (tmp_path / "other").mkdir()
    fresh = Journal.open(tmp_path / "other", device="box-1")
    score_all(fresh, scores[:1])
    with pytest.raises(JournalError, match="UNIQUE"):
        fresh.image_scored(scores[0])
    assert fresh.write_error is not None and fresh.damaged is None
    fresh.close()
    journal.close()


def test_a_damaged_journal_is_kept_aside_and_replaced_with_what_it_still_held(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    filled_journal(state, tmp_path)
    original = (state / FILENAME).read_bytes()
    overwrite_root_pages(state / FILENAME, *FILES_PAGES)
    with pytest.raises(JournalDamaged):
        Journal.open(state, device="box-1")
    assert check(state) is not None

    journal, recovery = open_journal(state, device="box-1", outbox_max=1000)
    assert recovery is not None
    # Kept for forensics, byte for byte as it was found.
    kept = recovery.kept_at / FILENAME
    assert kept.is_file() and len(kept.read_bytes()) == len(original)
    assert "seq continues from 3" in (recovery.kept_at / "recovery.txt").read_text()
    assert (recovery.results, recovery.undelivered, recovery.images) == (3, 2, 14)
    # The two undelivered results go out as journalled, in order; seq goes on from 3.
    assert [(e.seq, e.result_id) for e in journal.outbox_after(0)] == [(2, "id-2"), (3, "id-3")]
    assert journal.backlog().last_seq == 3
    # The open study reopens; a scored image sent again is still a duplicate.
    assert len(journal.open_study_scores()) == 2
    again = four_views(tmp_path, "1.2.0")[0].header
    journal.file_seen(again.source)
    assert not journal.claim_sop(again.source.path, again.sop_uid, again.study_uid)
    scores = four_views(tmp_path, "1.2.7")
    score_all(journal, scores)
    assert journalled(journal, study_result(scores)) == 4
    assert check(state) is None
    journal.close()


def test_undelivered_results_survive_a_damaged_results_table_through_the_outbox(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    journal = Journal.open(state, device="box-1")
    for n in range(3):
        scores = four_views(tmp_path, f"1.3.{n}")
        score_all(journal, scores)
        result = study_result(scores)

        def real(seq: int, result: StudyResult = result) -> tuple[str, bytes]:
            message = result_message(result, site="clinic-1", device="box-1", seq=seq)
            return message["id"], encode(message)

        journal.record_result(result, TOPIC, real)
    sent = [(entry.seq, entry.result_id, entry.payload) for entry in journal.outbox_after(0)]
    journal.acknowledge(journal.outbox_after(0)[0].entry)
    journal.close()
    _checkpoint(state / FILENAME)
    overwrite_root_pages(state / FILENAME, "results", "sqlite_autoindex_results_1")

    journal, recovery = open_journal(state, device="box-1", outbox_max=1000)
    assert recovery is not None and recovery.undelivered == 2
    # Byte for byte what was journalled, same ids, same seq: the hub sees no change.
    assert [(e.seq, e.result_id, e.payload) for e in journal.outbox_after(0)] == sent[1:]
    assert journal.backlog().last_seq == 3
    journal.close()


def confirmed_journal(state_dir: Path, tmp_path: Path, confirmed: int) -> None:
    """A journal of 4 results, all acknowledged by the broker, the hub's confirmation
    up to ``confirmed``."""
    filled_journal(state_dir, tmp_path, studies=4, delivered=4)
    journal = Journal.open(state_dir, device="box-1")
    assert journal.confirm(confirmed, f"id-{confirmed}")
    journal.close()
    _checkpoint(state_dir / FILENAME)


def test_the_hubs_confirmation_survives_a_damaged_journal(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    confirmed_journal(state, tmp_path, confirmed=3)
    overwrite_root_pages(state / FILENAME, *FILES_PAGES)

    journal, recovery = open_journal(state, device="box-1", outbox_max=1000)
    assert recovery is not None and recovery.confirmed_seq == 3
    assert recovery.health()["confirmed_seq"] == 3
    assert "the hub's confirmation up to seq 3" in recovery.summary()
    # Health says what the hub holds; only seq 4 is sent again, and kept until confirmed.
    state_now = journal.unconfirmed()
    assert (state_now.last_seq, state_now.confirmed_seq, state_now.count) == (4, 3, 1)
    replay = journal.sendable_after(0, replay=(state_now.confirmed_seq, 4), limit=100)
    assert [entry.seq for entry in replay] == [4]
    assert journal.confirm(4, "id-4")  # the hub's next confirmation still fits
    journal.close()


def test_a_number_the_hub_confirmed_is_never_given_again_after_a_recovery(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    confirmed_journal(state, tmp_path, confirmed=4)
    # The numbering and every result lost: only the hub's confirmation says how far it went.
    overwrite_root_pages(state / FILENAME, "sequence", "results", "sqlite_autoindex_results_1")

    journal, recovery = open_journal(state, device="box-1", outbox_max=1000)
    assert recovery is not None and recovery.results == 0
    assert (recovery.last_seq, recovery.seq_from) == (4, "the hub's confirmation")
    scores = four_views(tmp_path, "1.2.8")
    score_all(journal, scores)
    assert journalled(journal, study_result(scores)) == 5  # not 1: the hub holds 1..4
    assert journal.unconfirmed().confirmed_seq == 4
    journal.close()


def test_a_journal_found_damaged_while_serving_is_recovered_even_if_quick_check_passes(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    filled_journal(state, tmp_path)
    overwrite_root_pages(state / FILENAME, *FILES_PAGES)
    journal = Journal(state / FILENAME, device="box-1", outbox_max=1000)
    with pytest.raises(JournalDamaged):
        journal.file(Path("/nowhere"))
    journal.close()
    # Mend the file the way no one should trust: the mark still says what was seen.
    (state / FILENAME).unlink()
    filled_journal(state, tmp_path / "again")
    assert "found damaged while serving" in (check(state) or "")
    journal, recovery = open_journal(state, device="box-1", outbox_max=1000)
    assert recovery is not None and "malformed" in recovery.problem
    assert (recovery.kept_at / "journal.sqlite3.damaged").is_file()
    assert check(state) is None
    journal.close()


def test_a_journal_cut_in_half_is_recovered_by_the_technicians_command(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    filled_journal(state, tmp_path, studies=6, delivered=2)
    path = state / FILENAME
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    config = tmp_path / "config.yaml"
    config.write_text(
        f"site: clinic-1\ndevice: box-1\nstate_dir: {state}\nwatch: {{dir: {tmp_path}}}\n"
        "engine: {bundle: engines/demo}\n"
    )
    status = _edge("status", "--config", str(config))
    assert status.returncode == 1 and "edge journal recover" in status.stderr, status
    assert "Traceback" not in status.stderr
    checked = _edge("journal", "check", "--config", str(config))
    assert checked.returncode == 1 and "DAMAGED" in checked.stdout, checked
    assert "edge journal recover" in checked.stdout
    doctor = check_journal(load_config(config))
    assert not doctor.ok and "edge journal recover" in doctor.fix

    as_root = os.geteuid() == 0
    if as_root:
        os.chown(state, NOBODY, NOBODY)  # the service's state_dir; the technician is root
    recovered = _edge("journal", "recover", "--config", str(config))
    assert recovered.returncode == 0, recovered.stderr
    assert "damaged journal moved to" in recovered.stdout
    # What root wrote is the service's, or it could not write its new journal.
    owners = {p.stat().st_uid for p in (state / FILENAME, *state.rglob("journal-damaged/*"))}
    assert owners == ({NOBODY} if as_root else {os.geteuid()})
    checked = _edge("journal", "check", "--config", str(config))
    assert checked.returncode == 0 and "sound" in checked.stdout, checked
    assert check_journal(load_config(config)).ok
    assert "kept damaged journal" in checked.stdout
    # Which pages survive the cut depends on the schema's layout: the numbering goes on
    # from what was read (the newest result), or starts again at 1 when nothing says
    # which seq came last, and the hub then opens a new epoch (docs/messages.md).
    said = re.search(
        r"seq continues from (\d+) \(read from (results|sequence|nothing)", recovered.stdout
    )
    assert said is not None, recovered.stdout
    journal = Journal.open(state, device="box-1")
    assert journal.backlog().last_seq == int(said.group(1)) <= 6
    assert (said.group(2) == "nothing") == (int(said.group(1)) == 0)
    journal.close()


def test_opening_a_journal_writes_nothing_when_nothing_is_missing(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    filled_journal(state, tmp_path)
    path = state / FILENAME
    before = path.read_bytes()
    path.chmod(0o444)  # a write would fail: "attempt to write a readonly database"
    try:
        journal = Journal.open(state, device="box-1")
        assert journal.backlog().last_seq == 3
        journal.close()
    finally:
        path.chmod(0o644)
    assert path.read_bytes() == before


def _edge(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge", *args], capture_output=True, text=True, check=False
    )
