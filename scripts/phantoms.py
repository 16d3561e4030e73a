"""Synthetic mammogram phantoms for training and testing the demonstration engine.

Every phantom is in the canonical orientation the engine expects: chest wall on the LEFT edge of
the image, nipple pointing right. Images are float32 in [0, 1], MONOCHROME2 (dense tissue bright,
air dark). A phantom is "positive" when it contains at least one mass or calcification cluster.

Only numpy and OpenCV are used. Smooth anatomy is synthesised on a grid four times coarser than
the output and upscaled, which keeps a 1024x832 phantom well under 30 ms on one core; only the
things that must stay sharp (skin line, spicules, calcifications, pixel noise) touch full
resolution.

These phantoms are a toy. They look vaguely like a film mammogram and nothing more: no physics,
no real anatomy, no real lesion statistics.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# Anatomy is drawn on a grid this many times coarser than the output.
COARSE_FACTOR = 4

# Burned-in view markers that film mammograms carry; drawn on the background as a nuisance.
VIEW_LABELS = ("LCC", "RCC", "LMLO", "RMLO", "L CC", "R MLO")

F32 = np.float32


@dataclass(frozen=True)
class Lesion:
    """Where a phantom's lesion was drawn, in output pixels (the truth for localisation).

    ``row`` and ``column`` are the centre in the SCOORD convention: ``(0, 0)`` is the top left
    corner of the top left pixel, so the centre of pixel ``[r, c]`` is ``(r + 0.5, c + 0.5)``.
    """

    kind: str  # "mass" or "calcifications"
    row: float
    column: float
    #: the lesion's extent: a mass's boundary radius, twice a cluster's spread
    radius: float


@dataclass(frozen=True)
class LesionSite:
    """A lesion to draw at a chosen pixel (output pixels), for tests that need its place."""

    kind: str  # "mass" or "calcifications"
    row: int
    column: int
    #: a mass's radius (pixels) and peak contrast; random, as in training, when None
    radius: float | None = None
    contrast: float | None = None


@dataclass(frozen=True)
class BreastShape:
    """Silhouette parameters, in output pixels; the chest wall is the line x = 0."""

    centre_y: float  # row where the nipple axis meets the chest wall
    depth: float  # how far the breast reaches to the right (chest wall to nipple)
    half_height_up: float  # vertical extent above the nipple axis
    half_height_down: float  # vertical extent below the nipple axis
    edge_width: float  # fraction of the radius over which compressed thickness falls to zero
    is_mlo: bool  # mediolateral-oblique view: breast runs up into the axilla, pectoral visible


def make_phantom(rng: np.random.Generator, height: int, width: int, *, lesion: bool) -> np.ndarray:
    """Return one synthetic mammogram, float32 HxW in [0, 1], chest wall on the left.

    With ``lesion=True`` the image contains one or more masses and/or calcification clusters;
    with ``lesion=False`` it contains only normal-looking tissue.
    """
    return make_phantom_with_lesions(rng, height, width, lesion=lesion)[0]


def make_phantom_with_lesions(
    rng: np.random.Generator,
    height: int,
    width: int,
    *,
    lesion: bool,
    at: LesionSite | None = None,
) -> tuple[np.ndarray, tuple[Lesion, ...]]:
    """Like :func:`make_phantom`, and also where each lesion was drawn.

    Draws exactly the same image as :func:`make_phantom` for the same generator state.
    ``at`` draws instead one lesion as :class:`LesionSite` asks, centred on its pixel, which
    must lie in breast tissue off the pectoral muscle (ValueError otherwise): a lesion at a
    known place, for tests.
    """
    if height < 64 or width < 64:
        raise ValueError(f"phantom too small: {height}x{width}")
    coarse_h = -(-height // COARSE_FACTOR)
    coarse_w = -(-width // COARSE_FACTOR)

    shape = _random_breast_shape(rng, height, width)
    rho_coarse = _normalised_radius(rng, shape, coarse_h, coarse_w, height, width)
    tissue_coarse = _tissue_intensity(rng, rho_coarse, shape)
    muscle_coarse = np.zeros_like(tissue_coarse)
    if shape.is_mlo:
        muscle_coarse = _pectoral_muscle(rng, shape, coarse_h, coarse_w, height, width)
        tissue_coarse = _blend_pectoral_muscle(rng, tissue_coarse, muscle_coarse)

    # Fine parenchymal texture is added at half resolution, where it costs a quarter as much.
    half_h, half_w = -(-height // 2), -(-width // 2)
    tissue_half = _upscale(tissue_coarse, half_h, half_w)
    tissue_half += _fine_parenchyma(rng, _upscale(rho_coarse, half_h, half_w))

    rho = _upscale(rho_coarse, height, width)
    image = _upscale(tissue_half, height, width)
    image += _skin_line(rng, rho)
    if at is not None:
        lesions: tuple[Lesion, ...] = (_insert_lesion_at(rng, image, rho, muscle_coarse, at),)
    elif lesion:
        lesions = _insert_lesions(rng, image, rho, muscle_coarse, shape)
    else:
        lesions = ()
    inside = rho < 1.0
    image[~inside] = 0.0
    _draw_view_label(rng, image, inside)
    return _acquisition(rng, image), lesions


def _random_breast_shape(rng: np.random.Generator, height: int, width: int) -> BreastShape:
    is_mlo = bool(rng.random() < 0.5)
    centre_y = height * rng.uniform(0.45, 0.62)
    half_down = height * rng.uniform(0.28, 0.45)
    # In an MLO view the breast continues up into the axilla, past the top of the detector.
    half_up = centre_y * rng.uniform(1.05, 1.5) if is_mlo else half_down * rng.uniform(0.85, 1.15)
    return BreastShape(
        centre_y=centre_y,
        depth=width * rng.uniform(0.5, 0.9),
        half_height_up=half_up,
        half_height_down=half_down,
        edge_width=rng.uniform(0.12, 0.3),
        is_mlo=is_mlo,
    )


def _normalised_radius(
    rng: np.random.Generator,
    shape: BreastShape,
    coarse_h: int,
    coarse_w: int,
    height: int,
    width: int,
) -> np.ndarray:
    """Elliptical radius on the coarse grid: 0 at the chest-wall centre, 1 on the skin."""
    ys = (np.arange(coarse_h, dtype=F32) + 0.5) * (height / coarse_h)
    xs = (np.arange(coarse_w, dtype=F32) + 0.5) * (width / coarse_w)
    dy = ys[:, None] - F32(shape.centre_y)
    half_h = np.where(dy < 0, F32(shape.half_height_up), F32(shape.half_height_down))
    rho = np.sqrt((xs[None, :] / F32(shape.depth)) ** 2 + (dy / half_h) ** 2)
    # Smooth low-frequency wobble so the outline is not a perfect ellipse.
    wobble = _power_law_noise(rng, coarse_h, coarse_w, exponent=5.0)
    return (rho * (1.0 + F32(rng.uniform(0.01, 0.03)) * wobble)).astype(F32)


def _tissue_intensity(rng: np.random.Generator, rho: np.ndarray, shape: BreastShape) -> np.ndarray:
    """Fat/fibroglandular mixture times compressed thickness, on the coarse grid."""
    h, w = rho.shape
    # Ducts and ligaments run from the chest wall towards the nipple, so structure is
    # elongated horizontally: stretch the spectrum along x.
    structure = _power_law_noise(
        rng, h, w, exponent=rng.uniform(2.6, 3.4), stretch_x=rng.uniform(1.5, 3.0)
    )
    detail = _power_law_noise(rng, h, w, exponent=2.0)
    density_level = rng.uniform(-1.5, 1.5)  # fatty ... extremely dense
    depth_from_skin = np.clip(1.0 - rho, 0.0, 1.0)
    # Glandular fraction: more glandular tissue deep in the breast (towards the chest wall).
    logits = 1.8 * structure + 0.6 * detail + density_level + 3.0 * (depth_from_skin - 0.45)
    glandular = 1.0 / (1.0 + np.exp(-logits))
    fat_value = rng.uniform(0.2, 0.35)
    # Kept well below 1 so that a lesion on top of dense tissue does not saturate.
    gland_value = rng.uniform(0.55, 0.75)
    mixture = fat_value + (gland_value - fat_value) * glandular
    # Compression leaves the periphery thinner, so attenuation falls off towards the skin.
    thickness = np.sqrt(np.clip(depth_from_skin / shape.edge_width, 0.0, 1.0))
    return (mixture * thickness).astype(F32)


def _pectoral_muscle(
    rng: np.random.Generator,
    shape: BreastShape,
    coarse_h: int,
    coarse_w: int,
    height: int,
    width: int,
) -> np.ndarray:
    """Soft mask (coarse grid) of the pectoral muscle: a slightly convex top-left triangle."""
    reach_x = width * rng.uniform(0.15, min(0.45, 0.8 * shape.depth / width))
    reach_y = height * rng.uniform(0.3, 0.65)
    u = (np.arange(coarse_w, dtype=F32) + 0.5)[None, :] * F32(width / coarse_w / reach_x)
    v = (np.arange(coarse_h, dtype=F32) + 0.5)[:, None] * F32(height / coarse_h / reach_y)
    bulge = rng.uniform(-0.3, 0.5)
    edge = u + v + bulge * u * v - 1.0  # < 0 inside the muscle
    softness = rng.uniform(0.01, 0.04)
    return (1.0 / (1.0 + np.exp(np.clip(edge / softness, -30, 30)))).astype(F32)


def _blend_pectoral_muscle(
    rng: np.random.Generator, tissue: np.ndarray, muscle: np.ndarray
) -> np.ndarray:
    """Paint the muscle over the tissue: bright and fairly uniform."""
    texture = 0.04 * _power_law_noise(rng, *tissue.shape, exponent=3.0)
    value = rng.uniform(0.6, 0.8) + texture
    return (tissue * (1.0 - muscle) + value * muscle).astype(F32)


def _fine_parenchyma(rng: np.random.Generator, rho: np.ndarray) -> np.ndarray:
    """Fine fibrous texture, strongest deep in the breast (on whatever grid ``rho`` is)."""
    grain = _white_noise(rng, rho.shape)
    # Elongated along x, like the fine strands running towards the nipple.
    grain = cv2.GaussianBlur(grain, (0, 0), sigmaX=rng.uniform(0.8, 1.6), sigmaY=0.5)
    weight = np.clip(1.0 - rho, 0.0, 1.0)
    weight *= F32(rng.uniform(0.03, 0.08))
    return grain * weight


def _skin_line(rng: np.random.Generator, rho: np.ndarray) -> np.ndarray:
    """Thin bright rim just inside the outline (the skin is denser than subcutaneous fat)."""
    # rho changes by ~1/depth per pixel at the nipple, so this width is a couple of pixels.
    width_rho = F32(rng.uniform(0.004, 0.008))
    peak = F32(rng.uniform(0.1, 0.25))
    # Triangle profile peaking at rho = 1 - width, computed in place (this runs at full size).
    rim = rho - (F32(1.0) - width_rho)
    np.abs(rim, out=rim)
    rim *= -peak / width_rho
    rim += peak
    return np.maximum(rim, 0.0, out=rim)


def _insert_lesions(
    rng: np.random.Generator,
    image: np.ndarray,
    rho: np.ndarray,
    muscle_coarse: np.ndarray,
    shape: BreastShape,
) -> tuple[Lesion, ...]:
    kind = rng.choice(["mass", "calcifications", "both"], p=[0.5, 0.3, 0.2])
    masses = int(rng.integers(1, 3)) if kind in ("mass", "both") else 0
    clusters = int(rng.integers(1, 3)) if kind in ("calcifications", "both") else 0
    lesions = []
    for _ in range(masses):
        cy, cx = _lesion_site(rng, rho, muscle_coarse, shape)
        patch, radius = _mass_patch(rng)
        _add_patch(image, patch, cy, cx)
        lesions.append(Lesion("mass", cy + 0.5, cx + 0.5, radius))
    for _ in range(clusters):
        cy, cx = _lesion_site(rng, rho, muscle_coarse, shape)
        patch, spread = _calcification_patch(rng)
        _add_patch(image, patch, cy, cx)
        lesions.append(Lesion("calcifications", cy + 0.5, cx + 0.5, 2.0 * spread))
    return tuple(lesions)


def _insert_lesion_at(
    rng: np.random.Generator,
    image: np.ndarray,
    rho: np.ndarray,
    muscle_coarse: np.ndarray,
    at: LesionSite,
) -> Lesion:
    kind, cy, cx = at.kind, at.row, at.column
    scale_y, scale_x = muscle_coarse.shape[0] / rho.shape[0], muscle_coarse.shape[1] / rho.shape[1]
    if rho[cy, cx] >= 0.8 or muscle_coarse[int(cy * scale_y), int(cx * scale_x)] > 0.1:
        raise ValueError(f"({cy}, {cx}) is not in breast tissue off the muscle")
    if kind == "mass":
        patch, radius = _mass_patch(rng, at.radius, at.contrast)
    elif kind == "calcifications":
        patch, spread = _calcification_patch(rng)
        radius = 2.0 * spread
    else:
        raise ValueError(f"unknown lesion kind {kind!r}")
    _add_patch(image, patch, cy, cx)
    return Lesion(kind, cy + 0.5, cx + 0.5, radius)


def _lesion_site(
    rng: np.random.Generator, rho: np.ndarray, muscle_coarse: np.ndarray, shape: BreastShape
) -> tuple[int, int]:
    """A random pixel in breast tissue: away from the thin periphery and off the muscle."""
    height, width = rho.shape
    scale_y, scale_x = muscle_coarse.shape[0] / height, muscle_coarse.shape[1] / width
    x_low = int(0.05 * width)
    x_high = max(x_low + 1, int(shape.depth))
    for _ in range(200):
        cy, cx = int(rng.integers(0, height)), int(rng.integers(x_low, x_high))
        on_muscle = muscle_coarse[int(cy * scale_y), int(cx * scale_x)] > 0.1
        if rho[cy, cx] < 0.8 and not on_muscle:
            return cy, cx
    # Practically unreachable (the breast always has free tissue); keep a valid fallback.
    return int(np.clip(shape.centre_y, 0, height - 1)), int(shape.depth * 0.6)


def _mass_patch(
    rng: np.random.Generator, radius: float | None = None, contrast: float | None = None
) -> tuple[np.ndarray, float]:
    """A soft-edged, lobulated blob, about a third of them spiculated, and its radius.

    ``radius`` and ``contrast`` replace the random ones (the draws are made all the same).
    """
    drawn = rng.uniform(15.0, 50.0)
    radius = drawn if radius is None else radius
    spiculated = rng.random() < 0.35
    half = int(np.ceil(radius * (3.2 if spiculated else 1.8)))
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1].astype(F32)
    dist = np.sqrt(xx * xx + yy * yy)
    angle = np.arctan2(yy, xx)
    # Lobulation: a few low-order harmonics modulate the boundary radius.
    boundary = np.full_like(dist, radius)
    for order in range(2, 6):
        amp = rng.uniform(0.0, 0.12) / order * 2
        boundary += F32(radius * amp) * np.cos(order * angle + F32(rng.uniform(0, 2 * np.pi)))
    blur = radius * rng.uniform(0.06, 0.3)  # circumscribed ... ill-defined margin
    body = 1.0 / (1.0 + np.exp(np.clip((dist - boundary) / F32(blur), -30, 30)))
    body *= 1.0 - 0.3 * np.clip(dist / boundary, 0, 1) ** 2  # denser centre
    drawn_contrast = rng.uniform(0.15, 0.35)
    patch = body * F32(drawn_contrast if contrast is None else contrast)
    if spiculated:
        patch += _spicules(rng, dist, radius, half)
    return patch.astype(F32), float(radius)


def _spicules(rng: np.random.Generator, dist: np.ndarray, radius: float, half: int) -> np.ndarray:
    """Thin lines radiating from the mass, fading with distance from the centre."""
    canvas = np.zeros_like(dist)
    for _ in range(int(rng.integers(8, 22))):
        theta = rng.uniform(0, 2 * np.pi)
        length = radius * rng.uniform(1.6, 3.0)
        end = (int(half + length * np.cos(theta)), int(half + length * np.sin(theta)))
        cv2.line(canvas, (half, half), end, float(rng.uniform(0.5, 1.0)), 1, cv2.LINE_AA)
    canvas = cv2.GaussianBlur(canvas, (0, 0), 0.7)
    fade = np.clip(1.0 - dist / F32(3.0 * radius), 0.0, 1.0)
    return canvas * fade * F32(rng.uniform(0.1, 0.2))


def _calcification_patch(rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """A cluster of tiny bright specks of varied size and shape, and the cluster's spread."""
    spread = rng.uniform(8.0, 30.0)
    half = int(np.ceil(spread * 2.5)) + 4
    # Draw at 4x sub-pixel precision (cv2 `shift`) so specks can be smaller than a pixel.
    subpixel_bits = 2
    scale = 1 << subpixel_bits
    canvas = np.zeros((2 * half + 1, 2 * half + 1), dtype=F32)
    for _ in range(int(rng.integers(5, 19))):
        offset = np.clip(rng.normal(0.0, spread, size=2), -2 * spread, 2 * spread)
        centre = (int((half + offset[0]) * scale), int((half + offset[1]) * scale))
        axis_a = rng.uniform(0.6, 2.2)
        axis_b = axis_a * rng.uniform(0.4, 1.0)
        axes = (max(1, int(axis_a * scale)), max(1, int(axis_b * scale)))
        brightness = float(rng.uniform(0.3, 0.7))
        cv2.ellipse(
            canvas,
            centre,
            axes,
            float(rng.uniform(0, 180)),
            0,
            360,
            brightness,
            -1,
            cv2.LINE_AA,
            subpixel_bits,
        )
    return cv2.GaussianBlur(canvas, (0, 0), 0.6), float(spread)


