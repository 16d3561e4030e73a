"""The engine store with real bundles and ONNX Runtime: install, activate, rollback, remove."""

from __future__ import annotations

import io
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from engine_bundles import edge_cli, flip_byte, make_bundle, make_key, make_signed_bundle, sha256

from edge.config import Config, load_config
from edge.engines import commands
from edge.engines.store import INCOMING, EngineRef, EngineStore, StepFailed
from edge.errors import EngineError


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    folder = tmp_path_factory.mktemp("keys")
    return {"vendor": make_key(folder, "vendor"), "stranger": make_key(folder, "stranger")}


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory, keys: Any) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bundles")
    vendor = keys["vendor"][0]
    return {
        "A": make_signed_bundle(folder / "A", vendor, version="1.0"),
        "B": make_signed_bundle(folder / "B", vendor, version="2.0", threshold=0.3, scale=2.0),
        # large enough (1 MiB model) for the interrupted-copy tests
        "big": make_signed_bundle(folder / "big", vendor, version="3.0", size=512),
    }


@pytest.fixture
def config_path(tmp_path: Path, keys: Any) -> Path:
    path = tmp_path / "config.yaml"
    config = {
        "site": "clinic-1",
        "device": "box-1",
        "state_dir": str(tmp_path / "state"),
        "watch": {"dir": str(tmp_path / "export")},
        "engine": {"backend": "onnxruntime", "trusted_keys": [str(keys["vendor"][1])]},
    }
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def config(config_path: Path) -> Config:
    return load_config(config_path)


def install(config: Config, bundle: Path, **options: Any) -> list[str]:
    lines: list[str] = []
    options.setdefault("allow_unsigned", False)
    options.setdefault("activate", False)
    commands.install(config, bundle, lines.append, **options)
    return lines


def snapshot(store: EngineStore) -> dict[str, str]:
    """Every file of the store but its scratch folder and lock, with its sha256."""
    if not store.root.exists():
        return {}
    return {
        str(p.relative_to(store.root)): sha256(p)
        for p in sorted(store.root.rglob("*"))
        if p.is_file() and INCOMING not in p.parts and p.name != ".lock"
    }


def flip_in_description(manifest: Path) -> None:
    """One flipped bit that still leaves a valid manifest: only the signature can tell."""
    flip_byte(manifest, manifest.read_bytes().index(b"test model"))


def copy_of(bundle: Path, tmp_path: Path) -> Path:
    target = tmp_path / f"copy-{bundle.name}"
    shutil.copytree(bundle, target)
    return target


def test_install_copies_checks_and_self_tests(config: Config, bundles: dict[str, Path]) -> None:
    lines = install(config, bundles["A"])
    store = commands.store_of(config)
    (engine,) = store.installed()
    assert engine.ref == EngineRef("test-engine", "1.0")
    assert engine.signed_by is not None
    for name in ("manifest.yaml", "signature", "model.onnx", "selftest.npz"):
        assert sha256(engine.path / name) == sha256(bundles["A"] / name)
    steps = [line.split()[0] for line in lines if line.startswith("  ")]
    assert steps == ["manifest", "signature", "sha256", "copy", "self-test"]
    assert store.current() is None  # installing is not activating
    assert not any((store.root / INCOMING).iterdir())


def test_install_from_a_tar_gz(config: Config, bundles: dict[str, Path], tmp_path: Path) -> None:
    archive = tmp_path / "bundle.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(bundles["B"], arcname="test-engine-2.0")
    install(config, archive)
    assert [e.ref.version for e in commands.store_of(config).installed()] == ["2.0"]


@pytest.mark.parametrize(
    ("member", "message"),
    [("../escape.txt", "outside the bundle"), ("/etc/escape.txt", "outside the bundle")],
)
def test_an_archive_that_escapes_is_refused(
    config: Config, tmp_path: Path, member: str, message: str
) -> None:
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo(member)
        info.size = 3
        tar.addfile(info, io.BytesIO(b"bad"))
    with pytest.raises(StepFailed, match=re.escape(message)) as error:
        install(config, archive)
    assert error.value.step == "unpack"
    assert not (tmp_path / "escape.txt").exists()


def test_an_archive_with_a_link_is_refused(
    config: Config, bundles: dict[str, Path], tmp_path: Path
) -> None:
    archive = tmp_path / "link.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(bundles["A"], arcname="bundle")
        link = tarfile.TarInfo("bundle/passwd")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tar.addfile(link)
    with pytest.raises(StepFailed, match="is a link"):
        install(config, archive)


