"""What the daemon's configuration asks of every decode, carried to the decoding workers."""

from __future__ import annotations

from dataclasses import dataclass

from edge.bundle.manifest import Accepts
from edge.pipeline.levels import DEFAULT_TOLERANCE


@dataclass(frozen=True)
class DecodeOptions:
    #: threads one decoder may use (openjpeg)
    threads: int = 1
    #: ``decode.score_tolerance``: the JPEG 2000 level's allowed effect on the score
    tolerance: float = DEFAULT_TOLERANCE
    #: ``decode.gpu`` is ``auto``: JPEG 2000 and HTJ2K go to the GPU first where there is one
    gpu: bool = False


@dataclass(frozen=True)
class HeaderCheck:
    """What :func:`~edge.pipeline.ingest.read_header` is given: the same checks in a worker."""

    max_pixels: int
    accepts: Accepts
