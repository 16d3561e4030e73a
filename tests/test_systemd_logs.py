"""Logging under systemd: journald's priority prefixes and no timestamp of our own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from support import ROOT

EMIT = """
import logging
from edge.logs import setup_logging
setup_logging({level!r})
log = logging.getLogger("edge.test")
log.debug("a debug line")
log.info("an info line")
log.warning("a warning line")
try:
    raise ValueError("boom")
except ValueError:
    log.exception("an error with its traceback")
"""


def emit(tmp_path: Path, level: str, journal_stream: str | None) -> list[str]:
    """Log one line per level from a child whose stdout is a file; its lines."""
    out = tmp_path / "stdout.log"
    with out.open("wb") as stream:
        env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
        if journal_stream is not None:
            info = os.fstat(stream.fileno())
            named = f"{info.st_dev}:{info.st_ino}" if journal_stream == "this" else journal_stream
            env["JOURNAL_STREAM"] = named
        subprocess.run(
            [sys.executable, "-c", EMIT.format(level=level)],
            stdout=stream,
            env=env,
            cwd=ROOT,
            check=True,
            timeout=60,
        )
    return out.read_text().splitlines()


def test_journal_stream_gets_priorities_and_no_timestamps(tmp_path: Path) -> None:
    lines = ours(emit(tmp_path, "INFO", journal_stream="this"))
    assert lines[0] == "<6>edge.test: an info line"
    assert lines[1] == "<4>edge.test: a warning line"
    assert lines[2] == "<3>edge.test: an error with its traceback"
    # Every line of the traceback keeps the error's priority: journald splits lines.
    assert len(lines) > 4 and all(line.startswith("<3>") for line in lines[2:])
    assert "ValueError: boom" in lines[-1]
    assert not any("debug" in line for line in lines)


def test_level_from_configuration(tmp_path: Path) -> None:
    assert ours(emit(tmp_path, "DEBUG", journal_stream="this"))[0] == "<7>edge.test: a debug line"
    assert ours(emit(tmp_path, "WARNING", journal_stream="this"))[0] == (
        "<4>edge.test: a warning line"
    )


def ours(lines: list[str]) -> list[str]:
    """The test's own lines, from its first on (imports may log before it)."""
    first = next(i for i, line in enumerate(lines) if "edge.test" in line)
    return lines[first:]


def test_redirected_output_keeps_timestamps(tmp_path: Path) -> None:
    # JOURNAL_STREAM inherited, but stdout is not that stream (edge run > file).
    for named in ("1:2", None):
        lines = ours(emit(tmp_path, "INFO", journal_stream=named))
        assert lines[0].endswith("INFO    edge.test: an info line")
        assert lines[0][:4].isdigit() and not lines[0].startswith("<")
