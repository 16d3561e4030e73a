"""Retention: what the journal forgets, so that a box running for years stays small.

At 100 studies a day the journal gains about 150,000 rows a year. Once a pass,
at start and then every hour, it forgets:

- results delivered more than ``journal.keep_days`` ago, with their scored images
  (an image sent again after that is scored again, as a new study read);
- finished files (published, duplicate, skipped, quarantined, gone) unchanged for
  that long whose path has left the watch folder. A file still in the folder
  keeps its row, or a restart's scan would take it again.

Results waiting for the broker are never forgotten, whatever their age, nor
(with ``mqtt.confirm: hub``) results the hub has not confirmed. A pass
runs in small batches, one per call of :meth:`Retention.step`, so that the
journal's lock is never held long while images are being scored.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field

from edge.journal import Journal

log = logging.getLogger(__name__)

#: rows looked at per batch
BATCH = 200
#: a pass at most this often
PASS_INTERVAL_S = 3600.0
#: and at least ten times per retention period (short periods are for tests)
PASSES_PER_PERIOD = 10


@dataclass
class Forgotten:
    results: int = 0
    images: int = 0
    files: int = 0

    def __bool__(self) -> bool:
        return bool(self.results or self.images or self.files)


class Retention:
    """Passes of forgetting over the journal, one batch per :meth:`step`."""

    def __init__(
        self,
        journal: Journal,
        keep_days: float,
        *,
        batch: int = BATCH,
        keep_unconfirmed: bool = False,
    ) -> None:
        self._journal = journal
        self._keep_unconfirmed = keep_unconfirmed
        self._batch = batch
        self._keep_s = keep_days * 86400.0
        self._interval_s = min(PASS_INTERVAL_S, self._keep_s / PASSES_PER_PERIOD)
        self._next_pass = 0.0  # the first pass at start
        self._pass: _Pass | None = None

    def due(self) -> bool:
        """A pass is under way or it is time for the next one."""
        return self._pass is not None or time.monotonic() >= self._next_pass

    def run_pass(self) -> Forgotten:
        """A whole pass at once; what it forgot."""
        while (forgotten := self.step()) is None:
            pass
        return forgotten

    def step(self) -> Forgotten | None:
        """One batch of the current pass (beginning one if none is under way); what
        the pass forgot once it is over, else None.

        Raises
        ------
        JournalError
            The journal cannot be read or written; the pass is tried again later.
        """
        if self._pass is None:
            self._pass = _Pass(
                before=time.time() - self._keep_s,
                batch=self._batch,
                keep_unconfirmed=self._keep_unconfirmed,
            )
        current = self._pass
        try:
            finished = current.step(self._journal)
        except BaseException:
            self._end_pass()
            raise
        if not finished:
            return None
        self._end_pass()
        found = current.forgotten
        if found:
            log.info(
                "journal: forgot what is older than %g days: %d results, %d images, %d files",
                self._keep_s / 86400.0,
                found.results,
                found.images,
                found.files,
            )
        return found

    def _end_pass(self) -> None:
        self._pass = None
        self._next_pass = time.monotonic() + self._interval_s


@dataclass
class _Pass:
    before: float
    batch: int
    keep_unconfirmed: bool
    forgotten: Forgotten = field(default_factory=Forgotten)
    results_done: bool = False
    cursor: tuple[float, str] = (0.0, "")

    def step(self, journal: Journal) -> bool:
        """One batch; True once the pass is over."""
        if not self.results_done:
            results, images = journal.forget_results(
                self.before, self.batch, keep_unconfirmed=self.keep_unconfirmed
            )
            self.forgotten.results += results
            self.forgotten.images += images
            self.results_done = results < self.batch
            return False
        rows = journal.forgettable_files(self.before, self.cursor, self.batch)
        if rows:
            self.cursor = rows[-1]
            # The file system is looked at outside the journal's lock.
            self.forgotten.files += journal.forget_files([r for r in rows if _left(r[1])])
        return len(rows) < self.batch


def _left(key: str) -> bool:
    """The journalled path no longer exists (what to keep when unsure: the row)."""
    if "\\" in key:
        # A name that is not UTF-8 is journalled with backslash escapes; it cannot be
        # looked up again for certain, so its row stays.
        return False
    return not os.path.lexists(key)
