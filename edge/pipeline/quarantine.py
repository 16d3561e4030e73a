"""Quarantine: where files the appliance cannot use are put, with the reason beside them.

The quarantined name is a timestamp and a hash of the original path, never the
original name, which some exporters build from the patient's name. The reason
file keeps the original path for the technician on the box.
"""

from __future__ import annotations

import logging
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path

from edge.common.privacy import file_tag
from edge.errors import IngestError

log = logging.getLogger(__name__)


def printable(path: Path) -> str:
    """``path`` on one line: undecodable bytes and control characters escaped.

    A file name may hold a newline or bytes that are not UTF-8; the reason file
    must stay one field per line.
    """
    text = os.fsencode(path).decode("utf-8", "backslashreplace")
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


def quarantine(path: Path, error: IngestError, folder: Path) -> Path | None:
    """Move ``path`` into ``folder`` and write ``<name>.reason.txt`` beside it.

    Returns the new path, or ``None`` when the file could not be moved (it is gone,
    or the folder is not writable); the reason file is still written when possible.
    """
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    name = f"{stamp}-{file_tag(path)}"
    target = folder / name
    moved: Path | None = target
    try:
        shutil.move(str(path), str(target))
    except OSError as exc:
        log.error("could not move %s into quarantine: %s", file_tag(path), exc.strerror or exc)
        moved = None
    reason_text = (
        f"reason: {error.reason}\n"
        f"detail: {error.detail}\n"
        f"original: {printable(path)}\n"
        f"moved: {'yes' if moved else 'no, it stays where it was'}\n"
        f"time: {stamp}\n"
    )
    try:
        (folder / f"{name}.reason.txt").write_text(reason_text, encoding="utf-8", errors="replace")
    except OSError as exc:
        log.error("could not write the quarantine reason for %s: %s", file_tag(path), exc)
    return moved
