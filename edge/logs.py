"""Logging set-up: one line per event on standard output, journald-friendly.

Under systemd, with standard output connected to the journal, the journal stamps
each line itself, so no timestamp is written and the level is given as a syslog
priority prefix (``<3>`` for errors) that journald understands. systemd names
the stream it connected in ``JOURNAL_STREAM`` (``device:inode``); a process whose
output was redirected elsewhere (``edge run > file`` from a unit's shell) keeps
the variable but not the stream, so both are compared (``systemd.exec(5)``).
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from typing import TextIO

_PRIORITY = {
    logging.DEBUG: 7,
    logging.INFO: 6,
    logging.WARNING: 4,
    logging.ERROR: 3,
    logging.CRITICAL: 2,
}


class _JournalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        priority = _PRIORITY.get(record.levelno, 6)
        text = f"{record.name}: {super().format(record)}"
        # journald makes one entry per line: a traceback's lines keep the level too.
        return "\n".join(f"<{priority}>{line}" for line in text.splitlines())


def writes_to_journal(stream: TextIO) -> bool:
    """Whether ``stream`` is the journal stream systemd named in ``JOURNAL_STREAM``."""
    named = os.environ.get("JOURNAL_STREAM", "")
    device, _, inode = named.partition(":")
    if not (device.isdigit() and inode.isdigit()):
        return False
    try:
        info = os.fstat(stream.fileno())
    except (OSError, ValueError):
        return False
    return (info.st_dev, info.st_ino) == (int(device), int(inode))


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stdout)
    if writes_to_journal(sys.stdout):
        handler.setFormatter(_JournalFormatter("%(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # watchdog's debug lines carry raw file names, which exporters often build
    # from the patient's name; the daemon names files by a hash instead.
    logging.getLogger("watchdog").setLevel(max(logging.INFO, root.level))
    # pydicom logs and warns about malformed input with the file's path, which some
    # exporters build from the patient's name. Ingest turns every such problem into
    # a named reason of its own (logged with a path hash), so pydicom's copies go.
    # pydicom sets its logger's level when it is first imported: import it first.
    import pydicom.config  # noqa: F401

    logging.getLogger("pydicom").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"pydicom\.")
