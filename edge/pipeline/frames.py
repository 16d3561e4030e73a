"""The first frame of encapsulated Pixel Data, checked, and the fast decoders run on it.

Before any decoder runs, the compressed frame's own header must claim the size
the DICOM header claims (already checked against ``max_pixels``): a decoder
allocates what the codestream says, so a mismatch is refused unread. Then the
fast decoders of the transfer syntax's chain are tried in order; with
``decode.gpu: auto`` the GPU decoder (:mod:`edge.pipeline.gpudecode`) goes first
for JPEG 2000 and HTJ2K, and a frame it fails on goes on to the CPU decoders,
the failure named in the result so that health counts it.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset
from pydicom.encaps import get_frame

from edge.common.privacy import describe
from edge.errors import IngestError
from edge.pipeline import codecs
from edge.pipeline.codestream import CodestreamError, frame_geometry

log = logging.getLogger(__name__)

#: what pydicom and the codecs raise on a bad frame (their text says which)
DECODE_ERRORS = (
    ValueError,
    RuntimeError,
    NotImplementedError,
    EOFError,
    TypeError,
    IndexError,
    KeyError,
    AttributeError,
    OSError,
    OverflowError,
)


@dataclass(frozen=True)
class FastDecode:
    """Pixels from a fast decoder, which one, its reduction, and a GPU failure if one came first."""

    pixels: npt.NDArray[np.generic]
    decoder: str
    reduction: int
    gpu_fallback: str = ""


@dataclass(frozen=True)
class Wanted:
    """What the caller asks of an encapsulated frame's decoding."""

    target: tuple[int, int] | None
    threads: int
    max_enlargement: float
    #: ``decode.gpu`` is ``auto``: try the GPU decoder first where it is available
    gpu: bool = False


def decode_fast(dataset: Dataset, family: str, wanted: Wanted) -> FastDecode | tuple[str, ...]:
    """The frame decoded by the first fast decoder that succeeds.

    When none is available or all fail, the packages of the chain (for a
    ``no_decoder`` reason), in order, for pydicom to take over.
    """
    chain = codecs.chain(family, gpu=wanted.gpu)
    request = frame_request(dataset, family, wanted)
    fast = [codec for codec in chain if codec.available()]
    if int(dataset.get("PixelRepresentation", 0) or 0) != 0:
        fast = []  # signed pixels: pydicom knows how to restore the sign
    gpu_failure = ""
    for codec in fast:
        try:
            pixels, reduction = codec.decode(request.frame, request.request)
        except DECODE_ERRORS as exc:
            log.warning(
                "%s could not decode a frame (%s); trying the next one", codec.name, describe(exc)
            )
            gpu_failure = gpu_failure or (f"{codec.name}: {describe(exc)}" if codec.gpu else "")
            continue
        shaped = checked_shape(pixels, request.request, reduction)
        return FastDecode(shaped, codec.name, reduction, gpu_failure)
    return tuple(codec.package for codec in chain if not codec.gpu)


@dataclass(frozen=True)
class FrameRequest:
    frame: bytes
    request: codecs.Request


def frame_request(dataset: Dataset, family: str, wanted: Wanted) -> FrameRequest:
    rows, columns = int(dataset.Rows), int(dataset.Columns)
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    try:
        frame = first_frame(dataset.PixelData, frames)
    except DECODE_ERRORS as exc:
        raise IngestError(
            "truncated", f"the encapsulated Pixel Data cannot be split: {describe(exc)}"
        ) from exc
    try:
        geometry = frame_geometry(frame, family)
    except (CodestreamError, IndexError) as exc:
        raise IngestError(
            "decode_failed", f"the compressed frame is not readable: {describe(exc)}"
        ) from exc
    if geometry is not None and (geometry.rows, geometry.columns, geometry.components) != (
        rows,
        columns,
        1,
    ):
        raise IngestError(
            "size_mismatch",
            f"the compressed frame claims {geometry.rows}x{geometry.columns}x"
            f"{geometry.components}, the header {rows}x{columns}x1",
        )
    request = codecs.Request(
        rows=rows,
        columns=columns,
        bits_allocated=int(dataset.BitsAllocated),
        target=wanted.target,
        levels=geometry.levels if geometry else 0,
        threads=wanted.threads,
        max_enlargement=wanted.max_enlargement,
    )
    return FrameRequest(frame, request)


def first_frame(pixel_data: bytes, frames: int) -> bytes:
    """The first frame of encapsulated Pixel Data (PS3.5 A.4), without a copy when it can.

    A single-frame image's fragments all belong to its one frame; a lone fragment
    (the usual case) is handed on as a view of the data set's bytes.
    """
    if frames > 1:
        return get_frame(pixel_data, 0, number_of_frames=frames)
    fragments = []
    view = memoryview(pixel_data)
    position = 0
    while position + 8 <= len(view):
        group, element, length = struct.unpack_from("<HHI", view, position)
        if (group, element) == (0xFFFE, 0xE0DD):  # sequence delimiter
            break
        if (group, element) != (0xFFFE, 0xE000) or position + 8 + length > len(view):
            raise ValueError(f"encapsulated Pixel Data item at byte {position} is malformed")
        fragments.append(view[position + 8 : position + 8 + length])
        position += 8 + length
    frame_fragments = fragments[1:]  # the first item is the Basic Offset Table
    if not frame_fragments:
        raise ValueError("encapsulated Pixel Data has no fragment")
    if len(frame_fragments) == 1:
        return frame_fragments[0]  # type: ignore[return-value]  # bytes-like, read only
    return b"".join(frame_fragments)


def checked_shape(
    pixels: npt.NDArray[np.generic], request: codecs.Request, reduction: int
) -> npt.NDArray[np.generic]:
    expected = (-(-request.rows // reduction), -(-request.columns // reduction))
    if pixels.shape != expected:
        raise IngestError(
            "size_mismatch", f"decoded {pixels.shape}, expected {expected} (reduced {reduction}x)"
        )
    return pixels
