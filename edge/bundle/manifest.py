"""Engine bundles: a folder with ``manifest.yaml``, the model and its self-test set.

The manifest names the model, the tensors it takes and gives, how images are
prepared for it, the decision threshold, and the sha256 of every file, so that a
half-copied or altered bundle is refused before it scores anyone.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import Field, ValidationError

from edge.common.model import StrictModel
from edge.errors import EngineError

MANIFEST = "manifest.yaml"


class TensorSpec(StrictModel):
    name: str
    #: dimensions; a string (``batch``) marks a dynamic one
    shape: tuple[int | str, ...]
    dtype: Literal["float32", "float16"]


class Preprocessing(StrictModel):
    height: Annotated[int, Field(ge=16, le=8192)]
    width: Annotated[int, Field(ge=16, le=8192)]
    orientation: Literal["chest_wall_left", "chest_wall_right"] = "chest_wall_left"
    intensity: Literal["minmax"] = "minmax"


class SelfTest(StrictModel):
    file: str
    tolerance: Annotated[float, Field(gt=0)]


class Accepts(StrictModel):
    for_processing: bool = False
    tomosynthesis: bool = False


class Manifest(StrictModel):
    schema_: Literal["edge.engine/1"] = Field(alias="schema")
    name: str
    version: str
    description: str = ""
    model: str
    model_fp16: str | None = None
    inputs: tuple[TensorSpec, ...] = Field(min_length=1, max_length=1)
    outputs: tuple[TensorSpec, ...] = Field(min_length=1, max_length=1)
    preprocessing: Preprocessing
    threshold: Annotated[float, Field(ge=0, le=1)]
    selftest: SelfTest | None = None
    accepts: Accepts = Accepts()
    training: dict[str, object] | None = None
    files: dict[str, Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]]


@dataclass(frozen=True)
class Bundle:
    """A bundle on disk whose manifest parsed and whose files match their sha256."""

    path: Path
    manifest: Manifest

    @property
    def model_path(self) -> Path:
        return self.path / self.manifest.model

    @property
    def model_sha256(self) -> str:
        return self.manifest.files[self.manifest.model]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(folder: Path) -> Manifest:
    path = folder / MANIFEST
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise EngineError(f"{path}: cannot read manifest: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise EngineError(f"{path}: manifest is not valid YAML: {exc}") from exc
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise EngineError(f"{path}: invalid manifest: {problems}") from None


def load_bundle(folder: Path) -> Bundle:
    """Parse a bundle's manifest and check every file it lists against its sha256.

    Raises
    ------
    EngineError
        Naming the file that is missing or whose content differs.
    """
    manifest = read_manifest(folder)
    referenced = {manifest.model} | ({manifest.selftest.file} if manifest.selftest else set())
    if manifest.model_fp16:
        referenced.add(manifest.model_fp16)
    unlisted = referenced - manifest.files.keys()
    if unlisted:
        raise EngineError(f"{folder}: manifest has no sha256 for {', '.join(sorted(unlisted))}")
    for name, expected in manifest.files.items():
        path = folder / name
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise EngineError(f"{folder}: file name {name!r} leaves the bundle")
        if not path.is_file():
            raise EngineError(f"{folder}: {name} is missing")
        actual = sha256_file(path)
        if actual != expected:
            raise EngineError(
                f"{folder}: {name} does not match its sha256 "
                f"(manifest {expected[:12]}…, file {actual[:12]}…)"
            )
    return Bundle(path=folder, manifest=manifest)
