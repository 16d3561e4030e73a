"""JPEG 2000 and HTJ2K decoded on the GPU: NVIDIA's nvJPEG2000 through nvImageCodec.

On a box with an NVIDIA GPU, nvJPEG2000 decodes a full-field mammogram in a few
milliseconds where openjpeg needs hundreds on two cores. It comes as PyPI wheels
(``nvidia-nvimgcodec-cu12`` or ``-cu13`` with ``nvidia-nvjpeg2k-cu12`` or
``-cu13``; JetPack ships the Tegra builds). This module is the only one that
imports ``nvidia.nvimgcodec``, and only when :func:`is_available` is first
asked: a box without the libraries or without a GPU never loads them, and its
decoder chain is exactly the CPU one.

:func:`is_available` does not trust an import alone: it decodes a small known
codestream on the GPU and compares the pixels, so a driver too old for the
wheel's CUDA, a missing device or a broken install all say so here, once, with
the reason. Any failure later, on a frame, hands that frame to the CPU decoders
(:mod:`edge.pipeline.decode` counts it in health): never a lost image.

Resolution: nvImageCodec's Python API (0.9) decodes a region of a JPEG 2000
image (``Region``) but has no resolution reduction (its resolution settings
are the encoder's), so the GPU decodes the full image and preprocessing then
does the area resize: the reference path, with no level effect on the score.
"""

from __future__ import annotations

import base64
import functools
import threading
from typing import Any

import numpy as np
import numpy.typing as npt

#: what to install, named in the reason when it is missing
PACKAGES = "nvidia-nvimgcodec-cu13 and nvidia-nvjpeg2k-cu13 (or the -cu12 pair)"

#: a 16x16 lossless JPEG 2000 codestream (openjpeg 2.5) of ``_probe_pixels()``
PROBE = base64.b64decode(
    "/0//UQApAAAAAAAQAAAAEAAAAAAAAAAAAAAAEAAAABAAAAAAAAAAAAABDwEB/1IADAAAAAEAAQQEAAH/XAAHQI"
    "CIiJD/ZAAlAAFDcmVhdGVkIGJ5IE9wZW5KUEVHIHZlcnNpb24gMi41LjD/kAAKAAAAAAByAAH/k9/4kngSK2cW"
    "j4+hghgWURqAMI80fFpSc9SLDlVlBYoALxCQAD9iH0UI/sddBQprLagrNsdrq4Mfj8ZUDfN5wA9AxW64NLFn+Z"
    "n+Zn+Zn+Zn+aAfwAHzhIA/MFA2oZnPPaY0YM//2Q=="
)

_lock = threading.Lock()
_decoders: dict[str, Any] = {}


def _probe_pixels() -> npt.NDArray[np.uint16]:
    pixels: npt.NDArray[np.uint16] = np.arange(256, dtype=np.uint16).reshape(16, 16) * 16
    return pixels


@functools.cache  # asked for every frame; the answer cannot change in a running process
def is_available() -> tuple[bool, str]:
    """Whether nvImageCodec decodes JPEG 2000 on a GPU here, and a line saying why (not)."""
    try:
        from nvidia import nvimgcodec as module
    except ImportError as exc:
        return False, f"nvImageCodec is not installed ({exc}); install {PACKAGES}"
    version = getattr(module, "__version__", "?")
    try:
        pixels = _decode(PROBE)
    except Exception as exc:  # noqa: BLE001 - any failure means "not here", with its reason
        return False, f"nvImageCodec {version} cannot decode on a GPU here: {exc}"
    if pixels.shape != (16, 16) or not np.array_equal(pixels, _probe_pixels()):
        return False, f"nvImageCodec {version} decoded its probe image wrongly"
    return True, f"nvImageCodec {version} (nvJPEG2000) on the GPU"


def decode_frame(frame: bytes) -> npt.NDArray[np.generic]:
    """One JPEG 2000 or HTJ2K frame decoded on the GPU at full size, copied to the host.

    Raises
    ------
    RuntimeError
        When nvImageCodec gives no image; its own errors propagate as they are.
    """
    return _decode(bytes(frame))


def _decode(frame: bytes) -> npt.NDArray[np.generic]:
    from nvidia import nvimgcodec as module

    params = module.DecodeParams(allow_any_depth=True, color_spec=module.ColorSpec.UNCHANGED)
    image = _decoder(module).decode(frame, params=params)
    if image is None:
        raise RuntimeError("nvImageCodec returned no image for the frame")
    pixels = np.asarray(image.cpu())
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    return np.ascontiguousarray(pixels)


def _decoder(module: Any) -> Any:
    """One GPU-only decoder per process: made once, reused for every frame."""
    with _lock:
        if "gpu" not in _decoders:
            backend = module.Backend(module.BackendKind.GPU_ONLY)
            _decoders["gpu"] = module.Decoder(backends=[backend])
        return _decoders["gpu"]
