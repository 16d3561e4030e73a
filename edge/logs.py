"""Logging set-up: one line per event on standard output, journald-friendly.

Under systemd (``JOURNAL_STREAM`` set) the journal stamps each line itself, so
no timestamp is written and the level is given as a syslog priority prefix
(``<3>`` for errors) that journald understands.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

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
        return f"<{priority}>{record.name}: {super().format(record)}"


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stdout)
    if os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(_JournalFormatter("%(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # pydicom logs and warns about malformed input with the file's path, which some
    # exporters build from the patient's name. Ingest turns every such problem into
    # a named reason of its own (logged with a path hash), so pydicom's copies go.
    # pydicom sets its logger's level when it is first imported: import it first.
    import pydicom.config  # noqa: F401

    logging.getLogger("pydicom").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"pydicom\.")
