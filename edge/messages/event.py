"""Events: what the hub should hear about as it happens (``edge.event/1``).

Published on ``{prefix}/{site}/{device}/events``, QoS 1, not retained: a file
quarantined, an internal error, the journal failing or recovering. An event
names a file by :func:`~edge.pipeline.quarantine.file_tag` and a study by
:func:`~edge.pipeline.study.study_hash`, never by a path, a name or a UID: some
exporters build file names from the patient's name.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from edge.health.metrics import now_iso
from edge.pipeline.quarantine import file_tag

EVENT_SCHEMA = "edge.event/1"


def event(
    kind: str,
    *,
    site: str,
    device: str,
    reason: str,
    message: str,
    path: Path | None = None,
    study: str | None = None,
    where: str | None = None,
) -> dict[str, Any]:
    """One ``edge.event/1`` document; ``message`` is scrubbed of ``path``."""
    return {
        "schema": EVENT_SCHEMA,
        "site": site,
        "device": device,
        "at": now_iso(),
        "kind": kind,
        "reason": reason,
        "where": where,
        "file": None if path is None else file_tag(path),
        "study": study,
        "message": message if path is None else scrub(message, path),
    }


def scrub(text: str, path: Path) -> str:
    """``text`` with the file's path, name and stem replaced by its tag.

    Exception messages often quote the path (``No such file or directory:
    '/srv/export/DOE^JANE/1.dcm'``); the tag names the same file without it.
    """
    tag = f"<file {file_tag(path)}>"
    for part in sorted({str(path), os.fspath(path.parent), path.name, path.stem}, key=len)[::-1]:
        if len(part) > 2:  # never replace "", "/" or ".": it would mangle the message
            text = text.replace(part, tag)
    return text
