"""systemd/edge.service: systemd's own checker accepts it, and it says what the issue asks."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support import ROOT

UNIT = ROOT / "systemd" / "edge.service"
INSTALLED_EDGE = "/opt/edge/venv/bin/edge"

needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze is missing (scripts/bootstrap installs the systemd package)",
)


def service_section() -> dict[str, list[str]]:
    """``[Service]`` as key -> every value given (a key may repeat)."""
    values: dict[str, list[str]] = {}
    section = ""
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line
            continue
        if section == "[Service]":
            key, _, value = line.partition("=")
            values.setdefault(key, []).append(value)
    return values


@needs_systemd_analyze
def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    # verify insists that ExecStart's program exists: point it at this checkout's
    # `edge`, which is what install.sh puts at /opt/edge/venv/bin/edge.
    edge = Path(sys.executable).parent / "edge"
    assert edge.exists()
    text = UNIT.read_text()
    assert INSTALLED_EDGE in text
    copy = tmp_path / "edge.service"
    copy.write_text(text.replace(INSTALLED_EDGE, str(edge)))
    done = subprocess.run(
        ["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, check=False
    )
    # verify exits 0 on unknown keys; any line it prints about the unit is a finding.
    findings = [line for line in (done.stdout + done.stderr).splitlines() if "edge.service" in line]
    assert done.returncode == 0, done.stderr
    assert findings == []


@needs_systemd_analyze
def test_security_exposure_is_low_and_the_readme_says_so() -> None:
    done = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(UNIT)],
        capture_output=True,
        text=True,
        check=False,
    )
    match = re.search(r"Overall exposure level for edge\.service: (\d+\.\d)", done.stdout)
    assert match, done.stdout + done.stderr
    exposure = float(match.group(1))
    assert exposure <= 2.5
    readme = (ROOT / "README.md").read_text()
    assert f"exposure level {match.group(1)}" in readme


def test_unit_is_a_watched_notify_service_with_least_privilege() -> None:
    service = service_section()

    def one(key: str) -> str:
        assert len(service.get(key, [])) == 1, key
        return service[key][0]

    assert one("Type") == "notify"
    assert one("WatchdogSec") == "30s"
    assert one("Restart") == "on-failure"
    assert one("ExecReload") == "/bin/kill -HUP $MAINPID"
    assert one("ExecStart").startswith(f"{INSTALLED_EDGE} run --config /etc/edge/config.yaml")
    assert one("User") == "edge"
    assert one("ProtectSystem") == "strict"
    assert one("StateDirectory") == "edge"
    assert one("ConfigurationDirectory") == "edge"
    assert one("CapabilityBoundingSet") == ""
    assert one("SupplementaryGroups") == "video"
    for key in ("NoNewPrivileges", "PrivateTmp", "ProtectHome"):
        assert one(key) == "yes", key
    assert "-/srv/edge" in one("ReadWritePaths")
    devices = " ".join(service["DeviceAllow"])
    for device in ("char-nvidia*", "nvhost", "/dev/nvmap"):
        assert device in devices
    assert sorted(service["LoadCredential"]) == [
        "mqtt-password:/etc/edge/credentials/mqtt-password",
        "mqtt-tls-key:/etc/edge/credentials/mqtt-tls-key",
    ]


def test_unit_parses_as_ini() -> None:
    # The same file read by a plain INI reader: no stray text outside sections.
    parser = configparser.RawConfigParser(strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    assert parser.sections() == ["Unit", "Service", "Install"]
    assert parser.get("Install", "WantedBy") == "multi-user.target"
