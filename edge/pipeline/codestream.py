"""What a compressed frame says about itself, read from its markers before decoding.

A decoder allocates what the codestream claims, not what the DICOM header says,
so a small file whose JPEG or JPEG 2000 header claims 60000x60000 pixels would
allocate gigabytes. :func:`frame_geometry` reads the claimed size (and, for JPEG
2000, the number of wavelet levels) so that the decoder only ever runs on a
frame that matches the header already checked against ``max_pixels``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

J2K_SOC = b"\xff\x4f\xff\x51"
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_LS_SOF = 0xF7  # SOF55, ISO/IEC 14495-1


@dataclass(frozen=True)
class Geometry:
    rows: int
    columns: int
    components: int
    #: wavelet decomposition levels of a JPEG 2000 frame (0 for other codings)
    levels: int = 0


class CodestreamError(ValueError):
    """The frame's markers are missing or inconsistent."""


def frame_geometry(frame: bytes, family: str) -> Geometry | None:
    """The size a compressed frame claims; ``None`` for codings without a size header.

    ``family`` is ``jpeg``, ``jpegls``, ``j2k`` or anything else (``None``).
    """
    if family == "j2k":
        return j2k_geometry(frame)
    if family in ("jpeg", "jpegls"):
        return jpeg_geometry(frame)
    return None


def j2k_geometry(frame: bytes) -> Geometry:
    """Image size from SIZ and levels from COD of a JPEG 2000 codestream (ISO/IEC 15444-1 A.5)."""
    if bytes(frame[:4]) != J2K_SOC or len(frame) < 42:
        raise CodestreamError("no JPEG 2000 codestream (SOC, SIZ) at the start of the frame")
    xsiz, ysiz, x0, y0 = struct.unpack_from(">4I", frame, 8)
    components = struct.unpack_from(">H", frame, 40)[0]
    if xsiz <= x0 or ysiz <= y0:
        raise CodestreamError(f"JPEG 2000 SIZ gives an empty image ({xsiz}-{x0} x {ysiz}-{y0})")
    return Geometry(ysiz - y0, xsiz - x0, components, _j2k_levels(frame))


def _j2k_levels(frame: bytes) -> int:
    """Decomposition levels from the main header's COD marker segment (A.6.1)."""
    position = 4 + struct.unpack_from(">H", frame, 4)[0]
    while position + 4 <= len(frame):
        marker, length = struct.unpack_from(">HH", frame, position)
        if marker == 0xFF52 and position + 10 <= len(frame):
            return int(frame[position + 9])
        if marker == 0xFF90 or length < 2:  # SOT: the main header is over
            break
        position += 2 + length
    raise CodestreamError("JPEG 2000 main header has no COD marker segment")


def jpeg_geometry(frame: bytes) -> Geometry:
    """Image size from the SOF marker of a JPEG (ITU-T T.81 B.2.2) or JPEG-LS frame."""
    if bytes(frame[:2]) != b"\xff\xd8":
        raise CodestreamError("no JPEG SOI marker at the start of the frame")
    position = 2
    while position + 4 <= len(frame):
        if frame[position] != 0xFF:
            raise CodestreamError(f"JPEG marker expected at byte {position}")
        marker = frame[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        length = struct.unpack_from(">H", frame, position + 2)[0]
        if (marker in _JPEG_SOF or marker == _JPEG_LS_SOF) and position + 10 <= len(frame):
            rows, columns = struct.unpack_from(">HH", frame, position + 5)
            return Geometry(rows, columns, frame[position + 9])
        if length < 2:
            break
        position += 2 + length
    raise CodestreamError("JPEG frame has no SOF marker before its data")
