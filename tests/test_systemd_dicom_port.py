"""systemd/edge-dicom-port.conf: the drop-in that lets the service listen on port 104."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from support import ROOT
from test_systemd_unit import INSTALLED_EDGE, UNIT, needs_systemd_analyze

DROP_IN = ROOT / "systemd" / "edge-dicom-port.conf"


def settings(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith(("#", "["))]


def test_the_drop_in_grants_the_bind_capability_and_nothing_else() -> None:
    assert settings(DROP_IN.read_text()) == [
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
    ]
    assert "NoNewPrivileges=yes" in UNIT.read_text()  # the capability comes without setuid


@needs_systemd_analyze
def test_systemd_analyze_verify_accepts_the_unit_with_the_drop_in(tmp_path: Path) -> None:
    edge = Path(sys.executable).parent / "edge"
    unit = UNIT.read_text().replace(INSTALLED_EDGE, str(edge))
    copy = tmp_path / "edge.service"
    # A drop-in's [Service] lines apply as if appended to the unit's own.
    copy.write_text(unit + "\n" + DROP_IN.read_text())
    done = subprocess.run(
        ["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, check=False
    )
    findings = [line for line in (done.stdout + done.stderr).splitlines() if "edge.service" in line]
    assert done.returncode == 0, done.stderr
    assert findings == []
