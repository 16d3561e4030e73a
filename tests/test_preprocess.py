"""Grey scale and orientation on real mammograms: what the model sees must be right."""

from __future__ import annotations

import copy
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest

from edge.bundle.manifest import Preprocessing
from edge.pipeline.decode import choose_plugin, decode
from edge.pipeline.ingest import read_header
from edge.pipeline.preprocess import needs_flip, prepare, resize_area, scale_minmax
from edge.types import IncomingFile

SPEC = Preprocessing(height=256, width=208, orientation="chest_wall_left", intensity="minmax")


def incoming(path: Path) -> IncomingFile:
    stat = path.stat()
    return IncomingFile(path, stat.st_size, stat.st_mtime_ns, time.monotonic(), "scan")


def model_input(path: Path) -> np.ndarray:
    header = read_header(incoming(path), max_pixels=10**9)
    decoded = decode(header)
    return prepare(header, decoded.dataset, decoded.pixels, SPEC).tensor


@pytest.fixture(scope="module")
def lcc(study_files: dict[str, Path]) -> Path:
    return study_files["lcc"]


def test_rle_uses_the_compiled_decoder() -> None:
    assert choose_plugin(pydicom.uid.RLELossless) == "pylibjpeg"


def test_input_has_the_manifest_shape_and_range(lcc: Path) -> None:
    tensor = model_input(lcc)
    assert tensor.shape == (1, 256, 208)
    assert tensor.dtype == np.float32
    assert tensor.min() == 0.0
    assert tensor.max() == pytest.approx(1.0)


def test_monochrome1_twin_gives_the_same_input(lcc: Path, tmp_path: Path) -> None:
    dataset = pydicom.dcmread(lcc)
    pixels = dataset.pixel_array
    twin = copy.deepcopy(dataset)
    twin.PhotometricInterpretation = "MONOCHROME1"
    twin.PixelData = (np.iinfo(np.uint16).max - pixels).astype(np.uint16).tobytes()
    twin.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    twin.SOPInstanceUID = pydicom.uid.generate_uid()
    path = tmp_path / "mono1.dcm"
    twin.save_as(path, enforce_file_format=True)
    # Identical up to the rounding of a 16-bit area resize (half a grey level).
    np.testing.assert_allclose(model_input(path), model_input(lcc), atol=2 / 65535)


def test_right_breast_is_mirrored_to_face_the_same_side(study_files: dict[str, Path]) -> None:
    # The breast (bright) must sit against the left edge in every image.
    for name in ("lcc", "rcc", "lmlo", "rmlo"):
        tensor = model_input(study_files[name])[0]
        left, right = tensor[:, :52].mean(), tensor[:, -52:].mean()
        assert left > right, f"{name}: chest wall is not on the left ({left:.3f} <= {right:.3f})"


def test_row_direction_overrides_laterality_convention() -> None:
    from edge.types import ImageHeader

    base = dict(
        source=incoming(Path(__file__)),
        sop_uid="1",
        study_uid="2",
        accession="",
        view="CC",
        rows=10,
        columns=10,
        transfer_syntax="",
    )
    assert needs_flip(ImageHeader(laterality="R", row_direction=None, **base), "chest_wall_left")
    assert not needs_flip(
        ImageHeader(laterality="L", row_direction=None, **base), "chest_wall_left"
    )
    assert not needs_flip(ImageHeader(laterality="R", row_direction="A", **base), "chest_wall_left")
    assert needs_flip(ImageHeader(laterality="L", row_direction="P", **base), "chest_wall_left")


def test_area_resize_and_flat_images() -> None:
    image = np.arange(16, dtype=np.uint8).reshape(4, 4)
    np.testing.assert_allclose(resize_area(image, 2, 2), [[2.5, 4.5], [10.5, 12.5]])
    # 16-bit images are averaged in their own type: within half a grey level.
    wide = image.astype(np.uint16) * 1000
    np.testing.assert_allclose(resize_area(wide, 2, 2), [[2500, 4500], [10500, 12500]], atol=0.5)
    assert not np.isnan(scale_minmax(np.ones((3, 3), dtype=np.float32))).any()
