"""Whether the pipeline makes progress, and what systemd is told about it.

systemd restarts a service whose ``WATCHDOG=1`` pings stop (``WatchdogSec=``).
Pinging from a timer alone would only prove that one thread is alive; a daemon
whose inference call never returns would ping on forever while studies pile
up. So the pings come from the main tick loop, and only while every stage
thread is alive and no stage has held one piece of work longer than
``health.stuck_s`` (the "started at" of the work in hand, as Frigate detects a
stuck detector). A stuck stage stops the pings and says so in ``STATUS=``; the
restart that follows is the cure, and the journal makes it lose nothing.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from edge.notify import Notifier

log = logging.getLogger(__name__)

#: how often STATUS= is refreshed when systemd asked for no watchdog
STATUS_INTERVAL_S = 5.0


@dataclass(frozen=True)
class Stage:
    """One stage as the watchdog sees it."""

    name: str
    #: False once the stage's thread has died
    alive: Callable[[], bool]
    #: monotonic start of the oldest piece of work in hand, None when idle
    busy_since: Callable[[], float | None]


class WorkClock:
    """Start times of the pieces of work a pool of threads has in hand."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._started: dict[int, float] = {}
        self._tokens = itertools.count()

    def begin(self) -> int:
        token = next(self._tokens)
        with self._lock:
            self._started[token] = time.monotonic()
        return token

    def end(self, token: int) -> None:
        with self._lock:
            self._started.pop(token, None)

    def oldest(self) -> float | None:
        with self._lock:
            return min(self._started.values(), default=None)


def stalled(stages: Sequence[Stage], limit_s: float, now: float) -> list[str]:
    """What keeps the pipeline from making progress: one phrase per stage, [] if nothing."""
    problems = []
    for stage in stages:
        if not stage.alive():
            problems.append(f"{stage.name} thread died")
            continue
        since = stage.busy_since()
        if since is not None and now - since > limit_s:
            problems.append(f"{stage.name} stuck for {now - since:.0f} s")
    return problems


class Supervisor:
    """Pings the systemd watchdog while the stages progress; keeps ``STATUS=`` current.

    Called from the daemon's main loop on every tick; does its work once per
    watchdog interval (half of ``WatchdogSec=``).
    """

    def __init__(
        self,
        notifier: Notifier,
        stages: Sequence[Stage],
        *,
        stuck_s: float,
        status: Callable[[], str],
    ) -> None:
        self.notifier = notifier
        self._stages = tuple(stages)
        self._stuck_s = stuck_s
        self._status = status
        self._interval_s = notifier.watchdog_interval_s or STATUS_INTERVAL_S
        self._next = 0.0
        self._stalled: list[str] = []

    def ready(self) -> None:
        """Tell systemd the service serves (after the engine is warm and the journal open)."""
        self.notifier.ready(self._status())
        self._next = time.monotonic() + self._interval_s

    def tick(self) -> None:
        now = time.monotonic()
        if now < self._next or not self.notifier.enabled:
            return
        self._next = now + self._interval_s
        problems = stalled(self._stages, self._stuck_s, now)
        if problems:
            self._report_stall(problems)
            return
        if self._stalled:
            log.warning("watchdog: the pipeline progresses again")
            self._stalled = []
        fields = {"STATUS": self._status()}
        if self.notifier.watchdog_interval_s is not None:
            fields["WATCHDOG"] = "1"
        self.notifier.send(**fields)

    def stopping(self, reason: str) -> None:
        self.notifier.stopping(reason)

    def _report_stall(self, problems: list[str]) -> None:
        # Logged when it changes, not on every interval: one stuck stage, one line.
        names = [problem.split(" ")[0] for problem in problems]
        if names != [problem.split(" ")[0] for problem in self._stalled]:
            log.error(
                "watchdog: %s; not pinging the systemd watchdog, so systemd restarts the service",
                "; ".join(problems),
            )
        self._stalled = problems
        self.notifier.status("stalled: " + "; ".join(problems))
