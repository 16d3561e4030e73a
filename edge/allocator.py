"""The C allocator's arenas: at most two, so that the daemon's memory stays flat.

glibc gives each thread that allocates while another holds an arena a new arena
of its own, up to eight per core, and an arena's free memory is seldom given
back. The daemon hands 3.4 MB model inputs from ingest threads to the inference
thread, so each of its threads ends up holding room for several: measured with
the bench's soak on the 2-core development VM, the daemon grew from 180 to 191 MB
over its first 2,000 images before levelling off, and from 170 to 173 MB with
two arenas, at no measurable cost in latency (docs/bench.md).

``MALLOC_ARENA_MAX`` in the environment does the same before the process starts;
this sets it from inside, so that the daemon behaves alike under systemd, the
bench and a shell. Other C libraries (musl) have no arenas: nothing to do.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

#: ``M_ARENA_MAX`` in glibc's malloc.h
M_ARENA_MAX = -8
ARENAS = 2


def limit_arenas(arenas: int = ARENAS) -> bool:
    """Cap glibc's malloc arenas for threads started from now on; False if not glibc."""
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return False
    libc = ctypes.CDLL(libc_name)
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return False
    libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    done = bool(libc.mallopt(M_ARENA_MAX, arenas))
    log.debug("malloc arenas capped at %d: %s", arenas, done)
    return done
