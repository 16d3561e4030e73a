"""Names for files and studies that identify them to us and to no one else.

Some exporters build file names from the patient's name, and a Study Instance UID
is an identifier in its own right, so neither may appear in a log line, an event or
an MQTT message. Every stable short name, and the scrubbing of messages that may
quote a path, is made here, so that there is one place to review.

A misfiled element can hold a patient's name too, and exception texts quote the
values they choke on (``invalid literal for int() with base 10: 'DOE^JANE'``). A
reason names the attribute and what was wrong with it: a value is quoted only
from a closed set of defined terms (:func:`closed`), and an exception's text goes
out only through :func:`describe`, which drops every quoted part.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Collection
from pathlib import Path

_QUOTED = re.compile(r"""b?'(?:[^'\\]|\\.)*'|b?"(?:[^"\\]|\\.)*\"""")
#: the most of an exception's text a reason keeps
MAX_TEXT = 300


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


def closed(value: str, allowed: Collection[str], what: str) -> str:
    """``value`` when it is one of ``allowed``, else a phrase that names only ``what``."""
    return value if value in allowed else f"an unrecognised {what}"


def describe(exc: BaseException) -> str:
    """``Type: text`` of an exception, with every quoted value in the text taken out."""
    text = without_values(str(exc))
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def without_values(text: str) -> str:
    """``text`` with every quoted part replaced: for messages built from exception texts."""
    return " ".join(_QUOTED.sub("<value>", text).split())[:MAX_TEXT]
