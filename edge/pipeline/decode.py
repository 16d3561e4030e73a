"""Decode a mammogram's pixels with the fastest maintained decoder installed.

pydicom chooses among its decoder plug-ins in a fixed order; for some transfer
syntaxes its own pure-numpy decoder comes first although a compiled one is
installed (RLE: pylibjpeg-rle is several times faster). ``PREFERRED_PLUGINS``
puts the fast one first where it is available.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.dataset import Dataset
from pydicom.pixels.decoders.base import get_decoder
from pydicom.pixels.utils import pixel_array
from pydicom.uid import UID, RLELossless

from edge.errors import IngestError
from edge.types import ImageHeader

#: transfer syntax -> decoder plug-ins to try first, fastest first
PREFERRED_PLUGINS: dict[str, tuple[str, ...]] = {
    RLELossless: ("pylibjpeg",),
}


@dataclass(frozen=True)
class Decoded:
    dataset: Dataset
    pixels: npt.NDArray[np.generic]
    decode_ms: float


def decode(header: ImageHeader) -> Decoded:
    """Read the whole file of ``header`` and decode its first frame.

    Raises
    ------
    IngestError
        ``no_decoder`` naming the missing package, ``truncated`` or ``decode_failed``.
    """
    started = time.perf_counter()
    dataset = _read_full(header.source.path)
    if "PixelData" not in dataset and "FloatPixelData" not in dataset:
        raise _missing_pixels(header.source.path)
    plugin = choose_plugin(header.transfer_syntax)
    try:
        pixels = pixel_array(dataset, index=0, decoding_plugin=plugin)
    except (ValueError, RuntimeError, NotImplementedError, EOFError, TypeError, IndexError) as exc:
        raise _decode_error(header.transfer_syntax, exc) from exc
    if pixels.ndim != 2:
        raise IngestError(
            "not_greyscale",
            f"decoded pixels have shape {pixels.shape}; a mammogram is one grey frame",
        )
    return Decoded(dataset, pixels, (time.perf_counter() - started) * 1000)


def choose_plugin(transfer_syntax: str) -> str:
    """The first preferred plug-in that is available, else ``""`` (pydicom's order)."""
    preferred = PREFERRED_PLUGINS.get(transfer_syntax, ())
    if not preferred:
        return ""
    available = get_decoder(UID(transfer_syntax)).available_plugins
    return next((name for name in preferred if name in available), "")


#: the Pixel Data tag (7FE0,0010) as it is written in little endian
_PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"


def _missing_pixels(path: Path) -> IngestError:
    """Tell a file cut inside its Pixel Data from one that never had any.

    pydicom drops an encapsulated Pixel Data element whose end is missing (with a
    logged warning) rather than raising, so the element's tag in the raw bytes
    is what shows the file was cut short: still being written, or truncated.
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        return IngestError("unreadable", f"cannot read the file again: {exc.strerror}")
    if _PIXEL_DATA_TAG in raw:
        return IngestError("truncated", "the file ends inside its Pixel Data")
    return IngestError("missing_tag", "the file has no Pixel Data")


def _read_full(path: Path) -> Dataset:
    try:
        return pydicom.dcmread(path)
    except (EOFError, OSError) as exc:
        raise IngestError("truncated", f"the file ends early: {exc}") from exc
    except (ValueError, KeyError, TypeError, AttributeError, NotImplementedError) as exc:
        raise IngestError("malformed", f"the file cannot be parsed: {exc}") from exc


def _decode_error(transfer_syntax: str, exc: Exception) -> IngestError:
    text = str(exc)
    try:
        decoder = get_decoder(UID(transfer_syntax))
    except NotImplementedError:
        return IngestError("no_decoder", f"no decoder exists for transfer syntax {transfer_syntax}")
    if not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies)
        return IngestError(
            "no_decoder",
            f"no installed decoder for {UID(transfer_syntax).name}; install one of: {missing}",
        )
    lowered = text.lower()
    if "shorter than expected" in lowered or "truncat" in lowered or "insufficient" in lowered:
        return IngestError("truncated", f"pixel data ends early: {text}")
    return IngestError("decode_failed", f"{UID(transfer_syntax).name}: {text}")
