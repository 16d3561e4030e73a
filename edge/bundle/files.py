"""Careful file handling for the engine store: durable copies, atomic writes.

Copies are fsync'ed before the rename that makes them visible, so a power cut
leaves either the old store or the new one, never a half-written file under a
real name. Archives are unpacked by :mod:`edge.bundle.archive`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

CHUNK = 1 << 20


def copy_durably(source: Path, target: Path) -> None:
    """Copy one file, creating it exclusively, and fsync it before returning."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with source.open("rb") as reader, target.open("xb") as writer:
        shutil.copyfileobj(reader, writer, CHUNK)
        writer.flush()
        os.fsync(writer.fileno())


def fsync_dir(folder: Path) -> None:
    """Make a rename or a new entry in ``folder`` survive a power cut."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``: write a temporary file, fsync, rename, fsync the folder."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with temporary.open("w", encoding="utf-8") as stream:
        stream.write(text)
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(temporary, path)
    fsync_dir(path.parent)