def _add_patch(image: np.ndarray, patch: np.ndarray, cy: int, cx: int) -> None:
    """Add ``patch`` centred at (cy, cx), clipped to the image bounds (in place)."""
    ph, pw = patch.shape
    top, left = cy - ph // 2, cx - pw // 2
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + ph, image.shape[0]), min(left + pw, image.shape[1])
    if y0 < y1 and x0 < x1:
        image[y0:y1, x0:x1] += patch[y0 - top : y1 - top, x0 - left : x1 - left]


def _draw_view_label(rng: np.random.Generator, image: np.ndarray, inside: np.ndarray) -> None:
    """Half the time burn a view marker into the background, as on digitised film.

    Present in both classes, so a classifier has to learn to ignore it.
    """
    if rng.random() < 0.5:
        return
    height, width = image.shape
    # OpenCV only renders text into 8-bit images.
    canvas = np.zeros((height, width), dtype=np.uint8)
    scale = width / 832 * rng.uniform(1.2, 2.5)
    origin = (int(width * rng.uniform(0.6, 0.85)), int(height * rng.uniform(0.08, 0.95)))
    text = str(rng.choice(VIEW_LABELS))
    thickness = int(rng.integers(2, 6))
    cv2.putText(canvas, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, 255, thickness, cv2.LINE_AA)
    canvas[inside] = 0
    np.maximum(image, canvas * F32(rng.uniform(0.5, 1.0) / 255.0), out=image)


