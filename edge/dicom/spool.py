"""The receiver's spool: each received instance durable on disk before it is acknowledged.

An instance is written under a temporary name, flushed to the disk (``fsync``),
renamed to its final name and the folder flushed too, so that once
:meth:`Spool.keep` returns the file survives a ``kill -9`` or a power cut. Only
then does the C-STORE response say success. The file stays until the journal
says its work is done (scored, a duplicate, skipped; a quarantined file has been
moved out already), so a restarted daemon finds in the spool exactly the
acknowledged instances it has not finished, and takes them again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

#: a file still being written (or left by a write cut short): never an acknowledged one
PARTIAL_PREFIX = ".part-"
SUFFIX = ".dcm"
MiB = 1 << 20


class SpoolFull(OSError):
    """The state disk has less room than ``health.min_free_mb`` after this instance."""


class Spool:
    """A folder in ``state_dir`` that holds received instances until they are done."""

    def __init__(self, folder: Path, *, min_free_mb: int) -> None:
        self.folder = folder
        self.min_free_mb = min_free_mb

    def prepare(self) -> list[Path]:
        """Create the folder, drop partial writes, and list what waits, oldest first.

        A partial file was never acknowledged: its sender had no success status
        and sends it again.
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        for partial in self.folder.glob(f"{PARTIAL_PREFIX}*"):
            partial.unlink(missing_ok=True)
        return self.files()

    def files(self) -> list[Path]:
        """The complete instances in the spool, in the order they arrived."""
        return sorted(self.folder.glob(f"[!.]*{SUFFIX}"))

    def keep(self, data: bytes) -> Path:
        """Write one instance durably and return its final path.

        Raises
        ------
        SpoolFull
            The instance would leave less than ``min_free_mb`` on the state disk.
        OSError
            The write, flush or rename failed (``ENOSPC``, ``EIO``): nothing is left.
        """
        self.check_room(len(data))
        # Named by arrival time first, so that a restart takes them in order.
        name = f"{time.time_ns():020d}-{uuid.uuid4().hex}{SUFFIX}"
        partial = self.folder / f"{PARTIAL_PREFIX}{name}"
        final = self.folder / name
        try:
            _write_synced(partial, data)
            os.rename(partial, final)
            _sync_folder(self.folder)
        except OSError:
            partial.unlink(missing_ok=True)
            final.unlink(missing_ok=True)
            raise
        return final

    def check_room(self, size: int) -> None:
        """Raise :class:`SpoolFull` when ``size`` more bytes would go below the minimum."""
        free = shutil.disk_usage(self.folder).free
        if free - size < self.min_free_mb * MiB:
            raise SpoolFull(
                f"the state disk has {free // MiB} MiB free; an instance of "
                f"{size / MiB:.1f} MiB would leave less than health.min_free_mb "
                f"({self.min_free_mb} MiB)"
            )

    def sweep(self, done: Callable[[Path], bool]) -> int:
        """Delete the instances whose work is done; the number deleted."""
        removed = 0
        for path in self.files():
            if done(path):
                with contextlib.suppress(FileNotFoundError):  # quarantined meanwhile
                    path.unlink()
                    removed += 1
        return removed


def _write_synced(path: Path, data: bytes) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o640)
    try:
        view = memoryview(data)
        while view:
            written = os.write(descriptor, view)
            view = view[written:]
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _sync_folder(folder: Path) -> None:
    """Make the rename itself durable: the folder's entry is flushed too."""
    descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
