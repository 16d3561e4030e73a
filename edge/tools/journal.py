"""``edge journal check`` and ``edge journal recover``: the technician's view of the journal.

``check`` only reads (the service may be running): SQLite's ``quick_check`` (or
``integrity_check`` with ``--full``), what the journal holds, and the damaged
journals kept aside. ``recover`` does what the daemon does at start with a damaged
journal (:mod:`edge.journal.recovery`); it is for a box whose service is stopped.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path

from edge.config import Config
from edge.errors import JournalError
from edge.journal import FILENAME, Journal
from edge.journal.recovery import DAMAGED_DIR, check, disk_use, kept_journals, recover

Print = Callable[[str], None]


def add_journal_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    add_config: Callable[[argparse.ArgumentParser], None],
    load: Callable[[Path], Config],
) -> None:
    """``edge journal check [--full]`` and ``edge journal recover [--force]``."""
    journal = commands.add_parser("journal", help="check or recover the journal in state_dir")
    actions = journal.add_subparsers(dest="journal_command", required=True, metavar="ACTION")
    check = actions.add_parser("check", help="is the journal sound? (reads only)")
    check.add_argument("--full", action="store_true", help="integrity_check, not quick_check")
    recover = actions.add_parser("recover", help="move a damaged journal aside, start anew")
    recover.add_argument("--force", action="store_true", help="even when it looks sound")
    for sub in (check, recover):
        add_config(sub)
        sub.set_defaults(handler=lambda args: 0 if journal_action(args, load(args.config)) else 1)


def journal_action(args: argparse.Namespace, config: Config, out: Print = print) -> bool:
    """Run the ``edge journal`` action ``args`` names; True (exit 0) when it succeeded."""
    if args.journal_command == "check":
        return check_journal(config, out, full=args.full)
    return recover_journal(config, out, force=args.force)


def check_journal(config: Config, out: Print, *, full: bool = False) -> bool:
    """Print the journal's state; True when it is sound."""
    path = config.state_dir / FILENAME
    problem = check(config.state_dir, full=full)
    if problem is None:
        out(f"journal {path}: sound ({'integrity_check' if full else 'quick_check'})")
        _print_contents(config, out)
    else:
        out(f"journal {path}: DAMAGED: {problem}")
        out("  fix: systemctl stop edge && edge journal recover --config <this config>")
        out("  (or restart the service: it recovers a damaged journal at start)")
    for kept in kept_journals(config.state_dir):
        out(f"kept damaged journal: {kept} ({disk_use(kept) >> 10} KiB)")
    return problem is None


def recover_journal(config: Config, out: Print, *, force: bool = False) -> bool:
    """Recover the journal if it is damaged (or always, with ``force``); True when done."""
    problem = check(config.state_dir)
    if problem is None and not force:
        out("the journal is sound: nothing to recover (--force moves it aside all the same)")
        return True
    journal, recovery = recover(
        config.state_dir,
        device=config.device,
        outbox_max=config.mqtt.outbox_max,
        problem=problem or "recovery forced by the technician",
    )
    journal.close()
    _hand_to_state_owner(config.state_dir)
    out(recovery.summary())
    return True


def _hand_to_state_owner(state_dir: Path) -> None:
    """Give what root's recovery wrote to the owner of ``state_dir``: the service must
    write the new journal, and keep the damaged one beside it."""
    owner = state_dir.stat()
    if os.geteuid() != 0 or owner.st_uid == 0:
        return
    kept = state_dir / DAMAGED_DIR
    for path in (*state_dir.glob(f"{FILENAME}*"), kept, *kept.rglob("*")):
        if path.exists():
            os.chown(path, owner.st_uid, owner.st_gid, follow_symlinks=False)


def _print_contents(config: Config, out: Print) -> None:
    try:
        journal = Journal.open_read_only(config.state_dir, device=config.device)
    except JournalError as exc:
        out(f"  cannot read it: {exc}")
        return
    try:
        backlog = journal.backlog()
        files = journal.file_counts()
    finally:
        journal.close()
    out(f"  last seq {backlog.last_seq}; {backlog.outbox + backlog.waiting} results undelivered")
    out("  files: " + (", ".join(f"{n} {state}" for state, n in sorted(files.items())) or "none"))
