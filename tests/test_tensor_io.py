"""The TensorRT backend's view of a plan's tensors, on the CPU: names, order and buffers.

TensorRT lists a plan's tensors in its own order; the backend must bind a buffer for
every output and hand them back in the manifest's order, the score first.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from engine_bundles import make_bundle

from edge.bundle.manifest import Manifest, read_manifest
from edge.errors import EngineError
from edge.runtimes.tensor_io import match_io

F32 = np.dtype(np.float32)
F16 = np.dtype(np.float16)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Manifest:
    folder = tmp_path_factory.mktemp("bundle") / "b"
    return read_manifest(make_bundle(folder, version="1", map_cell=8))


def test_outputs_come_back_in_the_manifests_order_with_their_buffer_sizes(
    manifest: Manifest,
) -> None:
    io = match_io(
        [("image", (-1, 1, 64, 64), F32)],
        [("suspicion", (-1, 1, 8, 8), F16), ("score", (-1, 1), F32)],
        manifest,
        profile_max_batch=8,
    )
    assert [output.name for output in io.outputs] == ["score", "suspicion"]
    assert (io.max_batch, io.static_batch) == (8, False)
    assert io.input.nbytes(8) == 8 * 64 * 64 * 4
    assert io.outputs[1].sample == (1, 8, 8) and io.outputs[1].nbytes(3) == 3 * 64 * 2


def test_a_plan_with_a_fixed_batch_runs_that_batch(manifest: Manifest) -> None:
    io = match_io(
        [("image", (4, 1, 64, 64), F32)],
        [("score", (4, 1), F32), ("suspicion", (4, 1, 8, 8), F32)],
        manifest,
        profile_max_batch=None,
    )
    assert (io.max_batch, io.static_batch) == (4, True)


@pytest.mark.parametrize(
    "outputs",
    [
        [("score", (-1, 1), F32)],  # the map is missing
        [("score", (-1, 1), F32), ("heatmap", (-1, 1, 8, 8), F32)],  # another name
        [("score", (-1, 1), F32), ("suspicion", (-1, 1, 8, 8), F32), ("x", (-1, 1), F32)],
    ],
)
def test_tensors_that_differ_from_the_manifest_are_refused(
    manifest: Manifest,
    outputs: list[tuple[str, tuple[int, ...], np.dtype]],  # type: ignore[type-arg]
) -> None:
    with pytest.raises(EngineError, match="differ from the manifest's"):
        match_io([("image", (-1, 1, 64, 64), F32)], outputs, manifest, profile_max_batch=8)


def test_only_the_batch_may_be_dynamic(manifest: Manifest) -> None:
    with pytest.raises(EngineError, match="only the batch dimension may be dynamic"):
        match_io(
            [("image", (-1, 1, 64, 64), F32)],
            [("score", (-1, 1), F32), ("suspicion", (-1, 1, -1, 8), F32)],
            manifest,
            profile_max_batch=8,
        )


def test_a_plan_without_a_map_matches_a_manifest_without_one(tmp_path: Path) -> None:
    plain = read_manifest(make_bundle(tmp_path / "plain", version="1"))
    io = match_io([("image", (-1, 1, 64, 64), F32)], [("score", (-1, 1), F32)], plain, 8)
    assert [output.name for output in io.outputs] == ["score"]
