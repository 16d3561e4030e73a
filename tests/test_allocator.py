"""The daemon caps glibc's malloc arenas: threads allocating at once share two."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

#: in a fresh interpreter: threads that allocate at the same time, then glibc's own
#: account of its arenas (malloc_info writes one <heap nr=...> per arena)
PROBE = """
import ctypes, sys, tempfile, threading
from edge.allocator import limit_arenas
if sys.argv[1] == "capped":
    assert limit_arenas()
barrier = threading.Barrier(8)
held = []
def work():
    barrier.wait()
    for _ in range(200):
        held.append(bytearray(4096))
threads = [threading.Thread(target=work) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
libc = ctypes.CDLL(None)
libc.fopen.restype = ctypes.c_void_p
libc.malloc_info.argtypes = (ctypes.c_int, ctypes.c_void_p)
libc.fclose.argtypes = (ctypes.c_void_p,)
with tempfile.NamedTemporaryFile("r") as out:
    stream = libc.fopen(out.name.encode(), b"w")
    libc.malloc_info(0, stream)
    libc.fclose(stream)
    print(out.read().count("<heap nr="))
"""


def arenas(mode: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True
    )
    return int(done.stdout)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="not glibc: no arenas to cap")
def test_threads_allocating_at_once_share_at_most_two_arenas() -> None:
    assert arenas("capped") <= 2
    assert arenas("default") > 2  # the probe does make glibc open more