@pytest.mark.parametrize(
    ("damage", "step", "message"),
    [
        (lambda b: flip_byte(b / "model.onnx"), "sha256", "model.onnx does not match its sha256"),
        (lambda b: (b / "selftest.npz").unlink(), "sha256", "selftest.npz is missing"),
        (lambda b: flip_in_description(b / "manifest.yaml"), "signature", "bad signature"),
        (lambda b: (b / "signature").unlink(), "signature", "the bundle is not signed"),
    ],
)
def test_a_damaged_bundle_is_refused_and_the_store_unchanged(  # type: ignore[no-untyped-def]
    config: Config, bundles: dict[str, Path], tmp_path: Path, damage, step: str, message: str
) -> None:
    install(config, bundles["A"])
    store = commands.store_of(config)
    before = snapshot(store)
    bundle = copy_of(bundles["B"], tmp_path)
    damage(bundle)
    with pytest.raises(StepFailed, match=re.escape(message)) as error:
        install(config, bundle)
    assert error.value.step == step
    assert snapshot(store) == before


def test_a_bundle_signed_by_an_untrusted_key_is_refused(
    config: Config, keys: Any, tmp_path: Path
) -> None:
    bundle = make_signed_bundle(tmp_path / "b", keys["stranger"][0], version="9.0")
    with pytest.raises(StepFailed, match="not a trusted key") as error:
        install(config, bundle)
    assert error.value.step == "signature"


def test_unsigned_only_with_allow_unsigned(config: Config, tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "unsigned", version="0.1")
    with pytest.raises(StepFailed, match="not signed"):
        install(config, bundle)
    lines = install(config, bundle, allow_unsigned=True)
    assert any("unsigned (--allow-unsigned)" in line for line in lines)
    (engine,) = commands.store_of(config).installed()
    assert engine.signed_by is None


def test_a_failing_self_test_is_refused_with_the_difference(
    config: Config, keys: Any, tmp_path: Path
) -> None:
    bundle = make_signed_bundle(
        tmp_path / "b", keys["vendor"][0], version="5.0", selftest_offset=0.25
    )
    with pytest.raises(StepFailed, match=r"max \|difference\| 0\.25 exceeds the tolerance") as e:
        install(config, bundle)
    assert e.value.step == "self-test"
    assert commands.store_of(config).installed() == []


def test_installing_a_version_twice_is_refused(config: Config, bundles: dict[str, Path]) -> None:
    install(config, bundles["A"])
    with pytest.raises(StepFailed, match="already installed") as error:
        install(config, bundles["A"])
    assert error.value.step == "store"


def test_activate_rollback_and_remove(config: Config, bundles: dict[str, Path]) -> None:
    out: list[str] = []
    store = commands.store_of(config)
    a, b = EngineRef("test-engine", "1.0"), EngineRef("test-engine", "2.0")
    install(config, bundles["A"], activate=True)
    install(config, bundles["B"])
    assert (store.current(), store.previous()) == (a, None)
    commands.activate(config, "2.0", out.append)
    assert (store.current(), store.previous()) == (b, a)
    commands.rollback(config, out.append)
    assert (store.current(), store.previous()) == (a, b)
    with pytest.raises(EngineError, match="is the current engine"):
        commands.remove(config, "1.0", out.append)
    commands.remove(config, "test-engine/2.0", out.append)
    assert [e.ref for e in store.installed()] == [a]
    assert store.previous() is None
    with pytest.raises(EngineError, match="no previous engine"):
        commands.rollback(config, out.append)


def test_activation_refuses_an_engine_altered_in_the_store(
    config: Config, bundles: dict[str, Path]
) -> None:
    install(config, bundles["A"], activate=True)
    install(config, bundles["B"])
    store = commands.store_of(config)
    flip_byte(store.path_of(EngineRef("test-engine", "2.0")) / "model.onnx")
    with pytest.raises(StepFailed, match=re.escape("model.onnx does not match")):
        commands.activate(config, "2.0", print)
    assert store.current() == EngineRef("test-engine", "1.0")
    with pytest.raises(EngineError, match=re.escape("verification failed for test-engine/2.0")):
        commands.verify(config, None, print)


#: ``edge`` with one change: the process kills itself (SIGKILL, as a power cut or the OOM
#: killer would) after the first 256 KiB of model.onnx reached the disk. The store's
#: code runs unchanged; the wrapper only chooses the moment of death.
KILLED_MID_COPY = """
import os, shutil, signal, sys
from edge.cli import main
real_copy = shutil.copyfileobj
def copy_then_die(source, sink, length=0):
    if not str(getattr(sink, "name", "")).endswith("model.onnx"):
        return real_copy(source, sink, length)
    sink.write(source.read(256 * 1024))
    sink.flush()
    os.fsync(sink.fileno())
    os.kill(os.getpid(), signal.SIGKILL)
shutil.copyfileobj = copy_then_die
main(sys.argv[1:])
"""


def test_an_install_killed_half_way_through_the_copy_leaves_the_store_as_it_was(
    config_path: Path, config: Config, bundles: dict[str, Path]
) -> None:
    install(config, bundles["A"], activate=True)
    store = commands.store_of(config)
    before = snapshot(store)
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            KILLED_MID_COPY,
            "engines",
            "install",
            str(bundles["big"]),
            "--config",
            str(config_path),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert run.returncode == -signal.SIGKILL, run.stderr
    partial = list((store.root / INCOMING).rglob("model.onnx"))
    assert [p.stat().st_size for p in partial] == [256 * 1024]  # the copy really was cut
    assert snapshot(store) == before
    assert [e.ref.version for e in store.installed()] == ["1.0"]
    assert store.current() == EngineRef("test-engine", "1.0")
    # The next change removes the leftover, and the same bundle installs cleanly.
    install(config, bundles["big"])
    assert not any((store.root / INCOMING).iterdir())
    assert [e.ref.version for e in store.installed()] == ["1.0", "3.0"]


def _limit_file_size(limit: int) -> Any:
    def apply() -> None:
        # A real I/O failure half-way: the kernel refuses writes past the limit (EFBIG).
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_an_install_whose_copy_fails_reports_the_step_and_cleans_up(
    config_path: Path, config: Config, bundles: dict[str, Path]
) -> None:
    install(config, bundles["A"], activate=True)
    store = commands.store_of(config)
    before = snapshot(store)
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    run = edge_cli(
        "engines",
        "install",
        bundles["big"],
        "--config",
        config_path,
        env=env,
        preexec_fn=_limit_file_size(256 * 1024),
    )
    assert run.returncode == 1
    assert "step copy failed: copying model.onnx: File too large" in run.stderr
    assert snapshot(store) == before
    assert not any((store.root / INCOMING).iterdir())


def test_cli_reports_the_failing_step(
    config_path: Path, bundles: dict[str, Path], tmp_path: Path
) -> None:
    bundle = copy_of(bundles["A"], tmp_path)
    flip_byte(bundle / "model.onnx")
    run = edge_cli("engines", "install", bundle, "--config", config_path)
    assert run.returncode == 1
    assert "step sha256 failed" in run.stderr
    assert "model.onnx does not match its sha256" in run.stderr
    run = edge_cli("engines", "install", bundles["A"], "--config", config_path, "--activate")
    assert run.returncode == 0, run.stderr
    listing = edge_cli("engines", "list", "--config", config_path)
    assert listing.returncode == 0
    assert "current  test-engine/1.0  signed by" in listing.stdout
    assert "backend: onnxruntime -> onnxruntime" in listing.stdout
    assert "plan cache: 0 plan(s)" in listing.stdout


def test_the_daemon_refuses_to_start_without_an_engine(config_path: Path) -> None:
    run = edge_cli("run", "--config", config_path)
    assert run.returncode == 1
    assert "no engine to serve" in run.stderr and "engine.bundle is not set" in run.stderr


def test_trusted_keys_resolve_against_the_configuration_folder(tmp_path: Path) -> None:
    path = tmp_path / "etc" / "config.yaml"
    path.parent.mkdir()
    path.write_text(
        yaml.safe_dump(
            {
                "site": "s",
                "device": "d",
                "state_dir": "state",
                "watch": {"dir": "export"},
                "engine": {"trusted_keys": ["keys/vendor.pub"]},
            }
        )
    )
    config = load_config(path)
    assert config.engine.trusted_keys == (tmp_path / "etc" / "keys" / "vendor.pub",)
    assert config.engine.bundle is None
    assert config.engine_store_dir == tmp_path / "etc" / "state" / "engines"
