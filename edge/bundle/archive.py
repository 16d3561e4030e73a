"""Unpacking a technician's ``.tar.gz`` bundle without trusting it: signature first, sizes bounded.

A tar archive is a stream, so the manifest and signature can sit anywhere in it.
Unpacking therefore goes in two passes over the archive:

1. the headers only: every member's name and kind are checked (no absolute name,
   no ``..``, no link, no device), their declared sizes are added up against
   ``max_bytes`` and against the free space of the target's filesystem (leaving
   ``keep_free_bytes``), and ``manifest.yaml`` and ``signature`` are read into
   memory (each at most :data:`MAX_HEAD_BYTES`). Nothing is written yet;
2. those two files are written and ``check_signature`` runs on them: an archive
   signed by no trusted key is refused before its bulk touches the disk. Then only
   the files the (now trusted) manifest lists are extracted, each at most the size
   its header declared; anything else in the archive is left out and logged.

The sha256 of every file is checked afterwards against the manifest, as for a folder.
"""

from __future__ import annotations

import logging
import shutil
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from edge.bundle.manifest import MANIFEST, SIGNATURE, read_manifest
from edge.errors import EngineError

log = logging.getLogger(__name__)

CHUNK = 1 << 20
#: the most an engine bundle may unpack to (a TensorRT plan and its ONNX are hundreds of MB)
MAX_UNPACKED_BYTES = 8 << 30
#: the most ``manifest.yaml`` or ``signature`` may hold
MAX_HEAD_BYTES = 1 << 20
_HEAD = (MANIFEST, SIGNATURE)

SignatureCheck = Callable[[Path], object]


@dataclass(frozen=True)
class _Scan:
    """What the header pass found: the members, where the bundle sits, its head files."""

    members: list[tarfile.TarInfo]
    prefix: tuple[str, ...]
    head: dict[str, bytes]
    total: int


def unpack_bundle(
    archive: Path,
    target: Path,
    *,
    check_signature: SignatureCheck | None = None,
    max_bytes: int = MAX_UNPACKED_BYTES,
    keep_free_bytes: int = 0,
    copies: int = 1,
) -> Path:
    """Unpack the bundle in ``archive`` into ``target``; return the folder holding its manifest.

    ``copies``: how many times the caller will hold the unpacked size on the same
    filesystem (unpacked, then copied), for the free-space check.

    Raises
    ------
    EngineError
        For an unreadable archive, a member that is a link, a device or a name that
        leaves ``target``, sizes over ``max_bytes`` or the free space, no single
        manifest, or (from ``check_signature``) an untrusted signature.
    """
    try:
        with tarfile.open(archive, "r:*") as tar:
            scan = _scan(tar, max_bytes)
            _check_room(target, scan.total, copies, keep_free_bytes)
            root = target.joinpath(*scan.prefix)
            _write_head(root, scan.head)
            if check_signature is not None:
                check_signature(root)
            _extract_listed(tar, scan, root)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise EngineError(f"{archive}: cannot unpack: {exc}") from exc
    return root


def _scan(tar: tarfile.TarFile, max_bytes: int) -> _Scan:
    members: list[tarfile.TarInfo] = []
    total = 0
    while (member := tar.next()) is not None:
        _check_member(member)
        total += member.size
        if total > max_bytes:
            raise EngineError(f"the archive unpacks to more than {max_bytes} bytes; refused")
        members.append(member)
    manifests = [m for m in members if m.isfile() and PurePosixPath(m.name).name == MANIFEST]
    if len(manifests) != 1 or len(PurePosixPath(manifests[0].name).parts) > 2:
        raise EngineError(f"no single folder with a {MANIFEST} in the archive")
    prefix = PurePosixPath(manifests[0].name).parts[:-1]
    head = {}
    for member in members:
        parts = PurePosixPath(member.name).parts
        if member.isfile() and parts[:-1] == prefix and parts[-1] in _HEAD:
            head[parts[-1]] = _read_small(tar, member)
    return _Scan(members, prefix, head, total)


def _check_member(member: tarfile.TarInfo) -> None:
    name = PurePosixPath(member.name)
    if name.is_absolute() or ".." in name.parts:
        raise EngineError(f"archive member {member.name!r} would be written outside the bundle")
    if not (member.isfile() or member.isdir()):
        kind = "a link" if member.issym() or member.islnk() else "not a regular file"
        raise EngineError(f"archive member {member.name!r} is {kind}; bundles hold only files")


def _check_room(target: Path, total: int, copies: int, keep_free_bytes: int) -> None:
    existing = next(folder for folder in (target, *target.parents) if folder.exists())
    free = shutil.disk_usage(existing).free
    if total * copies + keep_free_bytes > free:
        twice = f" ({copies} copies during the install)" if copies > 1 else ""
        raise EngineError(
            f"the archive unpacks to {total >> 20} MiB{twice}; {existing} has {free >> 20} MiB "
            f"free and keeps {keep_free_bytes >> 20} MiB for the journal: free space first"
        )


def _read_small(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    if member.size > MAX_HEAD_BYTES:
        raise EngineError(f"archive member {member.name!r} is over {MAX_HEAD_BYTES} bytes")
    stream = tar.extractfile(member)
    if stream is None:
        raise EngineError(f"archive member {member.name!r} has no content")
    with stream:
        return stream.read(MAX_HEAD_BYTES + 1)


def _write_head(root: Path, head: dict[str, bytes]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for name, data in head.items():
        with (root / name).open("xb") as sink:
            sink.write(data)


def _extract_listed(tar: tarfile.TarFile, scan: _Scan, root: Path) -> None:
    listed = set(read_manifest(root).files)
    for member in scan.members:
        parts = PurePosixPath(member.name).parts
        if member.isdir() or parts[: len(scan.prefix)] != scan.prefix:
            continue
        relative = PurePosixPath(*parts[len(scan.prefix) :])
        if str(relative) in _HEAD:
            continue
        if str(relative) not in listed:
            log.warning("archive member %s is not in the manifest: left out", member.name)
            continue
        _extract(tar, member, root / Path(*relative.parts))


def _extract(tar: tarfile.TarFile, member: tarfile.TarInfo, path: Path) -> None:
    # Written by hand rather than extractall(): no mode, owner or time from the
    # archive is applied, and at most the size the header declared is written.
    path.parent.mkdir(parents=True, exist_ok=True)
    source = tar.extractfile(member)
    if source is None:
        raise EngineError(f"archive member {member.name!r} has no content")
    with source, path.open("xb") as sink:
        shutil.copyfileobj(source, sink, CHUNK)
