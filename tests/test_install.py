"""scripts/install.sh into a temporary root: the expected files, twice the same, a clean removal.

The first run builds a real virtual environment with every dependency from the
package registry (pip's cache makes that a matter of unpacking).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from support import ROOT

INSTALL = ROOT / "scripts" / "install.sh"

pytestmark = pytest.mark.slow


def install(root: Path, *options: str) -> str:
    done = subprocess.run(
        [str(INSTALL), "--root", str(root), "--python", sys.executable, *options],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def snapshot(root: Path) -> dict[str, tuple[object, ...]]:
    """Every entry under ``root``: type, mode, size, mtime and content hash or link target."""
    entries: dict[str, tuple[object, ...]] = {}
    for folder, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            path = Path(folder) / name
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                what: object = os.readlink(path)
            elif stat.S_ISREG(info.st_mode):
                what = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                what = None
            key = str(path.relative_to(root))
            entries[key] = (stat.filemode(info.st_mode), info.st_size, info.st_mtime_ns, what)
    return entries


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_install_twice_then_uninstall(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    first = install(root)

    edge = root / "opt/edge/venv/bin/edge"
    assert os.access(edge, os.X_OK)
    assert os.readlink(root / "usr/local/bin/edge") == "/opt/edge/venv/bin/edge"
    config = root / "etc/edge/config.yaml"
    example = ROOT / "systemd/config.example.yaml"
    assert config.read_text() == example.read_text()
    assert (root / "etc/edge/config.example.yaml").read_text() == example.read_text()
    unit = root / "etc/systemd/system/edge.service"
    assert unit.read_text() == (ROOT / "systemd/edge.service").read_text()
    credentials = root / "etc/edge/credentials"
    assert mode(credentials) == 0o700
    for name in ("mqtt-password", "mqtt-tls-key"):
        assert mode(credentials / name) == 0o600
    assert (root / "var/lib/edge").is_dir() and (root / "srv/edge/export").is_dir()
    if shutil.which("systemctl"):
        wants = root / "etc/systemd/system/multi-user.target.wants/edge.service"
        assert os.readlink(wants) == "/etc/systemd/system/edge.service"
    if (ROOT / "engines/demo/manifest.yaml").exists():
        assert (root / "opt/edge/engines/demo/manifest.yaml").exists()
    assert "not creating the user edge" in first

    # The installed program runs, and accepts the example configuration as written.
    version = subprocess.run([edge, "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.strip().startswith("edge ")
    before = snapshot(root)
    second = install(root)
    assert snapshot(root) == before
    assert "installed from this source already" in second
    assert "kept the existing" in second

    config.write_text(config.read_text().replace("site: clinic-1", "site: clinic-7"))
    checked = subprocess.run(
        [edge, "config", "check", str(config)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stderr
    assert "site clinic-7" in checked.stdout

    removed = install(root, "--uninstall")
    assert not unit.exists() and not (root / "opt/edge").exists()
    assert not (root / "etc/systemd/system/multi-user.target.wants/edge.service").exists()
    assert not (root / "usr/local/bin/edge").is_symlink()
    assert "site: clinic-7" in config.read_text()  # the technician's configuration stays
    assert (root / "var/lib/edge").is_dir() and (credentials / "mqtt-password").exists()
    assert "kept the configuration" in removed
