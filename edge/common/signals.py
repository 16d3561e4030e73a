"""Signal handlers installed for a long-running loop's lifetime, then given back.

The daemon and the hub's collector both run until SIGTERM or SIGINT (and the daemon
reloads on SIGHUP). Handlers can only be set from the main thread; run from another
(a test, the bench) the loop is stopped through its stop event instead. The previous
handlers are restored on the way out, so that a caller's own handling survives.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator, Mapping
from types import FrameType

Handler = Callable[[int, FrameType | None], None]
#: what asks a loop to stop: ``systemctl stop`` and Ctrl-C
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def captured(handlers: Mapping[signal.Signals, Handler]) -> Iterator[None]:
    """Install ``handlers`` for the block's lifetime (main thread only) and restore the old."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, handler) for sig, handler in handlers.items()}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
