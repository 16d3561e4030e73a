"""Every refusal about keys says what to do, and --allow-unsigned does what it says.

The technician's first install is the real demo bundle with the shipped example
configuration, which trusts no key: the refusal must name the key that signed it,
where a public key goes and the configuration line to add, and the doctor must
give that fix, not "install again", once a store engine's key is no longer trusted.
"""

from __future__ import annotations

import re
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from engine_bundles import edge_cli, make_key, make_signed_bundle
from support import ROOT

from edge.bundle.manifest import read_manifest
from edge.config import load_config
from edge.engines import commands
from edge.engines.signing import DEMO_KEY_ID, DEMO_PUBLIC_KEY, KEYS_DIR, load_public_key
from edge.engines.store import StepFailed
from edge.tools.doctor.engine import check_engine

DEMO = ROOT / "engines" / "demo"
EXAMPLE = ROOT / "systemd" / "config.example.yaml"


def write_config(tmp_path: Path, *trusted: Path) -> Path:
    config = {
        "site": "clinic-1",
        "device": "box-1",
        "state_dir": str(tmp_path / "state"),
        "watch": {"dir": str(tmp_path / "export")},
        "engine": {"backend": "onnxruntime", "trusted_keys": [str(key) for key in trusted]},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_the_demo_key_id_is_the_shipped_public_key() -> None:
    assert load_public_key(ROOT / "engines" / "demo-signing.pub").key_id == DEMO_KEY_ID


def test_installing_the_demo_bundle_untrusted_says_which_key_and_the_line_to_add(
    tmp_path: Path,
) -> None:
    archive = tmp_path / "demo-1.0.0.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(DEMO, arcname="demo")
    run = edge_cli("engines", "install", archive, "--config", write_config(tmp_path))
    assert run.returncode == 1
    assert f"{archive}/signature: signed with the demo key {DEMO_KEY_ID}" in run.stderr
    assert "_incoming" not in run.stderr  # the archive named, not a scratch folder
    assert "systemctl restart edge" in run.stderr
    assert "engine.trusted_keys lists no key" in run.stderr
    fix = run.stderr.split("fix: ", 1)[1]
    assert f"trusted_keys: [{DEMO_PUBLIC_KEY}]" in fix and "under engine:" in fix
    assert "test box only" in fix and "--allow-unsigned" in fix


def test_a_vendor_key_refusal_names_the_key_and_where_its_public_key_goes(
    tmp_path: Path,
) -> None:
    private, _ = make_key(tmp_path / "keys", "vendor")
    bundle = make_signed_bundle(tmp_path / "bundle", private, version="1.0")
    config = load_config(write_config(tmp_path))
    with pytest.raises(StepFailed) as caught:
        commands.install(config, bundle, print, allow_unsigned=False, activate=False)
    signer = (bundle / "signature").read_text().split()[1]
    assert caught.value.step == "signature"
    assert f"signed with key {signer}, which is not a trusted key" in str(caught.value)
    assert f"into {KEYS_DIR}/" in caught.value.fix
    assert f"trusted_keys: [{KEYS_DIR}/VENDOR.pub]" in caught.value.fix


def test_allow_unsigned_installs_an_untrusted_signed_bundle_and_says_so_loudly(
    tmp_path: Path,
) -> None:
    path = write_config(tmp_path)
    run = edge_cli("engines", "install", DEMO, "--allow-unsigned", "--config", path)
    assert run.returncode == 0, run.stderr
    assert re.search(r"signature\s+ok\s+NOT VERIFIED \(signed with key a2d1", run.stdout)
    version = read_manifest(DEMO).version
    assert f"WARNING: demo/{version} is installed WITHOUT a verified signature" in run.stdout
    (engine,) = commands.store_of(load_config(path)).installed()
    assert engine.signed_by is None


def test_allow_unsigned_never_accepts_a_bad_signature_of_a_trusted_key(tmp_path: Path) -> None:
    private, public = make_key(tmp_path / "keys", "vendor")
    bundle = make_signed_bundle(tmp_path / "bundle", private, version="1.0")
    manifest = bundle / "manifest.yaml"
    manifest.write_text(manifest.read_text().replace("threshold: 0.5", "threshold: 0.1"))
    config = load_config(write_config(tmp_path, public))
    with pytest.raises(StepFailed, match="bad signature"):
        commands.install(config, bundle, print, allow_unsigned=True, activate=False)


def test_doctor_names_the_trust_fix_when_the_store_engine_is_no_longer_trusted(
    tmp_path: Path,
) -> None:
    private, public = make_key(tmp_path / "keys", "vendor")
    bundle = make_signed_bundle(tmp_path / "bundle", private, version="1.0")
    trusted = load_config(write_config(tmp_path, public))
    commands.install(trusted, bundle, print, allow_unsigned=False, activate=True)
    untrusted = load_config(write_config(tmp_path))
    check, _ = check_engine(untrusted)
    assert not check.ok
    assert "not a trusted key" in check.detail
    assert "trusted_keys:" in check.fix and "install the engine again" not in check.fix


def test_the_example_configuration_explains_trusted_keys_and_its_demo_line_loads(
    tmp_path: Path,
) -> None:
    text = EXAMPLE.read_text()
    assert "test box only" in text and "trusted_keys" in text
    demo_line = next(line for line in text.splitlines() if DEMO_PUBLIC_KEY in line)
    # uncommented as the comment says, the line is valid where it stands
    uncommented = text.replace(demo_line, demo_line.replace("# ", "", 1))
    path = tmp_path / "config.yaml"
    path.write_text(uncommented)
    config: Any = load_config(path)
    assert config.engine.trusted_keys == (Path(DEMO_PUBLIC_KEY),)
