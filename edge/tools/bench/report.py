"""The bench's figures: percentiles, the JSON document (``edge.bench/1``) and the table.

``docs/bench.md`` defines each figure; the names here are the JSON's keys.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge.tools.bench.corpus import ENCODINGS
from edge.tools.bench.isolated import FileCost, LevelEffect
from edge.tools.bench.phases import BurstRun, StudySample
from edge.tools.bench.repair import RepairFigures

SCHEMA = "edge.bench/1"
#: stage timings the daemon's result message carries, in pipeline order
MESSAGE_STAGES = ("detect", "header", "decode", "preprocess", "infer", "assemble")
#: every stage in the table and the chart: the message's, then publish (from health)
STAGES = (*MESSAGE_STAGES, "publish")


def summary(values: Iterable[float]) -> dict[str, float | int]:
    """p50, p95 and p99 in milliseconds (linear interpolation), and the sample count."""
    data = np.asarray(list(values), dtype=np.float64)
    if data.size == 0:
        return {"p50_ms": float("nan"), "p95_ms": float("nan"), "p99_ms": float("nan"), "n": 0}
    p50, p95, p99 = np.percentile(data, [50, 95, 99])
    return {
        "p50_ms": round(float(p50), 1),
        "p95_ms": round(float(p95), 1),
        "p99_ms": round(float(p99), 1),
        "n": int(data.size),
    }


@dataclass(frozen=True)
class Measured:
    """Everything the phases measured, before it is summarised."""

    isolated: dict[str, list[FileCost]]
    #: per encoding, the cost of each case's last view (the one a study waits for)
    isolated_last: dict[str, list[FileCost]]
    infer_images_per_s: float
    e2e: list[StudySample]
    e2e_burst: list[StudySample]
    publish_ms: dict[str, float]
    burst: BurstRun
    idle_cpu_percent: float
    idle_s: float
    #: resident memory (MB): ``warm``, ``after_soak`` and ``peak`` during the soak
    rss_mb: dict[str, float]
    soak_images: int
    baseline: list[StudySample]
    baseline_poll_s: float
    cores: int
    #: the C-STORE phase's section (:func:`edge.tools.bench.cstore.section`)
    cstore: dict[str, Any] | None = None
    #: None when the hub extra is not installed (no collector to confirm)
    repair: RepairFigures | None = None
    #: per JPEG 2000 or HTJ2K encoding, the chosen resolution level's effect on the score
    level_effect: dict[str, LevelEffect] | None = None


def build(measured: Measured, header: dict[str, Any]) -> dict[str, Any]:
    """The ``edge.bench/1`` document: ``header`` (machine, engine, run) plus the figures."""
    m = measured
    encodings = list(m.isolated)
    last_compute = {e: statistics.median(c.compute for c in m.isolated_last[e]) for e in encodings}
    ratios = [s.e2e_ms / _paired(s, last_compute) for s in m.e2e]
    stages = {name: summary(_stage(m.e2e, name)) for name in MESSAGE_STAGES}
    stages["publish"] = {
        f"{key}_ms": float(m.publish_ms.get(key, float("nan"))) for key in ("p50", "p95", "p99")
    }
    stages["total"] = summary(_stage(m.e2e, "total"))
    baseline_e2e = summary(s.e2e_ms for s in m.baseline)
    document = {
        "schema": SCHEMA,
        **header,
        "stages": stages,
        "e2e": summary(s.e2e_ms for s in m.e2e),
        "e2e_burst": summary(s.e2e_ms for s in m.e2e_burst),
        "overhead_ratio": round(statistics.median(ratios), 2),
        "overhead_ms": _overhead_ms(m.e2e, last_compute),
        "burst": _burst(m),
        "idle_cpu_percent": round(m.idle_cpu_percent, 2),
        "idle_s": m.idle_s,
        "rss_mb": {
            **{key: round(value, 1) for key, value in m.rss_mb.items()},
            "growth_percent": round(100 * (m.rss_mb["after_soak"] / m.rss_mb["warm"] - 1), 1),
            "soak_images": m.soak_images,
        },
        "baseline": {"e2e": baseline_e2e, "poll_s": m.baseline_poll_s},
        "by_encoding": {e: _encoding(m, e, last_compute) for e in encodings},
    }
    if m.repair is not None:
        document["repair"] = {
            "to_hub": summary(m.repair.to_hub_ms),
            "confirmed_after": summary(m.repair.confirmed_after_ms),
            "gap_to_repair": summary(m.repair.gap_to_repair_ms),
            "resend_after_s": m.repair.resend_after_s,
            "encoding": m.repair.encoding,
        }
    document["targets"] = targets(document)
    if m.cstore is not None:
        document["cstore"] = m.cstore
        document["targets"]["cstore_e2e_p50_ms"] = m.cstore["target"]
    return document


def _overhead_ms(samples: list[StudySample], last_compute: dict[str, float]) -> float:
    """Median milliseconds the daemon adds to a study: its end to end less its paired compute."""
    return round(statistics.median(s.e2e_ms - _paired(s, last_compute) for s in samples), 1)


def _paired(sample: StudySample, last_compute: dict[str, float]) -> float:
    """The study's unavoidable work: measured right after it, else from the isolated phase."""
    if sample.isolated_ms is not None:
        return sample.isolated_ms
    return last_compute[sample.encoding]


