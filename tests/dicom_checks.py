"""The DICOM validators the tests run on every SR they produce: dciodvfy and dsrdump.

dicom3tools' ``dciodvfy`` checks the object against the Mammography CAD SR IOD
(modules, attributes, types, values); dcmtk's ``dsrdump`` reads the content tree
and refuses a relationship that PS3.3 Table A.35.5-2 does not allow.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

needs_validators = pytest.mark.skipif(
    shutil.which("dciodvfy") is None or shutil.which("dsrdump") is None,
    reason="dciodvfy (dicom3tools) and dsrdump (dcmtk) are installed by scripts/bootstrap",
)


def validate(path: Path) -> str:
    """Both validators' output; fails the test on any error either reports."""
    iod = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    report = iod.stdout + iod.stderr
    errors = [line for line in report.splitlines() if line.startswith("Error")]
    assert iod.returncode == 0 and not errors, f"dciodvfy:\n{report}"
    tree = subprocess.run(["dsrdump", str(path)], capture_output=True, text=True, timeout=60)
    problems = [line for line in tree.stderr.splitlines() if line.startswith(("E:", "F:"))]
    assert tree.returncode == 0 and not problems, f"dsrdump:\n{tree.stderr}"
    return report
