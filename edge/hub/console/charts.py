"""Charts drawn on the server as SVG: no script, no library, nothing fetched.

Colours and lines are SVG attributes (the console's Content-Security-Policy
forbids inline styles); each chart carries a <title> for screen readers.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

WIDTH, HEIGHT, PAD = 640, 180, 32


def line_chart(
    title: str,
    labels: Sequence[str],
    series: Sequence[tuple[str, str, Sequence[float | None]]],
    *,
    y_max: float | None = None,
    y_format: str = "{:.0f}",
) -> str:
    """Lines over ``labels``: each series is (name, colour, values; None is a break)."""
    values = [v for _, _, points in series for v in points if v is not None]
    top = y_max if y_max is not None else max(values, default=1.0) or 1.0
    parts = [_frame(title, top, y_format)]
    for name, colour, points in series:
        for run in _runs(points, len(labels), top):
            parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" '
                         f'points="{run}"><title>{escape(name)}</title></polyline>')  # fmt: skip
    parts.append(_x_labels(labels))
    parts.append(_legend(series))
    return _svg(title, "".join(parts))


def bar_chart(
    title: str,
    groups: Sequence[tuple[str, str, Sequence[float]]],
    labels: Sequence[str],
) -> str:
    """Side-by-side bars per label: each group is (name, colour, values)."""
    top = max((v for _, _, values in groups for v in values), default=1.0) or 1.0
    slot = (WIDTH - 2 * PAD) / max(len(labels), 1)
    width = slot * 0.8 / max(len(groups), 1)
    parts = [_frame(title, top, "{:.2f}")]
    for g, (name, colour, values) in enumerate(groups):
        for i, value in enumerate(values):
            height = (HEIGHT - 2 * PAD) * value / top
            x = PAD + i * slot + slot * 0.1 + g * width
            parts.append(f'<rect x="{x:.1f}" y="{HEIGHT - PAD - height:.1f}" width="{width:.1f}" '
                         f'height="{height:.1f}" fill="{colour}"><title>{escape(name)} '
                         f'{escape(labels[i])}: {value:.3f}</title></rect>')  # fmt: skip
    parts.append(_x_labels(labels))
    parts.append(_legend(groups))
    return _svg(title, "".join(parts))


def _svg(title: str, body: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" role="img" class="chart" '
            f'viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}">'
            f"<title>{escape(title)}</title>{body}</svg>")  # fmt: skip


def _frame(title: str, top: float, y_format: str) -> str:
    bottom = HEIGHT - PAD
    return (f'<text x="{PAD}" y="14" font-size="12" fill="#222">{escape(title)}</text>'
            f'<line x1="{PAD}" y1="{bottom}" x2="{WIDTH - PAD}" y2="{bottom}" stroke="#888"/>'
            f'<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{bottom}" stroke="#888"/>'
            f'<text x="2" y="{PAD + 4}" font-size="10" fill="#555">'
            f"{escape(y_format.format(top))}</text>"
            f'<text x="2" y="{bottom}" font-size="10" fill="#555">0</text>')  # fmt: skip


def _runs(points: Sequence[float | None], count: int, top: float) -> list[str]:
    """The polyline point lists of the unbroken runs of ``points``."""
    step = (WIDTH - 2 * PAD) / max(count - 1, 1)
    runs: list[list[str]] = [[]]
    for i, value in enumerate(points):
        if value is None:
            runs.append([])
            continue
        y = HEIGHT - PAD - (HEIGHT - 2 * PAD) * min(value / top, 1.0)
        runs[-1].append(f"{PAD + i * step:.1f},{y:.1f}")
    return [" ".join(run) if len(run) > 1 else f"{run[0]} {run[0]}" for run in runs if run]


def _x_labels(labels: Sequence[str]) -> str:
    if not labels:
        return ""
    picks = {0, len(labels) - 1, len(labels) // 2}
    step = (WIDTH - 2 * PAD) / max(len(labels) - 1, 1)
    return "".join(
        f'<text x="{PAD + i * step:.1f}" y="{HEIGHT - PAD + 14}" font-size="10" fill="#555" '
        f'text-anchor="middle">{escape(labels[i])}</text>'
        for i in sorted(picks)
    )


def _legend(series: Sequence[tuple[str, str, object]]) -> str:
    return "".join(
        f'<rect x="{WIDTH - PAD - 140}" y="{8 + 14 * i}" width="10" height="10" fill="{colour}"/>'
        f'<text x="{WIDTH - PAD - 125}" y="{17 + 14 * i}" font-size="11" fill="#222">'
        f"{escape(name)}</text>"
        for i, (name, colour, _) in enumerate(series)
    )


def scatter_chart(
    title: str,
    axes: tuple[str, str],
    points: Sequence[tuple[float, float, bool]],
) -> str:
    """Paired scores in the unit square: (x, y, agree); a disagreement is drawn red.
    The diagonal is where both engines give the same score."""
    side = HEIGHT * 2
    inner = side - 2 * PAD
    parts = [f'<line x1="{PAD}" y1="{side - PAD}" x2="{side - PAD}" y2="{PAD}" '
             f'stroke="#ccc"/>']  # fmt: skip
    for x, y, agree in points:
        colour = "#1f5fa8" if agree else "#c0392b"
        parts.append(f'<circle cx="{PAD + inner * _unit(x):.1f}" '
                     f'cy="{side - PAD - inner * _unit(y):.1f}" r="2.5" fill="{colour}" '
                     f'fill-opacity="0.6"/>')  # fmt: skip
    parts.append(_square_frame(title, axes, side))
    return (f'<svg xmlns="http://www.w3.org/2000/svg" role="img" class="chart" '
            f'viewBox="0 0 {side} {side}" width="{side}" height="{side}">'
            f"<title>{escape(title)}</title>{''.join(parts)}</svg>")  # fmt: skip


def _unit(value: float) -> float:
    return min(max(value, 0.0), 1.0)


def _square_frame(title: str, axes: tuple[str, str], side: int) -> str:
    bottom = side - PAD
    return (f'<text x="{PAD}" y="14" font-size="12" fill="#222">{escape(title)}</text>'
            f'<line x1="{PAD}" y1="{bottom}" x2="{bottom}" y2="{bottom}" stroke="#888"/>'
            f'<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{bottom}" stroke="#888"/>'
            f'<text x="{side // 2}" y="{bottom + 16}" font-size="10" fill="#555" '
            f'text-anchor="middle">{escape(axes[0])}</text>'
            f'<text x="{bottom}" y="{bottom + 16}" font-size="10" fill="#555">1</text>'
            f'<text x="2" y="{PAD + 4}" font-size="10" fill="#555">1</text>'
            f'<text x="{PAD + 4}" y="{PAD + 10}" font-size="10" fill="#555">'
            f"{escape(axes[1])}</text>"
            f'<text x="2" y="{bottom}" font-size="10" fill="#555">0</text>')  # fmt: skip
