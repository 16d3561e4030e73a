"""The journal: the durable state of files, scored images, results and the outbox.

One SQLite database, ``state_dir/journal.sqlite3``, written before anything is
acted on, so that a daemon killed at any instant (``kill -9``, power loss)
resumes where it stopped:

``files``
    one row per path in the watch folder, for the version (size, mtime) last
    taken: its SOP and Study Instance UIDs and its state, ``seen`` ->
    ``decoded`` -> ``scored`` -> ``published`` (its study's result acknowledged
    by the broker), or ``duplicate``, ``skipped``, ``quarantined``, ``gone``.
``images``
    one row per scored SOP Instance UID: what the study assembler needs to
    rebuild an open study without decoding again, and the result it went into.
``results``
    one row per study result, with its per-device ``seq`` and the exact payload,
    so that a result is replayed after a crash, never recomputed differently.
``outbox``
    the results on their way to the broker, at most ``outbox_max``, deleted at
    the broker's PUBACK. Results beyond that wait in ``results`` and move up in
    order as room frees.
``sequence``
    the last ``seq`` given per device name.
``shadow_images``, ``shadow_results``
    a shadow engine's scores of images, and each result's companion message
    (``edge.shadow/1``) on its way to the broker (:mod:`~edge.journal.shadows`).
``confirmations``
    the hub's last cumulative confirmation: every result up to its ``seq`` is in
    the hub's database (:mod:`~edge.journal.confirmations`).
``events``
    the last :data:`EVENTS_KEPT` events sent on ``.../events`` (quarantined
    files, internal errors), for ``edge status`` after a restart.

What is old is forgotten in passes by :mod:`edge.journal.retention` (``journal.keep_days``).

The tables' concerns live in :mod:`~edge.journal.files`, :mod:`~edge.journal.results`
and :mod:`~edge.journal.events`, on the connection of :mod:`~edge.journal.database`.
Every public method is one transaction, serialised by one lock: the volume is a
few writes per image, far below what one connection serves.

What ``edge status`` and health read: :meth:`Journal.recent_results` (the last
studies with score, seq and when delivered), :meth:`Journal.backlog` (what waits
for the broker), :meth:`Journal.recent_events` (quarantines and errors, with
reasons) and :meth:`Journal.file_counts` (files per state).
"""

from __future__ import annotations

from edge.journal.confirmations import ConfirmationRows
from edge.journal.database import FILENAME
from edge.journal.events import EVENTS_KEPT, EventRows
from edge.journal.files import DONE_STATES, FORGETTABLE_STATES, FileRows
from edge.journal.records import (
    Backlog,
    Companion,
    EventRecord,
    FileRecord,
    OutboxEntry,
    ResultSummary,
    Unconfirmed,
)
from edge.journal.results import ResultRows
from edge.journal.schema import SCHEMA_VERSION
from edge.journal.shadows import ShadowRows

__all__ = [
    "DONE_STATES",
    "EVENTS_KEPT",
    "FILENAME",
    "FORGETTABLE_STATES",
    "SCHEMA_VERSION",
    "Backlog",
    "Companion",
    "EventRecord",
    "FileRecord",
    "Journal",
    "OutboxEntry",
    "ResultSummary",
    "Unconfirmed",
]


class Journal(FileRows, ResultRows, ShadowRows, EventRows, ConfirmationRows):
    """The journal database of one ``state_dir``; thread-safe."""