def _encoding(m: Measured, encoding: str, last_compute: dict[str, float]) -> dict[str, Any]:
    e2e = [s for s in m.e2e if s.encoding == encoding]
    edge = summary(s.e2e_ms for s in e2e)
    paired = statistics.median(_paired(s, last_compute) for s in e2e)
    base = summary(s.e2e_ms for s in m.baseline if s.encoding == encoding)
    costs = m.isolated[encoding]
    return {
        "name": ENCODINGS[encoding],
        "stages": {name: summary(_stage(e2e, name)) for name in (*MESSAGE_STAGES, "total")},
        "e2e": edge,
        "e2e_burst": summary(s.e2e_ms for s in m.e2e_burst if s.encoding == encoding),
        "isolated_ms": {
            name: round(statistics.mean(getattr(c, name) for c in costs), 1)
            for name in ("header", "decode", "preprocess", "infer")
        },
        "isolated_last_view_compute_ms": round(last_compute[encoding], 1),
        "paired_compute_ms": round(paired, 1),
        "overhead_ratio": round(float(edge["p50_ms"]) / paired, 2),
        "overhead_ms": _overhead_ms(e2e, last_compute),
        "baseline_e2e": base,
        "speedup_vs_baseline": round(float(base["p50_ms"]) / float(edge["p50_ms"]), 2),
        **(
            {"level_effect": m.level_effect[encoding].as_json()}
            if m.level_effect and encoding in m.level_effect
            else {}
        ),
    }


def _burst(m: Measured) -> dict[str, Any]:
    run = m.burst
    # the burst's mix: studies take the encodings in turn
    mix = [run.encodings[n % len(run.encodings)] for n in range(run.studies)]
    # CPU time, not wall time: openjpeg decodes one image on every core, so its wall
    # time would let the ideal count the same cores twice.
    per_image_ms = statistics.mean(
        statistics.mean(c.cpu_ms for c in m.isolated[encoding]) for encoding in mix
    )
    cpu_bound = m.cores / (per_image_ms / 1000)
    ideal = min(cpu_bound, m.infer_images_per_s)
    return {
        "studies": run.studies,
        "images": run.images,
        "encodings": list(run.encodings),
        "seconds": round(run.seconds, 2),
        "images_per_s": round(run.images_per_s, 2),
        "ideal_images_per_s": round(ideal, 2),
        "efficiency": round(run.images_per_s / ideal, 2),
        "daemon_cores_busy": round(run.daemon_cores_busy, 2),
        "ideal": {
            "cores": m.cores,
            "header_decode_preprocess_cpu_ms": round(per_image_ms, 1),
            "cpu_bound_images_per_s": round(cpu_bound, 2),
            "infer_images_per_s": round(m.infer_images_per_s, 2),
        },
    }


def _stage(samples: list[StudySample], name: str) -> list[float]:
    return [s.timings_ms[name] for s in samples if name in s.timings_ms]


#: (key, what, limit): a figure at or below its limit meets the target, except the
#: two that must reach it (``AT_LEAST``)
TARGETS: tuple[tuple[str, str, float], ...] = (
    ("e2e_p50_ms", "study result p50 after the last view (0.5 s apart)", 300.0),
    ("e2e_p95_ms", "study result p95 after the last view (0.5 s apart)", 500.0),
    ("e2e_burst_p50_ms", "study result p50 when all four views arrive at once", 600.0),
    ("overhead_ratio", "end-to-end p50 / isolated decode+preprocess+infer", 1.10),
    ("burst_efficiency", "burst throughput / ideal", 0.8),
    ("idle_cpu_percent", "idle CPU of the daemon, % of one core", 1.0),
    ("rss_growth_percent", "resident memory growth over the soak", 5.0),
    ("jpeg2000_speedup", "end to end vs the naive baseline, JPEG 2000", 5.0),
)


AT_LEAST = frozenset({"burst_efficiency", "jpeg2000_speedup"})


def targets(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each target of the issue with this run's figure and whether it is met."""
    by_encoding = document["by_encoding"]
    figures: dict[str, float | None] = {
        "e2e_p50_ms": max(v["e2e"]["p50_ms"] for v in by_encoding.values()),
        "e2e_p95_ms": max(v["e2e"]["p95_ms"] for v in by_encoding.values()),
        "e2e_burst_p50_ms": max(v["e2e_burst"]["p50_ms"] for v in by_encoding.values()),
        "overhead_ratio": document["overhead_ratio"],
        "burst_efficiency": document["burst"]["efficiency"],
        "idle_cpu_percent": document["idle_cpu_percent"],
        "rss_growth_percent": document["rss_mb"]["growth_percent"],
        "jpeg2000_speedup": by_encoding.get("jpeg2000", {}).get("speedup_vs_baseline"),
    }
    result = {}
    for key, what, limit in TARGETS:
        figure = figures[key]
        at_least = key in AT_LEAST
        met = None if figure is None else (figure >= limit if at_least else figure <= limit)
        result[key] = {
            "what": what,
            "target": f"{'>=' if at_least else '<='} {limit:g}",
            "figure": figure,
            "met": met,
        }
    return result
