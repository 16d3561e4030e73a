"""Engine bundles: a folder with ``manifest.yaml``, the model and its self-test set.

The manifest names the model, the tensors it takes and gives, how images are
prepared for it, the decision threshold, and the sha256 of every file, so that a
half-copied or altered bundle is refused before it scores anyone. A model may give a
second output, a suspicion map over its input, from which the box locates findings
(:mod:`edge.pipeline.findings`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import Field, ValidationError, model_validator
from pydantic_core import ErrorDetails

from edge.common.model import StrictModel
from edge.errors import EngineError

MANIFEST = "manifest.yaml"
#: the Ed25519 signature over the manifest's bytes (edge.engines.signing)
SIGNATURE = "signature"


class TensorSpec(StrictModel):
    name: str
    #: dimensions; a string (``batch``) marks a dynamic one
    shape: tuple[int | str, ...]
    dtype: Literal["float32", "float16"]


class OutputSpec(TensorSpec):
    """One output of the model, and what it means.

    ``score``: one row per image whose first value is the image's score. ``suspicion_map``:
    a map ``[batch, 1, rows, columns]`` of values in [0, 1] laid over the model's input
    (cell ``[i, j]`` covers input rows ``i * height / rows`` to ``(i + 1) * height / rows``,
    and likewise for columns); its peaks at or above ``threshold`` become findings, at
    most ``max_findings`` per image.
    """

    meaning: Literal["score", "suspicion_map"] = "score"
    #: the map's operating point for a finding (suspicion maps only)
    threshold: Annotated[float, Field(gt=0, le=1)] | None = None
    #: the most findings one image may give (suspicion maps only)
    max_findings: Annotated[int, Field(ge=1, le=32)] | None = None


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
    #: the score first; then, optionally, a suspicion map
    outputs: tuple[OutputSpec, ...] = Field(min_length=1, max_length=2)
    preprocessing: Preprocessing
    threshold: Annotated[float, Field(ge=0, le=1)]
    selftest: SelfTest | None = None
    accepts: Accepts = Accepts()
    training: dict[str, object] | None = None
    files: dict[str, Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]]

    @model_validator(mode="after")
    def _check_outputs(self) -> Manifest:
        check_outputs(self.outputs, self.inputs[0], self.preprocessing)
        return self

    @property
    def suspicion_map(self) -> OutputSpec | None:
        """The suspicion map output, when the model gives one."""
        return self.outputs[1] if len(self.outputs) > 1 else None


def check_outputs(
    outputs: tuple[OutputSpec, ...], image: TensorSpec, preprocessing: Preprocessing
) -> None:
    """The score comes first, a suspicion map may follow; raise ValueError naming the key."""
    if outputs[0].meaning != "score":
        raise ValueError("outputs.0.meaning: the first output must be the score")
    if outputs[0].threshold is not None or outputs[0].max_findings is not None:
        raise ValueError("outputs.0: threshold and max_findings belong to a suspicion map")
    if len(outputs) == 2:
        _check_map(outputs[1], outputs[0], image, preprocessing)


def _check_map(
    spec: OutputSpec, score: OutputSpec, image: TensorSpec, preprocessing: Preprocessing
) -> None:
    where = "outputs.1"
    if spec.meaning != "suspicion_map":
        raise ValueError(f"{where}.meaning: a second output must be a suspicion_map")
    if spec.threshold is None or spec.max_findings is None:
        raise ValueError(f"{where}: a suspicion map needs its threshold and max_findings")
    # The self-test set keeps the map's expected values under its name, beside these two.
    if spec.name in ("", "inputs", "outputs", image.name, score.name):
        raise ValueError(f"{where}.name: {spec.name!r} is not a distinct tensor name")
    shape = spec.shape
    if len(shape) != 4 or shape[0] != image.shape[0] or shape[1] != 1:
        raise ValueError(
            f"{where}.shape: expected [{image.shape[0]}, 1, rows, columns], got {list(shape)}"
        )
    rows, columns = shape[2], shape[3]
    if not isinstance(rows, int) or not isinstance(columns, int):
        raise ValueError(f"{where}.shape: the map's rows and columns must be numbers")
    if not (1 <= rows <= preprocessing.height and 1 <= columns <= preprocessing.width):
        raise ValueError(
            f"{where}.shape: a {rows} x {columns} map does not fit over the "
            f"{preprocessing.height} x {preprocessing.width} input"
        )


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
        problems = "; ".join(_problem(error) for error in exc.errors())
        raise EngineError(f"{path}: invalid manifest: {problems}") from None


def _problem(error: ErrorDetails) -> str:
    """``key.path: message``; a check across keys names its key in its own message."""
    if not error["loc"]:
        return error["msg"].removeprefix("Value error, ")
    return f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}"


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
