"""The stage breakdown chart (PNG). matplotlib is optional: ``pip install 'edge[bench]'``."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from edge.tools.bench.report import STAGES

COLOURS = {
    "detect": "#9ecae1",
    "header": "#6baed6",
    "decode": "#fd8d3c",
    "preprocess": "#fdd0a2",
    "infer": "#74c476",
    "assemble": "#bcbddc",
    "publish": "#9e9ac8",
    "other": "#d9d9d9",
}


def available() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def write_chart(doc: dict[str, Any], path: Path) -> None:
    """One row per encoding: where the time goes (left), against the baseline (right).

    Each row has its own scale: JPEG 2000 at full resolution takes seconds where the
    others take tens of milliseconds, and one scale would hide them.
    """
    import matplotlib

    matplotlib.use("Agg")  # no display on a server
    import matplotlib.pyplot as plt

    encodings = list(doc["by_encoding"].values())
    figure, axes = plt.subplots(
        len(encodings),
        2,
        figsize=(12, 0.6 + 1.1 * len(encodings)),
        gridspec_kw={"width_ratios": [3, 2]},
        squeeze=False,
    )
    publish = float(doc["stages"]["publish"]["p50_ms"])
    for row, values in enumerate(encodings):
        _breakdown(axes[row][0], values, publish)
        _against_baseline(axes[row][1], values)
    axes[0][0].set_title(
        "where the time goes, p50 ms: last view closed -> result at hub", fontsize=9
    )
    axes[0][1].set_title("end to end, p50 ms", fontsize=9)
    handles = [
        *axes[0][0].get_legend_handles_labels()[0],
        *axes[0][1].get_legend_handles_labels()[0],
    ]
    labels = [
        *axes[0][0].get_legend_handles_labels()[1],
        *axes[0][1].get_legend_handles_labels()[1],
    ]
    figure.legend(handles, labels, loc="lower center", ncol=6, fontsize=7, frameon=False)
    machine = doc["machine"]
    figure.suptitle(
        f"edge bench {doc['created_at'][:10]}: {machine['cpu_count']} cores, "
        f"{machine['backend']}, load average {machine['load_average']['start'][0]:.1f}"
        f"{' (quick run)' if doc['quick'] else ''}",
        fontsize=10,
    )
    figure.tight_layout(rect=(0, 0.08, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _breakdown(axes: Any, values: dict[str, Any], publish: float) -> None:
    """A stacked bar of the last view's stages, then what is left of end to end.

    The header is read beside the decode (a worker starts on the file at once), so
    it is drawn over the decode's start, not in the sum.
    """
    start = 0.0
    known = 0.0
    for stage in STAGES:
        width = publish if stage == "publish" else float(values["stages"][stage]["p50_ms"])
        if stage == "header":
            continue
        axes.barh([0], [width], left=start, color=COLOURS[stage], label=stage)
        if stage == "decode":
            header = float(values["stages"]["header"]["p50_ms"])
            axes.barh([0.2], [header], left=start, height=0.3, color=COLOURS["header"],
                      edgecolor="white", label="header (beside the decode)")  # fmt: skip
        start += width
        known += width
    total = float(values["e2e"]["p50_ms"])
    other = max(0.0, total - known)
    axes.barh([0], [other], left=start, color=COLOURS["other"], label="waiting, hand-offs")
    axes.text(start + other, 0, f" {total:.0f}", va="center", fontsize=8)
    axes.set_xlim(0, max(start + other, 1.0) * 1.15)
    axes.set_yticks([0], [values["name"]])
    axes.tick_params(labelsize=8)


def _against_baseline(axes: Any, values: dict[str, Any]) -> None:
    series = (
        ("edge, views 0.5 s apart", "e2e", "#3182bd"),
        ("edge, all at once", "e2e_burst", "#9ecae1"),
        ("naive script", "baseline_e2e", "#e6550d"),
    )
    widths = [float(values[key]["p50_ms"]) for _, key, _ in series]
    for row, ((label, _, colour), width) in enumerate(zip(series, widths, strict=True)):
        axes.barh([row], [width], color=colour, label=label)
        axes.text(width, row, f" {width:.0f}", va="center", fontsize=7)
    axes.set_xlim(0, max(max(widths), 1.0) * 1.2)
    axes.set_yticks([])
    axes.invert_yaxis()
    axes.tick_params(labelsize=8)
