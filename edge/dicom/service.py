"""The receiver as ``edge run`` composes it: optional, bound first, wired to the journal.

:func:`open_receiver` binds the port before the daemon builds its other stages,
so that a port it cannot have stops the start at once, with its reason; a box
without ``receiver:`` gets a :class:`NoReceiver` that does nothing, so that the
daemon composes both alike.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.config import Config
from edge.dicom.receiver import FileCallback, Receiver, RefusingCallback
from edge.dicom.spool import Spool
from edge.errors import JournalError
from edge.health.liveness import Stage
from edge.journal import DONE_STATES, Journal

if TYPE_CHECKING:
    from edge.health.incidents import Incidents


class NoReceiver:
    """What the daemon holds when ``receiver:`` is not configured."""

    refusing: str | None = None

    def start(self, on_file: FileCallback, **hooks: Any) -> None:
        """Nothing to serve."""

    def stop(self) -> None:
        """Nothing to stop."""

    def snapshot(self) -> dict[str, Any] | None:
        return None

    def stages(self) -> list[Stage]:
        return []


class ServedReceiver(Receiver):
    """The receiver, with what the daemon's supervisor and health ask of a stage."""

    def stages(self) -> list[Stage]:
        return [Stage("receive", self.is_alive, lambda: None)]


def open_receiver(config: Config) -> ServedReceiver | NoReceiver:
    """The receiver ``config.receiver`` describes, its port bound; else a NoReceiver.

    Raises
    ------
    ReceiverError
        The port cannot be bound, or a TLS file cannot be loaded.
    """
    if config.receiver is None:
        return NoReceiver()
    # pynetdicom's INFO and DEBUG lines quote UIDs and element values of what it
    # receives; the receiver logs what matters itself.
    logging.getLogger("pynetdicom").setLevel(max(logging.WARNING, logging.getLogger().level))
    spool = Spool(config.spool_dir, min_free_mb=config.health.min_free_mb)
    return ServedReceiver(config.receiver, spool, stats_dir=config.state_dir)


def daemon_hooks(
    journal: Journal, incidents: Incidents, request_health: Callable[[], None]
) -> dict[str, Any]:
    """``done`` and ``on_refusing`` for :meth:`Receiver.start`, as the daemon runs it."""

    def on_refusing(reason: str | None, detail: str) -> None:
        # The alarm is raised (or ended) at once: an event, and health now.
        incidents.event("receiver", reason or "receiver_taking", detail, where="receive")
        request_health()

    refusing: RefusingCallback = on_refusing
    return {"done": lambda path: finished(journal, path), "on_refusing": refusing}


def finished(journal: Journal, path: Path) -> bool:
    """Whether the journal says the instance at ``path`` needs no more work."""
    try:
        record = journal.file(path)
    except JournalError:
        return False  # read again at the next sweep
    return record is not None and record.state in DONE_STATES
