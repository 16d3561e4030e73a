"""Standard-built mammograms from a real image, for the ingest, decode and grey-scale tests.

Each file is a Digital Mammography For Presentation object around a real
CBIS-DDSM image (resized, 12 bits), written by a real encoder
(:mod:`edge.tools.decode_bench`). Attributes are changed with pydicom before writing.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import FileDataset

from edge.bundle.manifest import Accepts, Preprocessing
from edge.pipeline.decode import load_model_input
from edge.pipeline.ingest import read_header
from edge.tools.decode_bench import mammogram, real_image, write_encoded
from edge.types import ImageHeader, IncomingFile

SMALL = (512, 416)


@functools.lru_cache(maxsize=4)
def real_pixels(shape: tuple[int, int] = SMALL) -> np.ndarray:
    pixels = real_image(shape)
    pixels.setflags(write=False)
    return pixels


def build(
    path: Path,
    *,
    pixels: np.ndarray | None = None,
    encoding: str = "explicit-le",
    edit: Callable[[FileDataset], Any] | None = None,
    laterality: str = "L",
    view: str = "CC",
) -> Path:
    """Write a mammogram to ``path``; ``edit`` changes the data set before encoding."""
    dataset = mammogram(
        np.array(real_pixels() if pixels is None else pixels, dtype=np.uint16),
        laterality=laterality,
        view=view,
    )
    if edit is not None:
        edit(dataset)
    return write_encoded(dataset, encoding, path)


def incoming(path: Path) -> IncomingFile:
    info = path.lstat()
    return IncomingFile(path, info.st_size, info.st_mtime_ns, time.monotonic(), "scan")


def header(path: Path, *, accepts: Accepts | None = None, max_pixels: int = 10**8) -> ImageHeader:
    return read_header(incoming(path), max_pixels=max_pixels, accepts=accepts)


def model_input(path: Path, spec: Preprocessing) -> np.ndarray:
    """File to model input the way the daemon does it, as (H, W)."""
    return load_model_input(header(path), spec).tensor[0]
