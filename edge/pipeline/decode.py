"""Decode a mammogram's pixels with the fastest maintained decoder installed.

Each transfer syntax has a chain of decoders, fastest first (see
:mod:`edge.pipeline.codecs` for the measurements), ending with pydicom's own
choice. A decoder that fails on a frame hands it to the next; only when all
fail is the file quarantined, and when none is installed the reason names the
packages that would decode it.

Before any decoder runs, the compressed frame's own header must claim the size
the DICOM header claims (already checked against ``max_pixels``): a decoder
allocates what the codestream says, so a mismatch is refused unread.
"""

from __future__ import annotations

import logging
import os
import struct
import time
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset
from pydicom.encaps import get_frame
from pydicom.pixels.decoders.base import get_decoder
from pydicom.pixels.utils import pixel_array
from pydicom.uid import (
    HTJ2K,
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from edge.bundle.manifest import Preprocessing
from edge.errors import IngestError
from edge.pipeline import codecs, dicomfile
from edge.pipeline.codestream import CodestreamError, frame_geometry
from edge.pipeline.dicomfile import plain
from edge.pipeline.ingest import check_pixel_description
from edge.pipeline.preprocess import prepare
from edge.types import ImageHeader, ModelInput

log = logging.getLogger(__name__)

#: transfer syntax -> (codestream family, fast decoders to try before pydicom's)
CHAINS: dict[str, tuple[str, tuple[codecs.Codec, ...]]] = {
    RLELossless: ("rle", (codecs.RLE,)),
    JPEGBaseline8Bit: ("jpeg", (codecs.JPEG,)),
    JPEGExtended12Bit: ("jpeg", (codecs.JPEG,)),
    JPEGLossless: ("jpeg", (codecs.JPEG,)),
    JPEGLosslessSV1: ("jpeg", (codecs.JPEG,)),
    JPEGLSLossless: ("jpegls", (codecs.JPEGLS,)),
    JPEGLSNearLossless: ("jpegls", (codecs.JPEGLS,)),
    JPEG2000Lossless: ("j2k", (codecs.J2K,)),
    JPEG2000: ("j2k", (codecs.J2K,)),
    HTJ2KLossless: ("j2k", (codecs.J2K,)),
    HTJ2KLosslessRPCL: ("j2k", (codecs.J2K,)),
    HTJ2K: ("j2k", (codecs.J2K,)),
}

#: transfer syntaxes whose Pixel Data is stored as is (the deflated one is inflated on reading)
NATIVE = frozenset(
    {
        ImplicitVRLittleEndian,
        ExplicitVRLittleEndian,
        ExplicitVRBigEndian,
        DeflatedExplicitVRLittleEndian,
    }
)

#: pydicom plug-ins to prefer over pydicom's own order where that order is slower
PREFERRED_PLUGINS: dict[str, tuple[str, ...]] = {
    RLELossless: ("pylibjpeg",),
    JPEGLSLossless: ("pyjpegls",),
    JPEGLSNearLossless: ("pyjpegls",),
}

#: room for the header and encapsulation beyond the pixels themselves
SLACK_BYTES = 16 << 20
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


#: how pydicom and the codecs say that the data ran out
TRUNCATION_SIGNS = ("shorter than expected", "less than expected", "truncat", "insufficient")


@dataclass(frozen=True)
class Decoded:
    dataset: Dataset
    pixels: npt.NDArray[np.generic]
    decode_ms: float
    #: the decoder that produced the pixels
    decoder: str = "pydicom"
    #: how many times smaller than the stored image the pixels are (1: full size)
    reduction: int = 1


def load_model_input(
    header: ImageHeader, spec: Preprocessing, *, threads: int | None = None
) -> ModelInput:
    """Decode the file of ``header`` at the resolution ``spec`` needs, then prepare it."""
    decoded = decode(header, target=(spec.height, spec.width), threads=threads)
    prepared = prepare(header, decoded.dataset, decoded.pixels, spec)
    prepared.timings_ms["decode"] = decoded.decode_ms
    return prepared


def decode(
    header: ImageHeader,
    *,
    target: tuple[int, int] | None = None,
    threads: int | None = None,
) -> Decoded:
    """Read the whole file of ``header`` and decode its first frame.

    Parameters
    ----------
    target
        The model's input (height, width). A JPEG 2000 or HTJ2K image at least
        twice as large on both sides is decoded at reduced resolution, dropping
        the finest wavelet levels; other codings decode at full size.
    threads
        Threads a decoder may use (openjpeg); default one per core.

    Raises
    ------
    IngestError
        ``no_decoder`` naming the missing package, ``truncated``,
        ``size_mismatch``, ``deflate_bomb``, ``too_large`` or ``decode_failed``.
    """
    started = time.perf_counter()
    dataset = _read_checked(header)
    transfer_syntax = str(dataset.file_meta.get("TransferSyntaxUID", "") or "")
    if transfer_syntax in CHAINS:
        pixels, decoder, reduction = _decode_encapsulated(
            dataset, transfer_syntax, target, threads or os.cpu_count() or 1
        )
    elif not transfer_syntax or transfer_syntax in NATIVE:
        pixels, decoder, reduction = _decode_native(dataset), "pydicom", 1
    else:
        pixels, decoder, reduction = _decode_with_pydicom(dataset, transfer_syntax), "pydicom", 1
    if pixels.ndim != 2:
        raise IngestError(
            "not_greyscale",
            f"decoded pixels have shape {pixels.shape}; a mammogram is one grey frame",
        )
    return Decoded(dataset, pixels, (time.perf_counter() - started) * 1000, decoder, reduction)


def _read_checked(header: ImageHeader) -> Dataset:
    """The full data set, read within the sizes the header allows and still matching it."""
    rows, columns = header.rows, header.columns
    pixels = rows * columns * header.frames
    raw_bytes = pixels * 2  # at most 16 bits a pixel, checked by ingest
    dataset = dicomfile.read_full(
        header.source.path,
        max_file_bytes=2 * raw_bytes + SLACK_BYTES,
        max_inflated_bytes=raw_bytes + SLACK_BYTES,
    )
    if "PixelData" not in dataset:
        # pydicom drops the whole data set when the file ends inside an element.
        raise IngestError("truncated", "the file ends before or inside its Pixel Data")
    try:
        now = check_pixel_description(dataset, max_pixels=pixels)
    except IngestError as error:
        raise IngestError(
            "changed", f"the file changed after its header was read: {error}"
        ) from error
    if now != (rows, columns):
        raise IngestError("changed", f"the file changed after its header was read: {now}")
    return dataset


def _decode_native(dataset: Dataset) -> npt.NDArray[np.generic]:
    fast = _native_view(dataset)
    if fast is not None:
        return fast
    try:
        pixels = pixel_array(dataset, index=0)
    except DECODE_ERRORS as exc:
        raise _failure(str(dataset.file_meta.get("TransferSyntaxUID", "")), exc) from exc
    if not pixels.dtype.isnative:  # big endian: OpenCV and the fast paths want native order
        pixels = pixels.astype(pixels.dtype.newbyteorder("="))
    return pixels


def _native_view(dataset: Dataset) -> npt.NDArray[np.generic] | None:
    """Unsigned 16-bit little-endian pixels straight from the Pixel Data bytes.

    The common case of native mammograms, read without pydicom's copy: the bits
    above Bits Stored are cleared (PS3.5 8.1.1) in the one pass that makes the
    array. Anything else (big endian, signed, 8-bit) returns ``None`` for pydicom.
    """
    little = str(dataset.file_meta.get("TransferSyntaxUID", "")) != ExplicitVRBigEndian
    if not little or int(dataset.BitsAllocated) != 16 or int(dataset.PixelRepresentation) != 0:
        return None
    rows, columns = int(dataset.Rows), int(dataset.Columns)
    data = dataset.PixelData
    if len(data) < rows * columns * 2:
        raise IngestError(
            "truncated", f"Pixel Data has {len(data)} bytes, {rows * columns * 2} expected"
        )
    pixels = np.frombuffer(data, dtype="<u2", count=rows * columns).reshape(rows, columns)
    stored = int(dataset.get("BitsStored", 16) or 16)
    if stored < 16:
        masked: npt.NDArray[np.uint16] = np.bitwise_and(pixels, np.uint16((1 << stored) - 1))
        return masked
    return pixels


def _decode_encapsulated(
    dataset: Dataset, transfer_syntax: str, target: tuple[int, int] | None, threads: int
) -> tuple[npt.NDArray[np.generic], str, int]:
    family, chain = CHAINS[transfer_syntax]
    request = _request(dataset, family, target, threads)
    fast = [codec for codec in chain if codec.available()]
    if int(dataset.get("PixelRepresentation", 0) or 0) != 0:
        fast = []  # signed pixels: pydicom knows how to restore the sign
    for codec in fast:
        try:
            pixels, reduction = codec.decode(request.frame, request.request)
        except DECODE_ERRORS as exc:
            log.warning(
                "%s could not decode a frame (%s); trying the next decoder", codec.name, exc
            )
            continue
        return _checked_shape(pixels, request.request, reduction), codec.name, reduction
    pixels = _decode_with_pydicom(
        dataset, transfer_syntax, fast_packages=[c.package for c in chain]
    )
    return pixels, "pydicom", 1


@dataclass(frozen=True)
class _FrameRequest:
    frame: bytes
    request: codecs.Request


def _request(
    dataset: Dataset, family: str, target: tuple[int, int] | None, threads: int
) -> _FrameRequest:
    rows, columns = int(dataset.Rows), int(dataset.Columns)
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    try:
        frame = first_frame(dataset.PixelData, frames)
    except DECODE_ERRORS as exc:
        raise IngestError(
            "truncated", f"the encapsulated Pixel Data cannot be split: {exc}"
        ) from exc
    try:
        geometry = frame_geometry(frame, family)
    except (CodestreamError, IndexError) as exc:
        raise IngestError("decode_failed", f"the compressed frame is not readable: {exc}") from exc
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
        target=target,
        levels=geometry.levels if geometry else 0,
        threads=threads,
    )
    return _FrameRequest(frame, request)


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


