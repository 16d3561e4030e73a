"""The journal's write-ahead log synced in the quiet between views, off a result's way.

Most commits only track work and are not synced (``synchronous = NORMAL``, see
:func:`edge.journal.database._connect`); the commit that journals a result is, and
its fsync writes out every frame that the study's earlier commits left in the page
cache: the claims, the decodes, the scores of the views before the last. On a box
whose views arrive half a second apart, that was most of the result's commit.

:class:`WalSync` syncs the log once the journal has been quiet for :data:`QUIET_S`
after a commit that was not synced, so the result's commit finds only its own frames
to write. In a burst there is no quiet gap and it stays idle: it never competes with
the commits on a result's way. It only makes durable sooner what SQLite has already
written; SQLite's own syncs, and what they guarantee, are unchanged.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

#: how long the journal stays unwritten before the log is synced
QUIET_S = 0.02


class WalSync:
    """A thread that syncs ``wal`` (the journal's ``-wal`` file) when writes pause."""

    def __init__(self, wal: Path, quiet_s: float = QUIET_S) -> None:
        self._wal = wal
        self._quiet_s = quiet_s
        self._changed = threading.Condition()
        #: monotonic time of the last commit not yet synced; None: nothing waits
        self._written_at: float | None = None
        self._stopping = False
        self._failing = False
        #: syncs made, and syncs the disk refused
        self.syncs = 0
        self.failures = 0
        self._thread = threading.Thread(target=self._run, name="journal-sync", daemon=True)
        self._thread.start()

    def committed(self, *, synced: bool) -> None:
        """A commit: one ``synced`` wrote out every frame before it; another waits for
        writes to pause."""
        with self._changed:
            self._written_at = None if synced else time.monotonic()
            self._changed.notify()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        with self._changed:
            self._stopping = True
            self._changed.notify()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while self._quiet():
            self._sync()

    def _quiet(self) -> bool:
        """Wait until the journal has been quiet since a commit not synced; False: stop."""
        with self._changed:
            while not self._stopping:
                written_at = self._written_at
                if written_at is None:
                    self._changed.wait()
                elif (left := written_at + self._quiet_s - time.monotonic()) > 0:
                    self._changed.wait(left)
                else:
                    self._written_at = None
                    return True
            return False

    def _sync(self) -> None:
        # fdatasync writes out the file, whichever descriptor names it.
        try:
            fd = os.open(self._wal, os.O_RDONLY)
        except FileNotFoundError:
            return  # checkpointed away as the journal closed: nothing left to sync
        except OSError as exc:
            self._failed(exc)
            return
        try:
            os.fdatasync(fd)
        except OSError as exc:
            self._failed(exc)
        else:
            self.syncs += 1
            if self._failing:
                log.info("the journal's log can be synced again")
            self._failing = False
        finally:
            os.close(fd)

    def _failed(self, exc: OSError) -> None:
        # The result's own synced commit meets the same disk and raises the alarm.
        self.failures += 1
        if not self._failing:
            log.warning("cannot sync the journal's log ahead of a result: %s", exc.strerror)
        self._failing = True
