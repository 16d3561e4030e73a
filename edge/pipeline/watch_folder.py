"""A watch folder the daemon cannot see is an error or an alarm, never silence.

At start, a folder that is missing, not a folder, or not readable by the service
user stops the daemon with one line naming ``watch.dir`` and the fix (``edge
config check`` says the same). While running, :class:`WatchGuard` looks at the
folder every :data:`CHECK_EVERY_S`: gone, replaced (another folder at the same
path: inotify still watches the old one) or unreadable raises
``watch_unavailable`` with an event; once it is back, a new watcher starts on it
and its scan takes whatever arrived meanwhile. When the kernel refuses inotify
(``fs.inotify.max_user_watches`` or ``max_user_instances`` exhausted), at start or
for a sub-folder made while running, the folder is polled instead (its scan takes
what the unwatched sub-folder held), ``inotify_limit`` names the sysctl to raise,
and inotify is tried again every :data:`INOTIFY_RETRY_S`: once the kernel has room,
the alarm clears.
"""

from __future__ import annotations

import getpass
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

from edge.config import WatchConfig
from edge.pipeline.inotify_room import INOTIFY_LIMITS, exhausted_limit
from edge.pipeline.watch import FileCallback, FolderWatcher

log = logging.getLogger(__name__)

#: how often the folder is looked at while running
CHECK_EVERY_S = 1.0
#: how often inotify is tried again while the folder is polled for want of it
INOTIFY_RETRY_S = 60.0

WatcherFactory = Callable[[bool], FolderWatcher]


class EventSink(Protocol):
    """Where the guard's events go (:meth:`edge.health.incidents.Incidents.event`)."""

    def __call__(self, kind: str, reason: str, message: str, *, where: str = "") -> None: ...


def watch_folder_problem(folder: Path) -> str | None:
    """Why this process cannot watch ``folder``, with the fix; None when it can."""
    user = _user()
    fix = (
        f"create it (install -d -o {user} {folder}) or set watch.dir to the folder "
        "the modality exports into"
    )
    if not folder.exists():
        return f"watch.dir: {folder} does not exist: {fix}"
    if not folder.is_dir():
        return f"watch.dir: {folder} is not a folder: {fix}"
    try:
        with os.scandir(folder) as entries:
            next(entries, None)
    except OSError as exc:
        return (
            f"watch.dir: {folder} is not readable by {user} ({exc.strerror}): let {user} read "
            f"it (chgrp {user} {folder}; chmod g+rx {folder})"
        )
    return None


