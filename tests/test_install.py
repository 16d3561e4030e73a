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


#: what install.sh takes when --python is not given
SYSTEM_PYTHON = Path("/usr/bin/python3")


def run_install(root: Path, *options: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(INSTALL), "--root", str(root), *options],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        env={**os.environ, **env},
    )


def install(root: Path, *options: str, **env: str) -> str:
    done = run_install(root, *options, **env)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def python_on_path_first(folder: Path) -> tuple[str, Path]:
    """A PATH whose first python3 is not the system's; it leaves a mark if it ever runs."""
    folder.mkdir(parents=True)
    marker = folder / "ran"
    fake = folder / "python3"
    fake.write_text(f'#!/bin/sh\ntouch {marker}\nexec {sys.executable} "$@"\n')
    fake.chmod(0o755)
    return f"{folder}:{os.environ['PATH']}", marker


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
    path, marker = python_on_path_first(tmp_path / "bin")
    first = install(root, PATH=path)
    # the system Python, not the python3 first on PATH (root's pyenv, a conda, ...)
    assert not marker.exists()
    assert f"using the Python at {SYSTEM_PYTHON.resolve()}" in first

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
        assert (root / "opt/edge/engines/demo-signing.pub").exists()
    # the demo's private signing key never lands on a box
    assert list((root / "opt/edge").rglob("*.key")) == []
    assert "not creating the user edge" in first

    # The installed program runs, and accepts the example configuration as written.
    version = subprocess.run([edge, "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.strip().startswith("edge ")
    before = snapshot(root)
    second = install(root, PATH=path)
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


def test_an_interpreter_under_a_home_folder_is_refused_with_the_reason(tmp_path: Path) -> None:
    # A copy of the system interpreter under a home folder, as pyenv or conda put one.
    home = tmp_path / "home" / "alice"
    python = home / ".pyenv" / "bin" / "python3"
    python.parent.mkdir(parents=True)
    shutil.copy2(SYSTEM_PYTHON.resolve(), python)
    root = tmp_path / "root"
    root.mkdir()
    done = run_install(root, "--python", str(python), HOME=str(home))
    assert done.returncode == 1
    assert f"{python}, under the home folder {home}" in done.stderr
    assert "ProtectHome=" in done.stderr and "--python /usr/bin/python3" in done.stderr
    assert not (root / "opt").exists()  # refused before anything is made


def test_help_is_the_header_and_nothing_else() -> None:
    done = subprocess.run([str(INSTALL), "--help"], capture_output=True, text=True, check=True)
    assert done.stdout.startswith("Install edge as a systemd service")
    assert "set -euo pipefail" not in done.stdout and "#" not in done.stdout
    assert done.stdout.rstrip().endswith("with --wheelhouse).")
