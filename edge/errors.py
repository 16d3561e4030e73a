"""Exceptions with a meaning for the pipeline.

Each one says what the daemon does with the failure: an :class:`IngestError`
quarantines the file and the daemon goes on, a :class:`Skip` logs a reason and
leaves the file alone, a :class:`ConfigError` stops the daemon before it starts.
"""

from __future__ import annotations


class EdgeError(Exception):
    """Base class of the project's own errors."""


class ConfigError(EdgeError):
    """The configuration file is missing, unreadable or invalid."""


class IngestError(EdgeError):
    """A file that cannot be used: it is quarantined with ``reason``.

    ``reason`` is a short machine-readable key (``truncated``, ``not_dicom``, ...)
    used for counters; ``detail`` is the human sentence written beside the file.
    Neither may contain patient identifiers.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class Skip(EdgeError):
    """A valid file that this appliance does not score: another modality, a For
    Processing or tomosynthesis object the engine does not accept."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class ReceiverError(EdgeError):
    """The DICOM receiver cannot listen: its port is taken or not allowed, or a TLS
    file cannot be loaded. The daemon does not start without it."""


class EngineError(EdgeError):
    """An engine bundle that cannot be loaded, verified or run.

    ``fix``, when known, is the one thing a technician should do about it; the
    command line and ``edge doctor`` print it on a line of its own.
    """

    def __init__(self, message: str, fix: str = "") -> None:
        super().__init__(message)
        self.fix = fix


class JournalError(EdgeError):
    """The journal in ``state_dir`` could not be read or written (disk full, I/O error,
    a damaged page, a constraint): any ``sqlite3`` error, never a file's fault.

    The work it would have recorded is not lost: the file stays in the watch folder
    and is taken again, a result stays in memory and is journalled again, once
    the journal can be written.
    """


class JournalDamaged(JournalError):
    """The journal's file is damaged (SQLite says malformed, or not a database).

    At start the daemon moves it aside and begins a new one from what it can still
    read (:mod:`edge.journal.recovery`); while running, it raises ``journal_failed``.
    """

    #: what a technician does about it, said with every such error
    FIX = (
        "systemctl restart edge (it recovers a damaged journal at start, keeping the old "
        "one), or stop it and run: edge journal recover"
    )

    def __init__(self, message: str) -> None:
        super().__init__(f"{message}\n  fix: {self.FIX}")
        #: what was found, without the fix
        self.detail = message
