"""A small filesystem for the fault tests: a tmpfs (8 MiB for a state folder, root only),
and filling it."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def mounted_tmpfs(folder: Path, size_mb: int) -> Iterator[Path]:
    """A tmpfs of ``size_mb`` at ``folder`` (root only; the test is skipped elsewhere)."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"needs root to mount a small tmpfs: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.fixture
def small_state_dir(tmp_path: Path) -> Iterator[Path]:
    """``tmp_path/state`` on a tmpfs of 8 MiB, unmounted afterwards; skips where not allowed."""
    if shutil.which("mount") is None:
        pytest.skip("needs the mount command to make a small filesystem")
    with mounted_tmpfs(tmp_path / "state", 8) as folder:
        yield folder


def fill(folder: Path) -> Path:
    """Write a file into ``folder`` until its filesystem has no byte left; return it."""
    filler = folder / "filler.bin"
    descriptor = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        for size in (1 << 16, 512, 1):  # big blocks first, then what still fits
            with contextlib.suppress(OSError):  # ENOSPC: what this function is for
                while os.write(descriptor, b"\0" * size):
                    pass
    finally:
        os.close(descriptor)
    return filler
