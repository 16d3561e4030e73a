"""One stop deadline for the whole drain, and a second signal that ends the wait.

A stop waits for the files in hand, the engine's queue, the outbox and an engine
switch, but all of them together at most ``stop_timeout_s``, which fits inside the
unit's ``TimeoutStopSec``: systemd never has to kill the daemon. A second SIGTERM
or SIGINT makes every remaining wait zero. What was not finished is not lost: it is
in the journal as taken but not scored (SQLite rolls back a transaction cut short),
and the next start does it again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

#: how often a wait looks again
POLL_S = 0.05


class StopClock:
    """What is left of the stop deadline; nothing once a second signal came."""

    def __init__(self, limit_s: float, forced: threading.Event) -> None:
        self._deadline = time.monotonic() + limit_s
        self._forced = forced

    @property
    def forced(self) -> bool:
        return self._forced.is_set()

    def remaining(self) -> float:
        if self._forced.is_set():
            return 0.0
        return max(0.0, self._deadline - time.monotonic())

    def wait_for(self, done: Callable[[], bool]) -> bool:
        """Wait until ``done()`` or the deadline (or a second signal); whether it is done."""
        while not done():
            if self.remaining() <= 0:
                return False
            self._forced.wait(POLL_S)
        return True

    def say_abandoned(self) -> None:
        """The one line of a stop that did not wait for everything, and why."""
        why = "second signal" if self.forced else "stop deadline"
        log.warning("stopped without waiting (%s): the files in hand are taken again "
                    "at the next start", why)  # fmt: skip
