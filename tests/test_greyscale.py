"""Grey-scale correctness on standard-built files from a real mammogram.

Each file carries the real image with a row of probe pixels of known stored
values. The model input is taken at the image's own size (no resize), so each
probe's value can be compared with a value computed by hand from the formulas
of DICOM PS3.3 C.11 (not from pydicom, which does the work in the appliance).
The image holds 0 and 4095, the extremes of 12 bits, so after min-max scaling a
probe reads (y - ymin) / (ymax - ymin) of its VOI output y.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from mammo_files import SMALL, build, model_input, real_pixels
from pydicom.dataset import Dataset, FileDataset
from pydicom.sequence import Sequence

from edge.bundle.manifest import Preprocessing

SPEC = Preprocessing(height=SMALL[0], width=SMALL[1], orientation="chest_wall_left")
PROBES = (0, 1000, 1535, 1536, 2047, 2048, 2300, 2559, 2560, 3000, 4095)
# Probes sit on the first row, away from the edge columns used by nothing else.
PROBE_COLUMNS = tuple(range(100, 100 + len(PROBES)))


def probed_pixels() -> np.ndarray:
    pixels = np.array(real_pixels(), dtype=np.uint16)
    pixels = np.clip(pixels, 1, 4094)
    pixels[0, PROBE_COLUMNS] = PROBES
    return pixels


def probes(path: Path) -> dict[int, float]:
    tensor = model_input(path, SPEC)
    return {
        value: float(tensor[0, column]) for value, column in zip(PROBES, PROBE_COLUMNS, strict=True)
    }


Edit = Callable[[FileDataset], None]


def write(
    tmp_path: Path, name: str, edit: Edit | None = None, encoding: str = "explicit-le"
) -> Path:
    return build(tmp_path / name, pixels=probed_pixels(), edit=edit, encoding=encoding)


def window(center: float | list[float], width: float | list[float], function: str = "") -> Edit:
    def edit(ds: FileDataset) -> None:
        ds.WindowCenter = center
        ds.WindowWidth = width
        if function:
            ds.VOILUTFunction = function

    return edit


# Hand-computed from PS3.3 C.11.2.1.2.1 (LINEAR) with c = 2048, w = 1024:
# x <= c - 0.5 - (w-1)/2 = 1536 -> ymin; x > c - 0.5 + (w-1)/2 = 2559 -> ymax;
# else ((x - (c - 0.5)) / (w - 1) + 0.5).
LINEAR = {
    0: 0.0,
    1000: 0.0,
    1535: 0.0,
    1536: 0.0,
    2047: 0.4995112414467253,  # (-0.5 / 1023) + 0.5
    2048: 0.5004887585532747,  # (0.5 / 1023) + 0.5
    2300: 0.7468230694037146,  # (252.5 / 1023) + 0.5
    2559: 1.0,  # (511.5 / 1023) + 0.5
    2560: 1.0,
    3000: 1.0,
    4095: 1.0,
}
# PS3.3 C.11.2.1.3.2 (LINEAR_EXACT): x <= c - w/2 -> ymin; x > c + w/2 -> ymax;
# else (x - c) / w + 0.5.
LINEAR_EXACT = {
    0: 0.0,
    1000: 0.0,
    1535: 0.0,
    1536: 0.0,
    2047: 0.4990234375,
    2048: 0.5,
    2300: 0.74609375,
    2559: 0.9990234375,
    2560: 1.0,
    3000: 1.0,
    4095: 1.0,
}


def sigmoid_expected(center: float, width: float) -> dict[int, float]:
    """PS3.3 C.11.2.1.3.1: y = (ymax - ymin) / (1 + exp(-4 (x - c) / w)) + ymin.

    No value reaches ymin or ymax, so min-max scaling spans the image's own
    extremes, 0 and 4095.
    """

    def s(x: float) -> float:
        return 1.0 / (1.0 + math.exp(-4.0 * (x - center) / width))

    low, high = s(0), s(4095)
    return {x: (s(x) - low) / (high - low) for x in PROBES}


def assert_probes(found: dict[int, float], expected: dict[int, float]) -> None:
    for value, want in expected.items():
        # float32 output and half a grey level of resize rounding: 1e-4 is far tighter
        # than any of the mistakes these tests exist to catch.
        assert found[value] == pytest.approx(want, abs=1e-4), f"stored value {value}"


def test_without_voi_the_stored_values_are_scaled_min_max(tmp_path: Path) -> None:
    found = probes(write(tmp_path, "plain.dcm"))
    assert_probes(found, {x: x / 4095 for x in PROBES})


def test_window_linear(tmp_path: Path) -> None:
    assert_probes(probes(write(tmp_path, "w.dcm", window(2048, 1024))), LINEAR)
    explicit = write(tmp_path, "wl.dcm", window(2048, 1024, "LINEAR"))
    assert_probes(probes(explicit), LINEAR)


def test_window_linear_exact(tmp_path: Path) -> None:
    path = write(tmp_path, "we.dcm", window(2048, 1024, "LINEAR_EXACT"))
    assert_probes(probes(path), LINEAR_EXACT)


def test_window_sigmoid(tmp_path: Path) -> None:
    path = write(tmp_path, "ws.dcm", window(2048, 1024, "SIGMOID"))
    assert_probes(probes(path), sigmoid_expected(2048, 1024))


def test_the_first_of_several_windows_is_used(tmp_path: Path) -> None:
    path = write(tmp_path, "w2.dcm", window([2048, 1000], [1024, 300]))
    assert_probes(probes(path), LINEAR)


def test_rescale_slope_and_intercept_before_the_window(tmp_path: Path) -> None:
    # y = 2x - 1000; the same window in output units (c = 3096, w = 2047) puts the
    # edges at stored 1536 and 2559 as above: ((2x - 1000) - 3095.5) / 2046 + 0.5.
    def edit(ds: FileDataset) -> None:
        ds.RescaleSlope = 2
        ds.RescaleIntercept = -1000
        window(3096, 2047)(ds)

    expected = {x: min(1.0, max(0.0, ((2 * x - 1000) - 3095.5) / 2046 + 0.5)) for x in PROBES}
    assert expected[2048] == pytest.approx(0.50024438)
    assert_probes(probes(write(tmp_path, "rs.dcm", edit)), expected)


def test_negative_rescale_slope_inverts(tmp_path: Path) -> None:
    def edit(ds: FileDataset) -> None:
        ds.RescaleSlope = -1
        ds.RescaleIntercept = 4095

    assert_probes(probes(write(tmp_path, "neg.dcm", edit)), {x: 1 - x / 4095 for x in PROBES})


def test_voi_lut_sequence(tmp_path: Path) -> None:
    # A square-root LUT from stored 1000 on: LUT[i] = round(4 * sqrt(i)), 3096 entries.
    # Below the first mapped value the first entry applies, above it the last.
    first = 1000
    table = [round(4 * math.sqrt(i)) for i in range(3096)]

    def edit(ds: FileDataset) -> None:
        item = Dataset()
        item.LUTDescriptor = [len(table), first, 16]
        item.add_new("LUTData", "US", table)
        ds.VOILUTSequence = Sequence([item])

    top = table[-1]
    expected = {x: table[min(max(x - first, 0), len(table) - 1)] / top for x in PROBES}
    assert expected[2048] == pytest.approx(round(4 * math.sqrt(1048)) / 223)
    assert_probes(probes(write(tmp_path, "lut.dcm", edit)), expected)


def test_presentation_lut_shape_inverse_inverts_monochrome2(tmp_path: Path) -> None:
    def edit(ds: FileDataset) -> None:
        ds.PresentationLUTShape = "INVERSE"

    assert_probes(probes(write(tmp_path, "inv.dcm", edit)), {x: 1 - x / 4095 for x in PROBES})


@pytest.mark.parametrize("shape", ["INVERSE", None])
def test_monochrome1_twin_gives_the_same_input(tmp_path: Path, shape: str | None) -> None:
    """The same image stored as MONOCHROME1, inverted, as a conformant writer labels it.

    PS3.3 C.7.6.1 has Presentation LUT Shape INVERSE go with MONOCHROME1: it names
    the same single inversion, so the twin must read exactly as the original.
    """
    pixels = probed_pixels()

    def twin(ds: FileDataset) -> None:
        ds.PhotometricInterpretation = "MONOCHROME1"
        ds.PixelData = (4095 - pixels).astype("<u2").tobytes()
        if shape is None:
            del ds.PresentationLUTShape
        else:
            ds.PresentationLUTShape = shape

    original = model_input(build(tmp_path / "m2.dcm", pixels=pixels, encoding="rle"), SPEC)
    inverted = model_input(build(tmp_path / "m1.dcm", pixels=pixels, edit=twin), SPEC)
    np.testing.assert_allclose(inverted, original, atol=1e-6)


def test_monochrome1_with_a_window(tmp_path: Path) -> None:
    """The window applies to stored values; MONOCHROME1 then makes low values bright."""

    def edit(ds: FileDataset) -> None:
        ds.PhotometricInterpretation = "MONOCHROME1"
        ds.PresentationLUTShape = "INVERSE"
        window(2048, 1024, "LINEAR_EXACT")(ds)

    found = probes(write(tmp_path, "m1w.dcm", edit))
    assert_probes(found, {x: 1 - y for x, y in LINEAR_EXACT.items()})


def test_same_grey_scale_through_a_compressed_encoding(tmp_path: Path) -> None:
    path = write(tmp_path, "w.dcm", window(2048, 1024, "LINEAR_EXACT"), encoding="j2k-lossless")
    assert_probes(probes(path), LINEAR_EXACT)
