"""Manifest parsing, sha256 and signature checks: every refusal with its own message."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml
from engine_bundles import flip_byte, make_bundle, make_key, make_signed_bundle

from edge.bundle.manifest import SIGNATURE, load_bundle, read_manifest
from edge.engines.signing import load_public_key, sign_bundle, verify_bundle
from edge.errors import EngineError


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    folder = tmp_path_factory.mktemp("keys")
    return {"vendor": make_key(folder, "vendor"), "stranger": make_key(folder, "stranger")}


@pytest.fixture
def signed(tmp_path: Path, keys: dict[str, tuple[Path, Path]]) -> Path:
    return make_signed_bundle(tmp_path / "bundle", keys["vendor"][0], version="1.0")


def trusted(keys: dict[str, tuple[Path, Path]], *names: str) -> list:  # type: ignore[type-arg]
    return [load_public_key(keys[name][1]) for name in names]


def test_manifest_parses_into_its_fields(signed: Path) -> None:
    manifest = read_manifest(signed)
    assert (manifest.name, manifest.version, manifest.threshold) == ("test-engine", "1.0", 0.5)
    assert manifest.inputs[0].shape == ("batch", 1, 64, 64)
    assert manifest.selftest is not None and manifest.selftest.file == "selftest.npz"
    assert set(manifest.files) == {"model.onnx", "selftest.npz"}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda m: m.pop("threshold"), "threshold: Field required"),
        (lambda m: m.update(thresold=0.5), "thresold: Extra inputs are not permitted"),
        (lambda m: m["files"].update({"model.onnx": "abc"}), "files.model.onnx"),
        (lambda m: m.update(schema="edge.engine/2"), "schema"),
    ],
)
def test_invalid_manifest_is_refused_with_the_key(signed: Path, change, expected: str) -> None:  # type: ignore[no-untyped-def]
    path = signed / "manifest.yaml"
    manifest = yaml.safe_load(path.read_text())
    change(manifest)
    path.write_text(yaml.safe_dump(manifest))
    with pytest.raises(EngineError, match="invalid manifest") as error:
        read_manifest(signed)
    assert expected in str(error.value)


@pytest.mark.parametrize("name", ["model.onnx", "selftest.npz"])
def test_a_flipped_byte_in_a_file_names_that_file(signed: Path, name: str) -> None:
    flip_byte(signed / name)
    with pytest.raises(EngineError, match=re.escape(f"{name} does not match its sha256")):
        load_bundle(signed)


def test_a_missing_file_is_named(signed: Path) -> None:
    (signed / "selftest.npz").unlink()
    with pytest.raises(EngineError, match=re.escape("selftest.npz is missing")):
        load_bundle(signed)


def test_signature_of_the_vendor_key_verifies(signed: Path, keys) -> None:  # type: ignore[no-untyped-def]
    key = verify_bundle(signed, trusted(keys, "stranger", "vendor"))
    assert key.path == keys["vendor"][1]


def test_a_flipped_byte_in_the_manifest_breaks_the_signature(signed: Path, keys) -> None:  # type: ignore[no-untyped-def]
    manifest = signed / "manifest.yaml"
    text = manifest.read_text()
    manifest.write_text(text.replace("threshold: 0.5", "threshold: 0.4"))
    with pytest.raises(
        EngineError, match=re.escape("bad signature: it does not match manifest.yaml")
    ):
        verify_bundle(signed, trusted(keys, "vendor"))


def test_a_flipped_byte_in_the_signature_is_refused(signed: Path, keys) -> None:  # type: ignore[no-untyped-def]
    path = signed / SIGNATURE
    algorithm, key_id, signature = path.read_text().split()
    flipped = ("B" if signature[10] == "A" else "A").join([signature[:10], signature[11:]])
    path.write_text(f"{algorithm} {key_id} {flipped}\n")
    with pytest.raises(EngineError, match="bad signature"):
        verify_bundle(signed, trusted(keys, "vendor"))


def test_a_bundle_signed_by_another_key_is_refused(tmp_path: Path, keys) -> None:  # type: ignore[no-untyped-def]
    bundle = make_signed_bundle(tmp_path / "b", keys["stranger"][0], version="1.0")
    with pytest.raises(EngineError, match="which is not a trusted key"):
        verify_bundle(bundle, trusted(keys, "vendor"))


def test_an_unsigned_bundle_is_refused(tmp_path: Path, keys) -> None:  # type: ignore[no-untyped-def]
    bundle = make_bundle(tmp_path / "b", version="1.0")
    with pytest.raises(EngineError, match="the bundle is not signed"):
        verify_bundle(bundle, trusted(keys, "vendor"))


def test_a_malformed_signature_file_is_refused(signed: Path, keys) -> None:  # type: ignore[no-untyped-def]
    (signed / SIGNATURE).write_text("rsa 1234 abcd\n")
    with pytest.raises(EngineError, match="malformed"):
        verify_bundle(signed, trusted(keys, "vendor"))


def test_re_signing_after_a_change_verifies_again(signed: Path, keys) -> None:  # type: ignore[no-untyped-def]
    copy = signed.parent / "copy"
    shutil.copytree(signed, copy)
    (copy / "manifest.yaml").write_text((copy / "manifest.yaml").read_text() + "\n")
    sign_bundle(copy, keys["vendor"][0])
    verify_bundle(copy, trusted(keys, "vendor"))


DEMO = Path(__file__).resolve().parents[1] / "engines"


@pytest.mark.skipif(
    not (DEMO / "demo" / SIGNATURE).is_file(),
    reason="engines/demo is not signed yet: scripts/sign-bundle engines/demo "
    "--key engines/demo-signing-DEMO-ONLY.key --check engines/demo-signing.pub",
)
def test_the_demo_bundle_is_signed_by_the_demo_key() -> None:
    load_bundle(DEMO / "demo")
    verify_bundle(DEMO / "demo", [load_public_key(DEMO / "demo-signing.pub")])
