"""Whether the kernel still gives this process inotify watches, and which sysctl to raise.

watchdog watches each sub-folder with a watch of its own, added when the folder
appears; when the kernel refuses one (``fs.inotify.max_user_watches`` reached), it
leaves that folder unwatched without a word, and nothing written into it is ever
seen. The kernel's answer cannot be read from watchdog, so it is asked again here:
a watch on the same folder in a new inotify instance, closed at once. Refused with
``ENOSPC`` or ``EMFILE``, the limit is reached, and the folder must be polled.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from collections.abc import Iterable
from functools import cache
from pathlib import Path

#: the kernel's refusals of inotify, and the sysctl to raise for each
INOTIFY_LIMITS = {
    errno.ENOSPC: "fs.inotify.max_user_watches",
    errno.EMFILE: "fs.inotify.max_user_instances",
}
_IN_CLOEXEC = os.O_CLOEXEC
_IN_CREATE = 0x100


def exhausted_limit(folders: Iterable[Path]) -> str | None:
    """The sysctl whose limit refuses a watch on each of ``folders`` at once now, or
    None when the kernel gives them all.

    Any other refusal (a folder gone, not readable) is None: the watch guard sees
    those for itself.
    """
    libc = _libc()
    if libc is None:
        return None
    descriptor = libc.inotify_init1(_IN_CLOEXEC)
    if descriptor < 0:
        return INOTIFY_LIMITS.get(ctypes.get_errno())
    try:
        for folder in folders:
            if libc.inotify_add_watch(descriptor, os.fsencode(folder), _IN_CREATE) < 0:
                refused = INOTIFY_LIMITS.get(ctypes.get_errno())
                if refused is not None:
                    return refused
        return None
    finally:
        os.close(descriptor)  # the watches go with their instance


@cache
def _libc() -> ctypes.CDLL | None:
    """The C library with inotify's calls (Linux), loaded once; None elsewhere."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    except OSError:
        return None
    if not hasattr(libc, "inotify_init1"):
        return None
    libc.inotify_add_watch.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32)
    return libc
