"""Watch the export folder and hand on each file once it is complete.

A modality or PACS writes a file in one of four ways, and each has its signal:

- written in place and closed: Linux reports close-write (``IN_CLOSE_WRITE``);
- written under a temporary name, then renamed: taken at the rename;
- written elsewhere on the same file system, then moved (or hard-linked) in: it
  appears whole, created but never opened in the folder. Linux reports the
  creation of a file written in place together with its opening (``IN_CREATE``
  and ``IN_OPEN`` come from one ``open``), so a new file not opened within
  :data:`ARRIVAL_GRACE_S` is taken as arrived;
- written over a network share, where inotify sees nothing reliable: taken when
  its size and mtime have not changed for ``settle_s``.

A file is handed on once per (size, mtime): a close-write followed by the
settle timer, or a rename followed by a close, does not give it twice.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileOpenedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.polling import PollingObserver

from edge.pipeline.inotify_room import exhausted_limit
from edge.types import IncomingFile

log = logging.getLogger(__name__)

FileCallback = Callable[[IncomingFile], None]

#: a new file not opened in the folder this soon after its creation was moved in whole
ARRIVAL_GRACE_S = 0.05

#: what the watcher asks inotify for. Not a write (IN_MODIFY: one per write() of a
#: file still arriving, tens for each image), nor a reader's close, nor a folder's
#: own change: a file written in place is taken at its close-write, and one still
#: settling is looked at by the settle loop's stat. Each event asked for crosses
#: watchdog's threads, and the last write's events would wait ahead of the close
#: that completes the file. (Polling sees no writes as they happen: it keeps the
#: modifications, by which it notices a file changed since it was taken.)
INOTIFY_EVENTS = [
    FileClosedEvent,
    FileCreatedEvent,
    FileOpenedEvent,
    FileMovedEvent,
    FileDeletedEvent,
    DirCreatedEvent,
    DirMovedEvent,
    DirDeletedEvent,
]

#: how many handed-on files the watcher remembers, to drop a second event for the
#: same (size, mtime). Bounded, so that a folder nobody cleans does not grow the
#: daemon: an older duplicate reaches the journal, which knows the file is done.
EMITTED_MAX = 4096


@dataclass
class _Pending:
    size: int
    mtime_ns: int
    stable_since: float


class FolderWatcher:
    """Emits :class:`IncomingFile` for every complete file under ``root``."""

    def __init__(
        self,
        root: Path,
        on_file: FileCallback,
        *,
        recursive: bool = True,
        settle_s: float = 2.0,
        ignore: tuple[str, ...] = (),
        remember: int = EMITTED_MAX,
        polling: bool = False,
    ) -> None:
        self.root = root
        self._remember = remember
        self._on_file = on_file
        self._recursive = recursive
        self._settle_s = settle_s
        self._ignore = ignore
        self._lock = threading.Lock()
        self._pending: dict[Path, _Pending] = {}
        #: path -> (size, mtime_ns) last handed on, oldest first (at most ``remember``)
        self._emitted: OrderedDict[Path, tuple[int, int]] = OrderedDict()
        #: files created in the folder but not (yet) opened there -> when created
        self._arrived: dict[Path, float] = {}
        self._stop = threading.Event()
        #: wakes the settle thread early: a new file's grace is shorter than its tick
        self._wake = threading.Event()
        # polling: where inotify cannot be had (its limits exhausted), a stat scan
        # every settle_s; files are taken once settled.
        self._observer = PollingObserver(timeout=settle_s) if polling else Observer()
        self._polling = polling
        #: the sysctl whose limit left a new sub-folder unwatched, or None: the
        #: folder must be polled (:class:`~edge.pipeline.watch_folder.WatchGuard`)
        self.refused: str | None = None
        self._settler = threading.Thread(target=self._settle_loop, name="watch-settle", daemon=True)

    # -- life cycle -------------------------------------------------------------------

    def start(self) -> None:
        """Start watching, then scan what is already there.

        Watching starts first so that a file written during the scan is not missed;
        the (size, mtime) check stops it from being handed on twice.
        """
        self._observer.schedule(
            _Handler(self),
            str(self.root),
            recursive=self._recursive,
            event_filter=None if self._polling else INOTIFY_EVENTS,
        )
        self._observer.start()
        self._settler.start()
        count = 0
        for path in self._existing_files():
            self._take(path, "scan")
            count += 1
        log.info("watching %s (%d files already there)", self.root, count)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._observer.stop()
        self._observer.join(timeout=5)
        self._settler.join(timeout=5)

    @property
    def pending(self) -> int:
        """Files seen but not yet complete."""
        with self._lock:
            return len(self._pending)

    def is_alive(self) -> bool:
        return self._observer.is_alive() and self._settler.is_alive()

    # -- what the handler and the daemon call ------------------------------------------

    def recheck(self, path: Path) -> None:
        """Wait for ``path`` to settle and hand it on again.

        Used when a file taken at close-write turned out to be incomplete: a writer
        that reopens the file to append closes it several times.
        """
        self.forget(path)
        self._track(path)

    def subfolder(self, path: Path) -> None:
        """A new sub-folder: note when the kernel refused watching it (see ``refused``)."""
        if self._polling or not self._recursive or self.refused is not None:
            return
        self.refused = exhausted_limit([path])
        if self.refused is not None:
            log.error("inotify refused a watch on a new sub-folder of %s (%s reached)",
                      self.root, self.refused)  # fmt: skip

    def forget(self, path: Path) -> None:
        """Drop what is remembered of ``path`` (after it was moved away or deleted)."""
        with self._lock:
            self._emitted.pop(path, None)
            self._pending.pop(path, None)
            self._arrived.pop(path, None)

    def _track(self, path: Path) -> None:
        stat = _stat(path)
        if stat is None or self._ignored(path):
            return
        size, mtime_ns = stat
        with self._lock:
            current = self._pending.get(path)
            if current is None or (current.size, current.mtime_ns) != (size, mtime_ns):
                self._pending[path] = _Pending(size, mtime_ns, time.monotonic())

    def _take(self, path: Path, trigger: str) -> None:
        if self._ignored(path):
            return
        stat = _stat(path)
        if stat is None:
            return
        with self._lock:
            self._pending.pop(path, None)
            if self._emitted.get(path) == stat:
                return
            self._emitted[path] = stat
            self._emitted.move_to_end(path)
            if len(self._emitted) > self._remember:
                self._emitted.popitem(last=False)
        size, mtime_ns = stat
        self._on_file(IncomingFile(path, size, mtime_ns, time.monotonic(), trigger))

    # -- internals ----------------------------------------------------------------------

    def _ignored(self, path: Path) -> bool:
        name = path.name
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self._ignore)

    def _existing_files(self) -> Iterator[Path]:
        if not self._recursive:
            yield from sorted(p for p in self.root.iterdir() if p.is_file() or p.is_symlink())
            return
        for folder, dirs, files in os.walk(self.root):
            dirs.sort()
            for name in sorted(files):
                yield Path(folder) / name

    def _created(self, path: Path) -> None:
        if self._ignored(path):
            return
        self._track(path)  # should it be written slowly after all, it still settles
        with self._lock:
            self._arrived[path] = time.monotonic()
        self._wake.set()

    def _opened(self, path: Path) -> None:
        with self._lock:
            self._arrived.pop(path, None)

    def _settle_loop(self) -> None:
        interval = min(0.25, self._settle_s / 4)
        while not self._stop.is_set():
            self._wake.wait(self._next_wait(interval))
            self._wake.clear()
            if self._stop.is_set():
                return
            for path in self._arrived_paths():
                self._take(path, "arrived")
            for path in self._settled_paths():
                self._take(path, "settled")

    def _next_wait(self, interval: float) -> float:
        with self._lock:
            oldest = min(self._arrived.values(), default=None)
        if oldest is None:
            return interval
        return max(0.0, min(interval, oldest + ARRIVAL_GRACE_S - time.monotonic()))

    def _arrived_paths(self) -> list[Path]:
        """New files never opened in the folder within their grace: moved in whole."""
        due = time.monotonic() - ARRIVAL_GRACE_S
        with self._lock:
            ready = [path for path, created in self._arrived.items() if created <= due]
            for path in ready:
                del self._arrived[path]
        return ready

    def _settled_paths(self) -> list[Path]:
        now = time.monotonic()
        ready = []
        with self._lock:
            candidates = list(self._pending.items())
        for path, pending in candidates:
            stat = _stat(path)
            if stat is None:
                self.forget(path)
                continue
            if stat != (pending.size, pending.mtime_ns):
                with self._lock:
                    self._pending[path] = _Pending(*stat, now)
            elif now - pending.stable_since >= self._settle_s:
                ready.append(path)
        return ready


class _Handler(FileSystemEventHandler):
    """Translates watchdog events into the watcher's three signals."""

    def __init__(self, watcher: FolderWatcher) -> None:
        self._watcher = watcher

    def on_closed(self, event: FileSystemEvent) -> None:
        if isinstance(event, FileClosedEvent):
            self._watcher._take(Path(_text(event.src_path)), "close_write")

    def on_moved(self, event: FileSystemEvent) -> None:
        self._watcher.forget(Path(_text(event.src_path)))
        if isinstance(event, FileMovedEvent):
            self._watcher._take(Path(_text(event.dest_path)), "moved")
        elif isinstance(event, DirMovedEvent):
            # A folder moved in whole (a study exported to a temp folder, then
            # renamed): its files will never see an event of their own.
            dest = Path(_text(event.dest_path))
            self._watcher.subfolder(dest)
            for folder, _dirs, files in os.walk(dest):
                for name in files:
                    self._watcher._take(Path(folder) / name, "moved")

    def on_created(self, event: FileSystemEvent) -> None:
        if isinstance(event, FileCreatedEvent):
            self._watcher._created(Path(_text(event.src_path)))
        elif isinstance(event, DirCreatedEvent):
            self._watcher.subfolder(Path(_text(event.src_path)))

    def on_opened(self, event: FileSystemEvent) -> None:
        if isinstance(event, FileOpenedEvent):
            self._watcher._opened(Path(_text(event.src_path)))

    def on_modified(self, event: FileSystemEvent) -> None:
        # Only when polling (see INOTIFY_EVENTS): a file changed since it was taken.
        if isinstance(event, FileModifiedEvent):
            self._watcher._track(Path(_text(event.src_path)))

    def on_deleted(self, event: FileSystemEvent) -> None:
        self._watcher.forget(Path(_text(event.src_path)))


def _text(path: str | bytes) -> str:
    return os.fsdecode(path)


def _stat(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.lstat()
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns
