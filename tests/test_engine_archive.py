"""An engine archive is unpacked signature first, within a size limit and the free space."""

from __future__ import annotations

import io
import shutil
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from engine_bundles import make_key, make_signed_bundle
from tmpfs import small_state_dir

from edge.bundle.archive import unpack_bundle
from edge.config import load_config
from edge.engines import commands
from edge.engines.store import StepFailed
from edge.errors import EngineError

__all__ = ["small_state_dir"]  # a fixture

ZEROS = 64 << 20


class _Zeros(io.RawIOBase):
    """``size`` zero bytes, produced as read: a big member without a big file."""

    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        count = min(len(buffer), self.left)
        buffer[:count] = b"\0" * count
        self.left -= count
        return count


def archive_of(bundle: Path, path: Path, *, zeros: int = 0, name: str = "padding.bin") -> Path:
    """``bundle`` as a .tar.gz, with a member of ``zeros`` zero bytes placed first."""
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        if zeros:
            info = tarfile.TarInfo(f"engine/{name}")
            info.size = zeros
            tar.addfile(info, _Zeros(zeros))
        tar.add(bundle, arcname="engine")
    return path


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    folder = tmp_path_factory.mktemp("keys")
    return {"vendor": make_key(folder, "vendor"), "stranger": make_key(folder, "stranger")}


def test_the_signature_is_checked_before_anything_but_the_manifest_is_written(
    tmp_path: Path, keys: Any
) -> None:
    bundle = make_signed_bundle(tmp_path / "b", keys["vendor"][0], version="1.0")
    archive = archive_of(bundle, tmp_path / "b.tar.gz", zeros=1 << 20)
    seen: list[list[str]] = []

    def refuse(root: Path) -> None:
        seen.append(sorted(p.name for p in root.rglob("*")))
        raise EngineError("not a trusted key")

    with pytest.raises(EngineError, match="not a trusted key"):
        unpack_bundle(archive, tmp_path / "out", check_signature=refuse)
    assert seen == [["manifest.yaml", "signature"]]
    assert sorted(p.name for p in (tmp_path / "out").rglob("*")) == ["engine", *seen[0]]


def test_only_what_the_manifest_lists_is_unpacked_and_the_size_is_bounded(
    tmp_path: Path, keys: Any
) -> None:
    bundle = make_signed_bundle(tmp_path / "b", keys["vendor"][0], version="1.0")
    archive = archive_of(bundle, tmp_path / "b.tar.gz", zeros=1 << 20)
    root = unpack_bundle(archive, tmp_path / "out")
    assert not (root / "padding.bin").exists()
    assert {p.name for p in root.iterdir()} == {p.name for p in bundle.iterdir()}
    with pytest.raises(EngineError, match="more than 65536 bytes"):
        unpack_bundle(archive, tmp_path / "again", max_bytes=65536)
    assert not (tmp_path / "again").exists()


def test_an_archive_larger_than_the_free_space_is_refused_before_it_fills_the_disk(
    tmp_path: Path, small_state_dir: Path, keys: Any
) -> None:
    config_path = tmp_path / "config.yaml"
    config_path.write_text(
        yaml.safe_dump(
            {
                "site": "clinic-1",
                "device": "box-1",
                "state_dir": str(small_state_dir),
                "watch": {"dir": str(tmp_path / "export")},
                "engine": {"backend": "onnxruntime", "trusted_keys": [str(keys["vendor"][1])]},
            }
        )
    )
    config = load_config(config_path)
    bundle = make_signed_bundle(tmp_path / "b", keys["vendor"][0], version="1.0")
    archive = archive_of(bundle, tmp_path / "big.tar.gz", zeros=ZEROS)
    free_before = shutil.disk_usage(small_state_dir).free
    with pytest.raises(StepFailed, match="unpacks to 64 MiB") as error:
        commands.install(config, archive, lambda _line: None, allow_unsigned=False, activate=False)
    assert error.value.step == "unpack"
    assert shutil.disk_usage(small_state_dir).free >= free_before - (64 << 10)
    assert commands.store_of(config).installed() == []