def _checked_shape(
    pixels: npt.NDArray[np.generic], request: codecs.Request, reduction: int
) -> npt.NDArray[np.generic]:
    expected = (-(-request.rows // reduction), -(-request.columns // reduction))
    if pixels.shape != expected:
        raise IngestError(
            "size_mismatch", f"decoded {pixels.shape}, expected {expected} (reduced {reduction}x)"
        )
    return pixels


def _decode_with_pydicom(
    dataset: Dataset, transfer_syntax: str, fast_packages: list[str] | None = None
) -> npt.NDArray[np.generic]:
    try:
        decoder = get_decoder(UID(transfer_syntax))
    except NotImplementedError as exc:
        raise IngestError(
            "no_decoder", f"no decoder exists here for transfer syntax {transfer_syntax}"
        ) from exc
    if not decoder.is_available:
        wanted = [*(fast_packages or []), *decoder.missing_dependencies]
        raise IngestError(
            "no_decoder",
            f"no installed decoder for {UID(transfer_syntax).name}; "
            f"install one of: {'; '.join(wanted)}",
        )
    try:
        return pixel_array(dataset, index=0, decoding_plugin=choose_plugin(transfer_syntax))
    except DECODE_ERRORS as exc:
        raise _failure(transfer_syntax, exc) from exc


def choose_plugin(transfer_syntax: str) -> str:
    """The first preferred pydicom plug-in that is available, else ``""`` (pydicom's order)."""
    preferred = PREFERRED_PLUGINS.get(transfer_syntax, ())
    if not preferred:
        return ""
    available = get_decoder(UID(transfer_syntax)).available_plugins
    return next((name for name in preferred if name in available), "")


def _failure(transfer_syntax: str, exc: Exception) -> IngestError:
    text = plain(exc)
    lowered = text.lower()
    name = UID(transfer_syntax).name if transfer_syntax else "an unknown transfer syntax"
    if any(sign in lowered for sign in TRUNCATION_SIGNS):
        return IngestError("truncated", f"pixel data ends early: {text}")
    return IngestError("decode_failed", f"{name}: {text}")
