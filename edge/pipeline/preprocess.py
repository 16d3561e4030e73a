"""Turn decoded pixels into the engine's input: pure functions, no I/O.

The order follows the DICOM grey-scale pipeline (PS3.4 N.2): modality LUT
(Rescale Slope/Intercept or a Modality LUT Sequence), then VOI LUT or window,
then the presentation polarity (MONOCHROME1, Presentation LUT Shape INVERSE), so
that bright always means dense tissue. Then every breast is turned to face the
same side and the image is resized with OpenCV's area interpolation and scaled
to [0, 1].

A shortcut keeps the work small: when there is no VOI transform and no Modality
LUT Sequence the grey chain is affine, and an affine map commutes with area
averaging and is absorbed by the min-max scaling, so the full-size image is
resized first and only its polarity is applied afterwards. The result is the
same as the long way round. It is wrong with a VOI transform (a window clips,
a sigmoid bends), so those images take the long way.
"""

from __future__ import annotations

import math
import time

import cv2
import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset
from pydicom.pixels.processing import apply_modality_lut, apply_voi_lut

from edge.bundle.manifest import Preprocessing
from edge.common.privacy import describe
from edge.errors import IngestError
from edge.types import ImageHeader, ModelInput

FloatImage = npt.NDArray[np.float32]


def prepare(
    header: ImageHeader,
    dataset: Dataset,
    pixels: npt.NDArray[np.generic],
    spec: Preprocessing,
    out: FloatImage | None = None,
) -> ModelInput:
    """Grey scale, orientation, resize and scaling of one image (C=1, H, W).

    ``out``: a C-contiguous float32 array of shape (1, H, W) to write the input into
    (a decode worker's shared slot); a new array when None.
    """
    started = time.perf_counter()
    inverted = presentation_inverted(dataset)
    if has_voi_transform(dataset) or "ModalityLUTSequence" in dataset:
        image = resize_area(grey_scale(pixels, dataset), spec.height, spec.width)
    else:
        image = resize_area(pixels, spec.height, spec.width)
        inverted ^= rescale_slope(dataset) < 0
    tensor = input_array(spec, out)
    # Mirrored on the way in: the scaling is element-wise, so the order is immaterial.
    scale_minmax(image[:, ::-1] if needs_flip(header, spec.orientation) else image, tensor[0])
    if inverted:
        np.subtract(np.float32(1.0), tensor, out=tensor)
    return ModelInput(
        header=header,
        tensor=tensor,
        timings_ms={"preprocess": (time.perf_counter() - started) * 1000},
    )


def grey_scale(pixels: npt.NDArray[np.generic], dataset: Dataset) -> FloatImage:
    """Modality LUT then the first VOI LUT or window (PS3.3 C.11.1, C.11.2), as float32.

    pydicom implements Window Center/Width with VOI LUT Function LINEAR,
    LINEAR_EXACT and SIGMOID (C.11.2.1.2, C.11.2.1.3) and the VOI LUT Sequence;
    where both are present it takes the LUT.
    """
    try:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            modality = apply_modality_lut(pixels, dataset)
            grey = apply_voi_lut(modality, dataset, index=0)
            return np.asarray(grey, dtype=np.float32)
    except (ValueError, TypeError, IndexError, KeyError, AttributeError, OverflowError) as exc:
        raise IngestError(
            "bad_grey_scale", f"the grey-scale attributes are unusable: {describe(exc)}"
        ) from exc


def has_voi_transform(dataset: Dataset) -> bool:
    """A VOI LUT Sequence or a window is present (PS3.3 C.11.2)."""
    return "VOILUTSequence" in dataset or ("WindowCenter" in dataset and "WindowWidth" in dataset)


def rescale_slope(dataset: Dataset) -> float:
    try:
        return float(dataset.get("RescaleSlope", 1.0) or 1.0)
    except (TypeError, ValueError) as exc:
        raise IngestError("bad_grey_scale", "Rescale Slope is not a number") from exc


def presentation_inverted(dataset: Dataset) -> bool:
    """Whether low values are bright, so the image must be inverted.

    MONOCHROME1 means the minimum value is white (PS3.3 C.7.6.3.1.2). In an
    image, Presentation LUT Shape INVERSE says the same thing, not a second
    inversion: the General Image Module (C.7.6.1) has INVERSE used with
    MONOCHROME1 and IDENTITY with MONOCHROME2. A file with either sign is
    inverted once; a MONOCHROME1 file labelled IDENTITY is read by its
    Photometric Interpretation, as viewers do.
    """
    monochrome1 = str(dataset.get("PhotometricInterpretation", "")).strip() == "MONOCHROME1"
    inverse = str(dataset.get("PresentationLUTShape", "")).strip().upper() == "INVERSE"
    return monochrome1 or inverse


def needs_flip(header: ImageHeader, orientation: str) -> bool:
    """Whether to mirror the image so the chest wall lands on the side the model expects.

    Patient Orientation's row direction says it exactly: "A" means the rows run
    towards the nipple, so the chest wall is on the left. Without it the DICOM
    display convention holds: a right breast is shown chest wall right, a left
    breast chest wall left.
    """
    if header.row_direction is not None:
        chest_wall_left = header.row_direction == "A"
    else:
        chest_wall_left = header.laterality == "L"
    wanted_left = orientation == "chest_wall_left"
    return chest_wall_left != wanted_left


def resize_area(image: npt.NDArray[np.generic], height: int, width: int) -> FloatImage:
    """Area-averaged resize to (height, width), as float32.

    16-bit images are resized in their own type, which OpenCV does nearly twice as
    fast as float32 on a full-field mammogram; each output pixel is then rounded
    to the nearest integer, an error of at most half a grey level (1.2e-4 of the
    range of a 12-bit image). Other types are resized as float32, exactly.
    """
    source: npt.NDArray[np.integer | np.floating]
    if image.dtype in (np.uint16, np.int16, np.float32):
        source = image  # type: ignore[assignment]  # OpenCV's native pixel types
    else:
        source = image.astype(np.float32)
    resized = cv2.resize(source, (width, height), interpolation=cv2.INTER_AREA)
    return np.asarray(resized, dtype=np.float32)


def input_array(spec: Preprocessing, out: FloatImage | None) -> FloatImage:
    """``out`` checked to hold the engine's input (1, H, W), or a new array."""
    shape = (1, spec.height, spec.width)
    if out is None:
        return np.empty(shape, dtype=np.float32)
    if out.shape != shape or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError(f"out must be C-contiguous float32 {shape}, not {out.dtype} {out.shape}")
    return out


def scale_minmax(image: FloatImage, out: FloatImage | None = None) -> FloatImage:
    """Scale to [0, 1] (into ``out`` when given); a flat image becomes all zeros
    rather than NaN.

    Raises
    ------
    IngestError
        ``bad_grey_scale`` when a value is not finite (NaN and infinity reach the
        minimum or the maximum).
    """
    low = float(image.min())
    high = float(image.max())
    if not (math.isfinite(low) and math.isfinite(high)):
        raise IngestError("bad_grey_scale", "the grey-scale transform gives non-finite values")
    if out is None:
        out = np.empty(image.shape, dtype=np.float32)
    if high <= low:
        out.fill(0.0)
        return out
    np.subtract(image, np.float32(low), out=out)
    np.multiply(out, np.float32(1.0 / (high - low)), out=out)
    return out
