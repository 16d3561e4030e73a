"""Grey scale and orientation on real mammograms: what the model sees must be right."""

from __future__ import annotations

import copy
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest

from edge.bundle.manifest import Preprocessing
from edge.errors import IngestError
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


def _reference(pixels: np.ndarray, flip: bool, inverted: bool) -> np.ndarray:
    """The input the long way round: resize, min-max, invert, mirror."""
    image = resize_area(pixels, SPEC.height, SPEC.width).astype(np.float64)
    scaled = (image - image.min()) / (image.max() - image.min())
    if inverted:
        scaled = 1.0 - scaled
    return scaled[:, ::-1] if flip else scaled


@pytest.mark.parametrize("name", ["lcc", "rmlo"])
@pytest.mark.parametrize("monochrome1", [False, True])
def test_an_input_prepared_into_a_given_array_is_written_there_whole(
    study_files: dict[str, Path], name: str, monochrome1: bool
) -> None:
    # A decode worker prepares each input in the shared slot the daemon scores it from.
    path = study_files[name]
    header = read_header(incoming(path), max_pixels=10**9)
    decoded = decode(header)
    dataset = copy.deepcopy(decoded.dataset)
    pixels = decoded.pixels
    if monochrome1:
        dataset.PhotometricInterpretation = "MONOCHROME1"
    slot = np.full((1, SPEC.height, SPEC.width), np.nan, dtype=np.float32)
    prepared = prepare(header, dataset, pixels, SPEC, out=slot)
    assert prepared.tensor is slot
    fresh = prepare(header, dataset, pixels, SPEC).tensor
    np.testing.assert_array_equal(slot, fresh)
    flip = needs_flip(header, SPEC.orientation)
    assert flip == (header.laterality == "R")
    np.testing.assert_allclose(slot[0], _reference(pixels, flip, monochrome1), atol=1e-6)


def test_an_array_of_another_shape_is_refused(lcc: Path) -> None:
    header = read_header(incoming(lcc), max_pixels=10**9)
    decoded = decode(header)
    for wrong in (
        np.empty((1, SPEC.width, SPEC.height), dtype=np.float32),
        np.empty((1, SPEC.height, SPEC.width), dtype=np.float64),
        np.empty((1, SPEC.height, SPEC.width * 2), dtype=np.float32)[:, :, ::2],
    ):
        with pytest.raises(ValueError, match="C-contiguous float32"):
            prepare(header, decoded.dataset, decoded.pixels, SPEC, out=wrong)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_value_that_is_not_finite_is_a_bad_grey_scale(bad: float) -> None:
    image = np.ones((4, 4), dtype=np.float32)
    image[2, 1] = bad
    with pytest.raises(IngestError) as raised:
        scale_minmax(image)
    assert raised.value.reason == "bad_grey_scale"