class WatchGuard:
    """The daemon's watcher, kept on a folder that may go away and come back.

    It offers the watcher's interface (``recheck``, ``forget``, ``pending``...) for
    whichever watcher is current; ``poll`` runs on the daemon's tick.
    """

    def __init__(
        self,
        folder: Path,
        make: WatcherFactory,
        on_change: EventSink,
        *,
        recursive: bool = True,
        inotify_retry_s: float = INOTIFY_RETRY_S,
    ) -> None:
        self._folder = folder
        self._recursive = recursive
        self._inotify_retry_s = inotify_retry_s
        self._next_inotify = 0.0
        self._make = make
        self._on_change = on_change
        self._polling = False
        self._watcher: FolderWatcher | None = None
        self._identity: tuple[int, int] | None = None
        self._next_check = 0.0
        #: why the folder cannot be watched now, or None (health's watch_unavailable)
        self.unavailable: str | None = None
        #: the inotify limit the kernel refused, or None (health's inotify_limit)
        self.inotify_limit: str | None = None

    @classmethod
    def on(cls, watch: WatchConfig, on_file: FileCallback, on_change: EventSink) -> WatchGuard:
        """A guard on ``watch.dir`` whose watchers hand its files to ``on_file``."""

        def make(polling: bool) -> FolderWatcher:
            return FolderWatcher(
                watch.dir,
                on_file,
                recursive=watch.recursive,
                settle_s=watch.settle_s,
                ignore=watch.ignore,
                polling=polling,
            )

        return cls(watch.dir, make, on_change, recursive=watch.recursive)

    def start(self) -> None:
        """Watch the folder (and scan what is there); by polling if inotify is refused."""
        self._identity = _identity(self._folder)
        try:
            # Creating the inotify observer is what the kernel may refuse, not only
            # starting it.
            self._watcher = self._make(self._polling)
            self._watcher.start()
        except OSError as exc:
            sysctl = INOTIFY_LIMITS.get(exc.errno or 0)
            if sysctl is None or self._polling:
                raise
            self._fall_back_to_polling(sysctl)
            return
        # watchdog leaves a sub-folder it could not watch unwatched without a word.
        refused = None if self._polling else exhausted_limit([self._folder])
        if refused is not None:
            self._watcher.stop()
            self._fall_back_to_polling(refused)
        elif not self._polling and self.inotify_limit is not None:
            self._inotify_back()

    def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.stop()

    def poll(self) -> None:
        """Raise or clear ``watch_unavailable`` (at most every :data:`CHECK_EVERY_S`)."""
        if time.monotonic() < self._next_check:
            return
        self._next_check = time.monotonic() + CHECK_EVERY_S
        problem = watch_folder_problem(self._folder)
        if problem is None and _identity(self._folder) != self._identity:
            problem = f"watch.dir: {self._folder} was replaced by another folder"
        if problem is not None and self.unavailable is None:
            self._lost(problem)
        elif problem is None and self.unavailable is not None:
            self._back()
        elif problem is None:
            self._check_inotify()

    # -- the watcher's interface, for the current watcher ---------------------------------

    @property
    def pending(self) -> int:
        return 0 if self._watcher is None else self._watcher.pending

    def is_alive(self) -> bool:
        """Alive while it watches, or while it waits for the folder to come back."""
        if self.unavailable is not None:
            return True
        return self._watcher is not None and self._watcher.is_alive()

    def recheck(self, path: Path) -> None:
        if self._watcher is not None:
            self._watcher.recheck(path)

    def forget(self, path: Path) -> None:
        if self._watcher is not None:
            self._watcher.forget(path)

    # -- internals ------------------------------------------------------------------------

    def _lost(self, problem: str) -> None:
        self.unavailable = problem
        self.stop()
        log.error("%s; retrying every %.0f s", problem, CHECK_EVERY_S)
        self._on_change("watch", "watch_unavailable", problem, where="watch")

    def _back(self) -> None:
        self.unavailable = None
        self.start()  # a new watcher: its scan takes what arrived while the folder was away
        log.info("watch.dir %s is back: watching it again", self._folder)
        self._on_change("watch", "watch_available", f"watch.dir {self._folder} is back: rescanned",
                        where="watch")  # fmt: skip

    def _check_inotify(self) -> None:
        """Poll when the watcher lost a sub-folder to the limit; try inotify again later."""
        watcher = self._watcher
        if watcher is None:
            return
        if not self._polling and watcher.refused is not None:
            watcher.stop()
            self._fall_back_to_polling(watcher.refused)
        elif self._polling and time.monotonic() >= self._next_inotify:
            self._next_inotify = time.monotonic() + self._inotify_retry_s
            # Room for a watch on every folder it holds, or inotify would fail again.
            if exhausted_limit(self._folders()) is None:
                watcher.stop()
                self._polling = False
                self.start()  # polls again, quietly, if the kernel still refuses

    def _folders(self) -> Iterator[Path]:
        yield self._folder
        if self._recursive:
            for folder, names, _files in os.walk(self._folder):
                yield from (Path(folder) / name for name in names)

    def _fall_back_to_polling(self, sysctl: str) -> None:
        self._next_inotify = time.monotonic() + self._inotify_retry_s
        self._polling = True
        if self.inotify_limit is None:
            self.inotify_limit = sysctl
            log.error(
                "inotify refused (%s exhausted): polling %s instead; raise it, e.g. "
                "sysctl -w %s=524288",
                sysctl, self._folder, sysctl,
            )  # fmt: skip
            self._on_change("watch", "inotify_limit", f"inotify limit {sysctl} reached: raise it",
                            where="watch")  # fmt: skip
        self.start()

    def _inotify_back(self) -> None:
        log.info("inotify watches %s again (%s has room)", self._folder, self.inotify_limit)
        self._on_change("watch", "inotify_available",
                        f"inotify watches the folder again ({self.inotify_limit} has room)",
                        where="watch")  # fmt: skip
        self.inotify_limit = None


def watch_alarms(guard: WatchGuard) -> list[str]:
    """Health's ``watch_unavailable`` and ``inotify_limit: <sysctl>``."""
    raised = []
    if guard.unavailable is not None:
        raised.append("watch_unavailable")
    if guard.inotify_limit is not None:
        raised.append(f"inotify_limit: raise {guard.inotify_limit}")
    return raised


def _identity(folder: Path) -> tuple[int, int] | None:
    try:
        stat = folder.stat()
    except OSError:
        return None
    return (stat.st_dev, stat.st_ino)


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"
