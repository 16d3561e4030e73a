"""Careful file handling for the engine store: safe unpacking, durable copies, atomic writes.

A technician's archive is not trusted until its signature is checked, and that
check comes after unpacking, so unpacking itself must not be able to write outside
its folder: no absolute names, no ``..``, no links, no devices. Copies are
fsync'ed before the rename that makes them visible, so a power cut leaves either
the old store or the new one, never a half-written file under a real name.
"""

from __future__ import annotations

import os
import shutil
import tarfile
from pathlib import Path, PurePosixPath

from edge.bundle.manifest import MANIFEST
from edge.errors import EngineError

CHUNK = 1 << 20


def unpack_archive(archive: Path, target: Path) -> Path:
    """Unpack a ``.tar.gz`` bundle into ``target``; return the folder holding the manifest.

    Raises
    ------
    EngineError
        For an unreadable archive, or a member that is a link, a device or a name
        that leaves ``target``.
    """
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for member in members:
                _check_member(member)
            for member in members:
                _extract_member(tar, member, target)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise EngineError(f"{archive}: cannot unpack: {exc}") from exc
    return _bundle_root(target, archive)


def _check_member(member: tarfile.TarInfo) -> None:
    name = PurePosixPath(member.name)
    if name.is_absolute() or ".." in name.parts:
        raise EngineError(f"archive member {member.name!r} would be written outside the bundle")
    if not (member.isfile() or member.isdir()):
        kind = "a link" if member.issym() or member.islnk() else "not a regular file"
        raise EngineError(f"archive member {member.name!r} is {kind}; bundles hold only files")


def _extract_member(tar: tarfile.TarFile, member: tarfile.TarInfo, target: Path) -> None:
    # Written by hand rather than extractall() so that no mode, owner or time from
    # the archive is applied and the checks above are the only rules that matter.
    path = target.joinpath(*PurePosixPath(member.name).parts)
    if member.isdir():
        path.mkdir(parents=True, exist_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    source = tar.extractfile(member)
    if source is None:
        raise EngineError(f"archive member {member.name!r} has no content")
    with source, path.open("xb") as sink:
        shutil.copyfileobj(source, sink, CHUNK)


def _bundle_root(target: Path, archive: Path) -> Path:
    if (target / MANIFEST).is_file():
        return target
    candidates = [child for child in target.iterdir() if (child / MANIFEST).is_file()]
    if len(candidates) != 1:
        raise EngineError(f"{archive}: no single folder with a {MANIFEST} in the archive")
    return candidates[0]


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
