"""Query answers as a readable table or as JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime, timezone
from typing import Any

from edge.hub.compare import Accuracy, Comparison, Interval
from edge.hub.queries import DeviceRow, Gap, ResultRow

MISSING = "-"


def time_text(value: datetime | None) -> str:
    """A stored (naive UTC) time as RFC 3339 with ``Z``; ``-`` for none."""
    if value is None:
        return MISSING
    return value.replace(tzinfo=timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell, one header line, two spaces between."""
    widths = [len(header) for header in headers]
    for row in rows:
        widths = [max(width, len(cell)) for width, cell in zip(widths, row, strict=True)]
    lines = [headers, *rows]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def devices_table(rows: Sequence[DeviceRow]) -> str:
    headers = ("SITE", "DEVICE", "STATUS", "SINCE", "ENGINE", "LAST RESULT", "OUTBOX", "GPU C",
               "MISSING")  # fmt: skip
    return table(
        headers,
        [
            (
                row.site,
                row.device,
                row.status or "unknown",
                time_text(row.since),
                row.engine_version or MISSING,
                time_text(row.last_result),
                MISSING if row.outbox is None else str(row.outbox),
                MISSING if row.gpu_temperature_c is None else f"{row.gpu_temperature_c:.0f}",
                str(row.missing),
            )
            for row in rows
        ],
    )


def results_table(rows: Sequence[ResultRow]) -> str:
    headers = ("CREATED", "SITE", "DEVICE", "SEQ", "ACCESSION", "SCORE", "SUSPICIOUS", "MODEL",
               "STUDY UID")  # fmt: skip
    return table(
        headers,
        [
            (
                time_text(row.created_at),
                row.site,
                row.device,
                str(row.seq),
                row.accession or MISSING,
                f"{row.score:.3f}",
                "yes" if row.suspicious else "no",
                row.model,
                row.study_uid,
            )
            for row in rows
        ],
    )


def gaps_table(rows: Sequence[Gap]) -> str:
    if not rows:
        return "no seq missing"
    headers = ("SITE", "DEVICE", "EPOCH", "MISSING SEQ", "COUNT", "OPEN SINCE", "MISSING")
    return table(
        headers,
        [
            (
                gap.site,
                gap.device,
                str(gap.epoch),
                str(gap.first) if gap.first == gap.last else f"{gap.first}..{gap.last}",
                str(gap.count),
                time_text(gap.since),
                "companion" if gap.what == "shadow" else "result",
            )
            for gap in rows
        ],
    )


def as_json(rows: Sequence[DeviceRow | ResultRow | Gap | Comparison]) -> str:
    """A JSON array of the rows, times as RFC 3339 UTC."""
    documents = []
    for row in rows:
        document: dict[str, Any] = asdict(row)
        if isinstance(row, Gap):
            document["count"] = row.count
        for key, value in document.items():
            if isinstance(value, datetime):
                document[key] = time_text(value)
        documents.append(document)
    return json.dumps(documents, indent=1)


def comparison_text(c: Comparison) -> str:
    """``edge hub compare``: the two engines on the studies both scored, one line each."""
    lines = [
        f"site {c.site}: engine {c.engine} vs {c.other}, on {c.studies} studies scored by both"
        f" ({c.partial} left out: shadow skipped some images)",
        f"suspicious calls: both {c.both}, {c.engine} only {c.engine_only},"
        f" {c.other} only {c.other_only}, neither {c.neither}",
        f"agreement {_percent(c.agreement)}, Cohen's kappa {_number(c.kappa)}",
        f"suspicious rate {c.engine} {_percent(c.suspicious_rate)},"
        f" {c.other} {_percent(c.other_suspicious_rate)}"
        f" (change {_number(c.rate_change_pp, '{:+.1f} pp')})",
        f"score correlation: Pearson {_number(c.pearson)}, Spearman {_number(c.spearman)}",
    ]
    if c.accuracy is None or c.other_accuracy is None:
        lines.append("outcomes: none known (the hub's outcomes, or --outcomes FILE.csv)")
        return "\n".join(lines)
    lines.append(f"outcomes known for {c.with_outcome} studies, {c.cancers} cancers:")
    lines += [_accuracy_line(c.engine, c.accuracy), _accuracy_line(c.other, c.other_accuracy)]
    return "\n".join(lines)


def _accuracy_line(name: str, a: Accuracy) -> str:
    return (
        f"  {name}: sensitivity {_interval(a.sensitivity)}, specificity "
        f"{_interval(a.specificity)}, AUC {_interval(a.auc)}"
    )


def _interval(value: Interval | None) -> str:
    if value is None:
        return MISSING
    return f"{value.value:.3f} (95% CI {value.low:.3f}-{value.high:.3f})"


def _percent(value: float | None) -> str:
    return MISSING if value is None else f"{100 * value:.1f}%"


def _number(value: float | None, form: str = "{:.3f}") -> str:
    return MISSING if value is None else form.format(value)
