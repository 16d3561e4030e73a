"""Demo data for the console: valid ``edge.result/1`` documents, their outcomes, box health.

Used by the browser tests (the screenshots in docs/ come from it) and by
``edge hub bench``. Each study's truth is drawn first (malignant in
``prevalence`` of them) and its scores after it, so the AUC is that of a
plausible engine; nothing here is clinical. No patient identifier is made:
a study is named by a made-up UID and accession number only.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

VIEWS = (("L", "CC"), ("L", "MLO"), ("R", "CC"), ("R", "MLO"))
UID_ROOT = "1.2.826.0.1.3680043.8.498.9"
THRESHOLD = 0.5
DEMO_SHA = "5e" * 32


@dataclass(frozen=True)
class DemoStudy:
    document: dict[str, Any]
    malignant: bool


def demo_study(
    rng: random.Random,
    site: str,
    device: str,
    seq: int,
    created_at: datetime,
    *,
    version: str = "1",
    prevalence: float = 0.1,
) -> DemoStudy:
    """One study's result as a box publishes it, with its truth beside it."""
    malignant = rng.random() < prevalence
    digest = hashlib.sha256(f"{site}/{device}/{seq}/{version}".encode()).hexdigest()
    study_uid = f"{UID_ROOT}.{int(digest[:15], 16)}"
    sick_side = rng.choice("LR")
    views = VIEWS if rng.random() > 0.05 else VIEWS[:3]
    images: list[dict[str, Any]] = [
        {"sop_uid": f"{study_uid}.{index}", "laterality": side, "view": view, "screening": True,
         "score": round(_score(rng, malignant and side == sick_side), 4)}
        for index, (side, view) in enumerate(views, start=1)
    ]  # fmt: skip
    sides: dict[str, float] = {}
    for image in images:
        sides[image["laterality"]] = max(sides.get(image["laterality"], 0.0), image["score"])
    breasts = {side: {"score": s, "suspicious": s >= THRESHOLD} for side, s in sides.items()}
    score = max(sides.values())
    document = {
        "schema": "edge.result/1", "id": digest[:32], "seq": seq, "site": site,
        "device": device, "study_uid": study_uid, "accession": _accession(digest),
        "model": {"name": "demo", "version": version, "sha256": DEMO_SHA, "backend": "onnxruntime"},
        "study": {"score": score, "suspicious": score >= THRESHOLD, "threshold": THRESHOLD},
        "breasts": breasts, "images": images,
        "missing_views": [f"{s}{v}" for s, v in VIEWS if (s, v) not in views],
        "closed_by": "complete" if len(views) == 4 else "quiet",
        "timings_ms": _timings(rng),
        "created_at": created_at.strftime("%Y-%m-%dT%H:%M:%S") + "Z",
    }  # fmt: skip
    return DemoStudy(document, malignant)


def _accession(digest: str) -> str:
    return f"D{int(digest[15:27], 16) % 10**9:09d}"


def _score(rng: random.Random, sick: bool) -> float:
    return rng.betavariate(5, 2) if sick else rng.betavariate(1.3, 6)


def _timings(rng: random.Random) -> dict[str, float]:
    decode, infer = rng.lognormvariate(4.2, 0.3), rng.lognormvariate(3.0, 0.3)
    total = decode + infer + rng.lognormvariate(4.5, 0.4)
    return {"header": 1.2, "decode": round(decode, 1), "preprocess": 9.5,
            "infer": round(infer, 1), "assemble": 0.4, "total": round(total, 1)}  # fmt: skip


def demo_outcome(study: DemoStudy, rng: random.Random, read_at: datetime) -> dict[str, Any]:
    """The reading (and pathology where recalled) a radiologist would send for ``study``."""
    suspicious = study.document["study"]["suspicious"]
    recall = study.malignant or (suspicious and rng.random() < 0.5) or rng.random() < 0.03
    pathology = ("malignant" if study.malignant else "benign") if recall else None
    birads = (5 if study.malignant else 3) if recall else rng.choice((1, 2))
    decision = "recall" if recall else "no_recall"
    return {"study_uid": study.document["study_uid"], "decision": decision, "birads": birads,
            "pathology": pathology,
            "read_at": read_at.strftime("%Y-%m-%dT%H:%M:%S") + "Z"}  # fmt: skip


def demo_health(
    site: str, device: str, at: datetime, received: int, rng: random.Random, *, version: str = "1"
) -> dict[str, Any]:
    """A box's ``edge.health/1`` with counters growing as it receives files."""
    quarantined = {"not_dicom": received // 60, "truncated": received // 200}
    return {
        "schema": "edge.health/1", "site": site, "device": device, "version": "0.1.0",
        "at": at.strftime("%Y-%m-%dT%H:%M:%S") + "Z", "uptime_s": 86400,
        "engine": {"name": "demo", "version": version, "sha256": DEMO_SHA,
                   "backend": "onnxruntime"},
        "gpu": {"source": "nvml", "devices": [{"index": 0, "temperature_c": rng.randint(48, 79)}]},
        "queues": {"outbox": 0, "journal_backlog": 0},
        "latency_ms": {"total": {"p50": 160.0, "p95": round(rng.uniform(200, 420), 1),
                                 "p99": 500.0}},
        "counters": {"received": received, "quarantined_by_reason": quarantined,
                     "skipped_by_reason": {"qc_image": received // 90}},
        "alarms": [],
    }  # fmt: skip


def spread(start: datetime, end: datetime, count: int, rng: random.Random) -> list[datetime]:
    """``count`` times between ``start`` and ``end``, in order."""
    span = (end - start).total_seconds()
    return sorted(start + timedelta(seconds=rng.random() * span) for _ in range(count))
