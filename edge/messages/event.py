"""Events: what the hub should hear about as it happens (``edge.event/1``).

Published on ``{prefix}/{site}/{device}/events``, QoS 1, not retained: a file
quarantined, an internal error, the journal failing or recovering. An event
names a file by :func:`~edge.common.privacy.file_tag` and a study by
:func:`~edge.common.privacy.study_hash`, never by a path, a name or a UID: some
exporters build file names from the patient's name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edge.common.clock import now_iso
from edge.common.privacy import file_tag, scrub

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