def _acquisition(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Detector/film response: background fog, contrast, gamma and noise, clipped to [0, 1]."""
    height, width = image.shape
    fog = F32(rng.uniform(0.0, 0.04))
    gain = F32(rng.uniform(0.85, 1.1))
    gamma = F32(rng.uniform(0.7, 1.4))
    out = np.clip(image * gain + fog, 0.0, 1.0)
    np.power(out, gamma, out=out)
    # Correlated noise (generated at half resolution) plus a little white noise on top. Uniform
    # noise is used because numpy draws it several times faster than Gaussian noise.
    sigma = F32(rng.uniform(0.004, 0.02))
    correlated = _upscale(_white_noise(rng, (-(-height // 2), -(-width // 2))), height, width)
    correlated *= sigma
    out += correlated
    out += _white_noise(rng, (height, width)) * (sigma * F32(0.5))
    return np.clip(out, 0.0, 1.0, out=out)


def _white_noise(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Zero-mean, unit-variance uniform noise (cheaper than Gaussian; blurring makes it normal)."""
    noise = rng.random(shape, dtype=F32)
    noise -= F32(0.5)
    noise *= F32(np.sqrt(12.0))
    return noise


def _power_law_noise(
    rng: np.random.Generator,
    height: int,
    width: int,
    *,
    exponent: float,
    stretch_x: float = 1.0,
) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian noise with power spectrum ~ 1/f**exponent.

    Mammographic parenchyma has a power-law spectrum with an exponent near 3, which is why this
    looks more like breast tissue than blurred white noise does. ``stretch_x`` > 1 elongates
    structures horizontally.
    """
    fy = np.fft.fftfreq(height).astype(F32)[:, None]
    fx = np.fft.rfftfreq(width).astype(F32)[None, :] * F32(stretch_x)
    freq = np.sqrt(fx * fx + fy * fy)
    freq[0, 0] = 1.0  # avoid division by zero; the DC term is removed below
    amplitude = freq ** F32(-exponent / 2.0)
    amplitude[0, 0] = 0.0
    spectrum = rng.standard_normal(freq.shape) + 1j * rng.standard_normal(freq.shape)
    field = np.fft.irfft2(spectrum * amplitude, s=(height, width)).astype(F32)
    field -= field.mean()
    return field / F32(field.std() + 1e-12)


def _upscale(array: np.ndarray, height: int, width: int) -> np.ndarray:
    return cv2.resize(array, (width, height), interpolation=cv2.INTER_LINEAR)
