"""The doctor's look at the journal: sound, missing (a box not yet started), or damaged."""

from __future__ import annotations

from edge.config import Config
from edge.errors import JournalError
from edge.journal import FILENAME
from edge.journal.recovery import check, kept_journals
from edge.tools.doctor.check import Check


def check_journal(config: Config) -> Check:
    """SQLite's ``quick_check`` on the journal, read-only (the service may be running)."""
    path = config.state_dir / FILENAME
    try:
        problem = check(config.state_dir)
    except JournalError:
        return Check("journal", True, f"no journal yet at {path}: the service creates it")
    kept = kept_journals(config.state_dir)
    aside = f"; {len(kept)} damaged journal(s) kept in {kept[-1].parent}" if kept else ""
    if problem is None:
        return Check("journal", True, f"{path} is sound{aside}")
    return Check(
        "journal",
        False,
        f"{path} is damaged: {problem}",
        "systemctl restart edge (it recovers a damaged journal at start), or stop it and "
        "run: edge journal recover",
    )
