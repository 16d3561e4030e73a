"""The fast decoders, one function per coding, each run on one compressed frame.

Measured on a full-field 4096x3328 12-bit mammogram (docs/ingest.md), the
compiled decoders that pydicom picks by default are far from the fastest, and
all of them hold the GIL while they work:

=================  ===========================================  ======================
coding             used here (releases the GIL)                 pydicom's default
=================  ===========================================  ======================
RLE                imagecodecs PackBits, segments in parallel   pylibjpeg-rle
JPEG (all kinds)   imagecodecs (libjpeg-turbo 3)                pylibjpeg-libjpeg
JPEG-LS            imagecodecs (CharLS)                         pylibjpeg-libjpeg
JPEG 2000, HTJ2K   glymur on libopenjp2, reduced resolution,    pylibjpeg-openjpeg
                   openjpeg's own threads
=================  ===========================================  ======================

Each function takes the frame and a :class:`Request` and returns the pixels and
the factor by which it reduced them (1: full size). Any exception it raises is a
decoding failure; :mod:`edge.pipeline.decode` then tries the next decoder.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import struct
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from edge.pipeline import gpudecode, levels

try:
    import imagecodecs
except ImportError:  # optional: pydicom's own decoders take over
    imagecodecs = None  # type: ignore[assignment]

try:
    import glymur
except ImportError:  # optional: pydicom's own decoders take over
    glymur = None

Pixels = npt.NDArray[Any]

#: openjpeg releases below this cannot read at reduced resolution through glymur
MIN_OPENJPEG = (2, 4, 0)


@dataclass(frozen=True)
class Request:
    """What the caller knows about the frame and wants from it."""

    rows: int
    columns: int
    bits_allocated: int
    #: the model's input (height, width); ``None`` decodes at full size
    target: tuple[int, int] | None = None
    #: wavelet levels in the JPEG 2000 codestream (from its COD marker)
    levels: int = 0
    threads: int = 1
    #: how far a reduced JPEG 2000 image may be enlarged to the target
    #: (:mod:`edge.pipeline.levels`); 1 never decodes below the target's size
    max_enlargement: float = 1.0


@dataclass(frozen=True)
class Codec:
    name: str
    #: what to install for it, named in a ``no_decoder`` reason
    package: str
    decode: Callable[[bytes, Request], tuple[Pixels, int]]
    available: Callable[[], bool]
    #: runs on the GPU: its failures are counted in health, then the CPU decoders run
    gpu: bool = False


def _imagecodecs_has(codec: str) -> Callable[[], bool]:
    def check() -> bool:
        return imagecodecs is not None and bool(getattr(imagecodecs, codec).available)

    return check


@functools.cache  # asked for every JPEG 2000 frame; it cannot change in a running process
def glymur_available() -> bool:
    """glymur is installed and found an openjpeg that reads at reduced resolution."""
    if glymur is None:
        return False
    found = str(glymur.version.openjpeg_version)
    try:
        return tuple(int(part) for part in found.split(".")[:3]) >= MIN_OPENJPEG
    except ValueError:
        return False


def availability() -> tuple[str, bool]:
    """A line naming the fast decoders found, and whether all of them are there."""
    found = []
    if imagecodecs is not None:
        found.append(f"imagecodecs {imagecodecs.__version__} (RLE, JPEG, JPEG-LS)")
    if glymur_available():
        found.append(
            f"glymur {glymur.__version__} on openjpeg {glymur.version.openjpeg_version} "
            "(JPEG 2000 and HTJ2K at reduced resolution)"
        )
    complete = len(found) == 2
    if not complete:
        found.append("missing ones leave their codings to pydicom's slower decoders")
    return "; ".join(found), complete


# -- RLE (PS3.5 Annex G) ----------------------------------------------------------------


def decode_rle(frame: bytes, request: Request) -> tuple[Pixels, int]:
    """DICOM RLE: one PackBits segment per byte of a sample, most significant first."""
    assert imagecodecs is not None
    size = request.rows * request.columns
    segments = _rle_segments(frame, request.bits_allocated // 8)
    planes: list[Pixels] = [np.empty(0, np.uint8)] * len(segments)
    failures: list[Exception] = []

    def run(index: int) -> None:
        # A segment may not inflate past its plane (one run of slack for padding):
        # a PackBits bomb stops here.
        out = bytearray(size + 128)
        try:
            decoded = imagecodecs.packbits_decode(segments[index], out=out)  # type: ignore[arg-type]
            planes[index] = np.frombuffer(decoded, np.uint8)
        except RuntimeError as exc:
            failures.append(exc)

    # The two byte planes of a 16-bit image decode at once: imagecodecs drops the GIL.
    helper = threading.Thread(target=run, args=(0,)) if len(segments) > 1 else None
    if helper is not None:
        helper.start()
    for index in range(1 if helper else 0, len(segments)):
        run(index)
    if helper is not None:
        helper.join()
    if failures:
        raise failures[0]
    if any(len(plane) < size for plane in planes):
        raise ValueError("an RLE segment ends before its image does")
    shape = (request.rows, request.columns)
    if len(planes) == 1:
        return planes[0][:size].reshape(shape), 1
    # Interleaving the low and high bytes is a little-endian uint16 image;
    # OpenCV's merge does it ten times faster than numpy's shift-and-or.
    low, high = planes[1][:size].reshape(shape), planes[0][:size].reshape(shape)
    return cv2.merge([low, high]).view("<u2").reshape(shape), 1


def _rle_segments(frame: bytes, expected: int) -> list[memoryview]:
    """The segments named by the 64-byte RLE header (PS3.5 G.5)."""
    if len(frame) < 64:
        raise ValueError("RLE frame shorter than its 64-byte header")
    count, *offsets = struct.unpack_from("<16I", frame)
    if count != expected or expected not in (1, 2):
        raise ValueError(f"RLE header lists {count} segments; {expected} expected")
    bounds = [*offsets[:count], len(frame)]
    if bounds[0] != 64 or any(b <= a for a, b in itertools.pairwise(bounds)):
        raise ValueError(f"RLE segment offsets {bounds[:count]} are not in order")
    whole = memoryview(frame)
    return [whole[bounds[i] : bounds[i + 1]] for i in range(count)]


# -- JPEG and JPEG-LS -----------------------------------------------------------------


def decode_jpeg(frame: bytes, request: Request) -> tuple[Pixels, int]:
    """JPEG baseline, extended, lossless and lossless SV1 with libjpeg-turbo."""
    assert imagecodecs is not None
    return imagecodecs.jpeg8_decode(frame), 1


def decode_jpegls(frame: bytes, request: Request) -> tuple[Pixels, int]:
    """JPEG-LS lossless and near-lossless with CharLS."""
    assert imagecodecs is not None
    return imagecodecs.jpegls_decode(frame), 1


# -- JPEG 2000 and HTJ2K ---------------------------------------------------------------


def reduce_level(request: Request) -> int:
    """The wavelet levels to drop: the coarsest level the request allows (:mod:`levels`)."""
    return levels.choose_level(
        request.rows, request.columns, request.target, request.levels, request.max_enlargement
    )


def decode_j2k(frame: bytes, request: Request) -> tuple[Pixels, int]:
    """JPEG 2000 or HTJ2K through libopenjp2, skipping the finest levels not needed.

    glymur reads from a path, so the codestream goes to an anonymous in-memory
    file (``memfd``), never to disk.
    """
    level = reduce_level(request)
    return decode_j2k_at(frame, level, request.threads), 2**level


def decode_j2k_at(frame: bytes, level: int, threads: int) -> Pixels:
    """The frame decoded ``level`` wavelet levels below full size, on the area grid."""
    assert glymur is not None
    glymur.set_option("lib.num_threads", max(1, threads))
    with memory_file(frame) as path:
        image = glymur.Jp2k(path)
        step = 2**level
        pixels = np.asarray(image[::step, ::step] if step > 1 else image[:])
    return align_to_area_grid(pixels, level) if level else pixels


def align_to_area_grid(pixels: Pixels, level: int) -> Pixels:
    """Move a reduced-resolution JPEG 2000 image onto the grid of an area resize.

    The low-pass sample n at ``level`` is centred on full-resolution sample
    ``2**level * n`` (the wavelet filters are symmetric about even samples,
    ISO/IEC 15444-1 F.3), while an area average of the same block is centred on
    ``2**level * n + (2**level - 1) / 2``. Resampling by that offset, ``(1 -
    2**-level) / 2`` of an output pixel, halves the difference from a full decode
    plus area resize (docs/ingest.md).
    """
    shift = (1.0 - 2.0**-level) / 2.0
    matrix = np.array([[1.0, 0.0, shift], [0.0, 1.0, shift]], dtype=np.float32)
    rows, columns = pixels.shape[:2]
    return cv2.warpAffine(
        pixels,
        matrix,
        (columns, rows),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REPLICATE,
    )


@contextlib.contextmanager
def memory_file(data: bytes) -> Iterator[str]:
    """A path to ``data`` held in memory: a memfd on Linux, else a temporary file."""
    if not hasattr(os, "memfd_create"):
        with tempfile.NamedTemporaryFile(suffix=".j2k") as stream:
            stream.write(data)
            stream.flush()
            yield stream.name
        return
    fd = os.memfd_create("edge-frame", os.MFD_CLOEXEC)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)


RLE = Codec("imagecodecs-rle", "imagecodecs", decode_rle, _imagecodecs_has("PACKBITS"))
JPEG = Codec("imagecodecs-jpeg", "imagecodecs", decode_jpeg, _imagecodecs_has("JPEG8"))
JPEGLS = Codec("imagecodecs-jpegls", "imagecodecs", decode_jpegls, _imagecodecs_has("JPEGLS"))
J2K = Codec("glymur", "glymur (with libopenjp2 >= 2.4)", decode_j2k, glymur_available)


def decode_j2k_gpu(frame: bytes, request: Request) -> tuple[Pixels, int]:
    """JPEG 2000 or HTJ2K on the GPU, at full size (:mod:`edge.pipeline.gpudecode`).

    Any failure of the GPU path (a CUDA error, a lost device, an unloadable library)
    is a decoding failure of this decoder only: the CPU decoders take the frame.
    """
    try:
        return gpudecode.decode_frame(frame), 1
    except Exception as exc:  # whatever the GPU raises, the CPU takes the frame
        raise RuntimeError(f"GPU decoding failed: {type(exc).__name__}: {exc}") from exc


J2K_GPU = Codec(
    "nvimgcodec", gpudecode.PACKAGES, decode_j2k_gpu, lambda: gpudecode.is_available()[0], gpu=True
)

#: codestream family -> its CPU decoders, fastest first
CPU_CHAINS: dict[str, tuple[Codec, ...]] = {
    "rle": (RLE,),
    "jpeg": (JPEG,),
    "jpegls": (JPEGLS,),
    "j2k": (J2K,),
}


def chain(family: str, *, gpu: bool) -> tuple[Codec, ...]:
    """The fast decoders of ``family``, the GPU one first when ``gpu`` asks for it."""
    cpu = CPU_CHAINS[family]
    return (J2K_GPU, *cpu) if gpu and family == "j2k" else cpu
