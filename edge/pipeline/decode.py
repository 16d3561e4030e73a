"""Decode a mammogram's pixels with the fastest maintained decoder installed.

Each transfer syntax has a chain of decoders, fastest first (see
:mod:`edge.pipeline.codecs` for the measurements), ending with pydicom's own
choice. A decoder that fails on a frame hands it to the next; only when all
fail is the file quarantined, and when none is installed the reason names the
packages that would decode it.

Before any decoder runs, the compressed frame's own header must claim the size
the DICOM header claims (:mod:`edge.pipeline.frames`). With ``decode.gpu: auto``
JPEG 2000 and HTJ2K go to the GPU first where there is one
(:mod:`edge.pipeline.gpudecode`); a frame it fails on goes on to the CPU.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset
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

from edge.bundle.manifest import Accepts, Preprocessing
from edge.errors import IngestError
from edge.pipeline import dicomfile
from edge.pipeline.dicomfile import plain
from edge.pipeline.frames import DECODE_ERRORS, FastDecode, Wanted, decode_fast
from edge.pipeline.ingest import check_pixel_description, read_image
from edge.pipeline.levels import DEFAULT_TOLERANCE, max_enlargement
from edge.pipeline.preprocess import prepare
from edge.pipeline.terms import uid_name
from edge.types import ImageHeader, IncomingFile, ModelInput

log = logging.getLogger(__name__)

#: transfer syntax -> codestream family, whose fast decoders :func:`codecs.chain` lists
FAMILIES: dict[str, str] = {
    RLELossless: "rle",
    JPEGBaseline8Bit: "jpeg",
    JPEGExtended12Bit: "jpeg",
    JPEGLossless: "jpeg",
    JPEGLosslessSV1: "jpeg",
    JPEGLSLossless: "jpegls",
    JPEGLSNearLossless: "jpegls",
    JPEG2000Lossless: "j2k",
    JPEG2000: "j2k",
    HTJ2KLossless: "j2k",
    HTJ2KLosslessRPCL: "j2k",
    HTJ2K: "j2k",
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
    #: why the GPU decoder failed on this frame before a CPU decoder took it ("" if it did not)
    gpu_fallback: str = ""


def load_model_input(
    header: ImageHeader,
    spec: Preprocessing,
    *,
    threads: int | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    gpu: bool = False,
    out: npt.NDArray[np.float32] | None = None,
) -> ModelInput:
    """Decode the file of ``header`` at the resolution ``spec`` needs, then prepare it
    (into ``out`` when given: :func:`~edge.pipeline.preprocess.prepare`)."""
    target = (spec.height, spec.width)
    decoded = decode(header, target=target, threads=threads, tolerance=tolerance, gpu=gpu)
    return _prepared(header, decoded, spec, out)


def load_file(
    incoming: IncomingFile,
    spec: Preprocessing,
    *,
    max_pixels: int,
    accepts: Accepts | None = None,
    threads: int | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    gpu: bool = False,
    out: npt.NDArray[np.float32] | None = None,
) -> ModelInput:
    """Read ``incoming`` once, its header checked as ingest checks it, then decode and
    prepare it as :func:`load_model_input` does (a decode worker that starts on a
    file while the daemon reads its header). The header pass counts as decoding:
    it is the same parse that :func:`decode` makes of the whole file.

    Raises
    ------
    Skip, IngestError
        As :func:`~edge.pipeline.ingest.read_header` and :func:`decode`.
    """
    started = time.perf_counter()
    header, dataset = read_image(incoming, max_pixels=max_pixels, accepts=accepts)
    _check_has_pixels(dataset)  # its description was checked on this very reading
    target = (spec.height, spec.width)
    decoded = _decode_read(dataset, started, target, threads, tolerance, gpu)
    return _prepared(header, decoded, spec, out)


def _prepared(
    header: ImageHeader,
    decoded: Decoded,
    spec: Preprocessing,
    out: npt.NDArray[np.float32] | None,
) -> ModelInput:
    prepared = prepare(header, decoded.dataset, decoded.pixels, spec, out)
    prepared.timings_ms["decode"] = decoded.decode_ms
    if decoded.gpu_fallback:
        return dataclasses.replace(prepared, gpu_fallback=decoded.gpu_fallback)
    return prepared


def decode(
    header: ImageHeader,
    *,
    target: tuple[int, int] | None = None,
    threads: int | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    gpu: bool = False,
) -> Decoded:
    """Read the whole file of ``header`` and decode its first frame.

    Parameters
    ----------
    target
        The model's input (height, width). A JPEG 2000 or HTJ2K image is decoded
        at the coarsest resolution level whose measured effect on the score stays
        within ``tolerance`` (:mod:`edge.pipeline.levels`); other codings decode
        at full size.
    threads
        Threads a decoder may use (openjpeg); default one per core.
    tolerance
        The 99th percentile of |delta score| allowed against a full decode
        (``decode.score_tolerance``).
    gpu
        Try the GPU decoder first for JPEG 2000 and HTJ2K where it is available
        (``decode.gpu: auto``).

    Raises
    ------
    IngestError
        ``no_decoder`` naming the missing package, ``truncated``,
        ``size_mismatch``, ``deflate_bomb``, ``too_large`` or ``decode_failed``.
    """
    started = time.perf_counter()
    dataset = _read_checked(header)
    return _decode_read(dataset, started, target, threads, tolerance, gpu)


def _decode_read(
    dataset: Dataset,
    started: float,
    target: tuple[int, int] | None,
    threads: int | None,
    tolerance: float,
    gpu: bool,
) -> Decoded:
    """Decode the first frame of a data set read in full (reading began at ``started``)."""
    transfer_syntax = str(dataset.file_meta.get("TransferSyntaxUID", "") or "")
    if transfer_syntax in FAMILIES:
        cores = threads or os.cpu_count() or 1
        wanted = Wanted(target, cores, max_enlargement(tolerance), gpu)
        fast = _decode_encapsulated(dataset, transfer_syntax, wanted)
    elif not transfer_syntax or transfer_syntax in NATIVE:
        fast = FastDecode(_decode_native(dataset), "pydicom", 1)
    else:
        fast = FastDecode(_decode_with_pydicom(dataset, transfer_syntax), "pydicom", 1)
    if fast.pixels.ndim != 2:
        raise IngestError(
            "not_greyscale",
            f"decoded pixels have shape {fast.pixels.shape}; a mammogram is one grey frame",
        )
    elapsed = (time.perf_counter() - started) * 1000
    return Decoded(dataset, fast.pixels, elapsed, fast.decoder, fast.reduction, fast.gpu_fallback)


def _read_checked(header: ImageHeader) -> Dataset:
    """The full data set, read within the sizes the header allows and still matching it."""
    limits = dicomfile.Limits.for_pixels(header.rows * header.columns * header.frames)
    dataset = dicomfile.read_full(
        header.source.path,
        max_file_bytes=limits.max_file_bytes,
        max_inflated_bytes=limits.max_inflated_bytes,
    )
    _check_still_matching(dataset, header)
    return dataset


def _check_still_matching(dataset: Dataset, header: ImageHeader) -> None:
    """The full data set has its Pixel Data and still describes the image of ``header``."""
    rows, columns = header.rows, header.columns
    _check_has_pixels(dataset)
    try:
        now = check_pixel_description(dataset, max_pixels=rows * columns * header.frames)
    except IngestError as error:
        raise IngestError(
            "changed", f"the file changed after its header was read: {error}"
        ) from error
    if now != (rows, columns):
        raise IngestError("changed", f"the file changed after its header was read: {now}")


def _check_has_pixels(dataset: Dataset) -> None:
    if "PixelData" not in dataset:
        # pydicom drops the whole data set when the file ends inside an element.
        raise IngestError("truncated", "the file ends before or inside its Pixel Data")


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


def _decode_encapsulated(dataset: Dataset, transfer_syntax: str, wanted: Wanted) -> FastDecode:
    fast = decode_fast(dataset, FAMILIES[transfer_syntax], wanted)
    if isinstance(fast, FastDecode):
        return fast
    pixels = _decode_with_pydicom(dataset, transfer_syntax, fast_packages=list(fast))
    return FastDecode(pixels, "pydicom", 1)


def _decode_with_pydicom(
    dataset: Dataset, transfer_syntax: str, fast_packages: list[str] | None = None
) -> npt.NDArray[np.generic]:
    try:
        decoder = get_decoder(UID(transfer_syntax))
    except NotImplementedError as exc:
        raise IngestError(
            "no_decoder", f"no decoder exists here for {uid_name(transfer_syntax)}"
        ) from exc
    if not decoder.is_available:
        wanted = [*(fast_packages or []), *decoder.missing_dependencies]
        raise IngestError(
            "no_decoder",
            f"no installed decoder for {uid_name(transfer_syntax)}; "
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
    name = uid_name(transfer_syntax)
    if any(sign in lowered for sign in TRUNCATION_SIGNS):
        return IngestError("truncated", f"pixel data ends early: {text}")
    return IngestError("decode_failed", f"{name}: {text}")
