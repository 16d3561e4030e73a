"""Names for files and studies that identify them to us and to no one else.

Some exporters build file names from the patient's name, and a Study Instance UID
is an identifier in its own right, so neither may appear in a log line, an event or
an MQTT message. Every stable short name, and the scrubbing of messages that may
quote a path, is made here, so that there is one place to review.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def file_tag(path: Path) -> str:
    """A short stable name for a file in logs and events."""
    return hashlib.sha256(str(path).encode("utf-8", "surrogateescape")).hexdigest()[:10]


def study_hash(study_uid: str) -> str:
    """A short stable name of a study for log lines, which never carry the UID itself."""
    return hashlib.sha256(study_uid.encode()).hexdigest()[:10]


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
