"""One daemon per state folder: an exclusive lock, taken before anything else.

Two ``edge run`` on one configuration (a technician starting one by hand while
the service runs) would share a client id, knock each other off the broker and
race on the journal. The daemon therefore holds ``flock`` on
``state_dir/edge.lock`` for its whole life; a second one exits at once, naming
the process that holds it. The kernel drops the lock when the holder exits, even
by ``kill -9``: there is never a stale lock to clean up. Readers (``edge
status``, ``edge doctor``) take no lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from edge.errors import EdgeError

LOCK_NAME = "edge.lock"


class StateLocked(EdgeError):
    """Another daemon holds this state folder."""


@contextlib.contextmanager
def state_lock(state_dir: Path) -> Iterator[None]:
    """Hold the state folder's lock for the ``with`` block.

    Raises
    ------
    StateLocked
        When another process holds it (its pid, as it wrote it, is in the message).
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise StateLocked(
                f"another edge daemon (pid {holder}) is running on {state_dir} (it holds "
                f"{path}); stop it first (systemctl stop edge) or give this one another state_dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock
