"""``edge hub bench``: the hub at a programme's scale, measured.

    fill      RESULTS demo results from BOXES boxes over DAYS days, written in bulk with
              their aggregates (the collector's own Tally), outcomes for a tenth
    ingest    INGEST more results published over MQTT to the broker of ``mqtt:`` and
              stored by a real collector (in this process): the sustained rate
    pages     every console page and API call SAMPLES times over HTTP (uvicorn in this
              process, a logged-in client): p50 and p95

The fill is not the measurement (it skips MQTT and per-message checks to save
time); the ingest and the pages are. Run it on an empty database.
"""

from __future__ import annotations

import random
import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, func, insert, select

from edge.hub.aggregates import Tally, add_counts, engine_label, score_bin
from edge.hub.database import utc_now as database_now
from edge.hub.demo import DemoStudy, demo_health, demo_outcome, demo_study
from edge.hub.messages import ResultRecord, parse_time
from edge.hub.outcomes import parse_outcome
from edge.hub.tables import devices, outcome_bins, outcome_history, outcomes, results

CHUNK = 5000


@dataclass(frozen=True)
class Plan:
    results: int = 1_000_000
    boxes: int = 200
    boxes_per_site: int = 4
    days: int = 60
    ingest: int = 20_000
    samples: int = 40
    seed: int = 18

    def box_names(self) -> list[tuple[str, str]]:
        return [(f"site-{i // self.boxes_per_site:03d}", f"box-{i % self.boxes_per_site + 1}")
                for i in range(self.boxes)]  # fmt: skip


@dataclass
class Report:
    filled: int = 0
    fill_s: float = 0.0
    outcomes: int = 0
    ingested: int = 0
    ingest_s: float = 0.0
    timings_ms: dict[str, list[float]] = field(default_factory=dict)

    def lines(self) -> list[str]:
        rate = self.ingested / self.ingest_s if self.ingest_s else 0.0
        out = [
            f"fill:   {self.filled} results in {self.fill_s:.0f} s (bulk, with aggregates), "
            f"{self.outcomes} outcomes",
            f"ingest: {self.ingested} results over MQTT in {self.ingest_s:.1f} s = "
            f"{rate:.0f} results/s sustained (publisher, broker, collector, database)",
            f"{'call':<44} {'p50 ms':>8} {'p95 ms':>8}",
        ]
        for name, values in self.timings_ms.items():
            out.append(f"{name:<44} {percentile(values, 50):8.1f} {percentile(values, 95):8.1f}")
        return out


def percentile(values: list[float], q: int) -> float:
    if len(values) < 2:
        return values[0] if values else 0.0
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


# -- fill -------------------------------------------------------------------------------------


def fill(engine: Engine, plan: Plan, report: Report, now: datetime) -> dict[str, int]:
    """Write the demo results, devices, health defects and outcomes; the boxes' last seq."""
    rng = random.Random(plan.seed)
    boxes = plan.box_names()
    per_box = plan.results // len(boxes)
    started = time.monotonic()
    last_seq: dict[str, int] = {}
    pending: list[DemoStudy] = []
    outcome_sums: dict[tuple[Any, ...], list[int]] = defaultdict(lambda: [0, 0])
    for index, (site, device) in enumerate(boxes):
        for seq, created in enumerate(_times(rng, now, plan.days, per_box), start=1):
            version = "2" if index % 2 and created > now - timedelta(days=plan.days // 2) else "1"
            pending.append(demo_study(rng, site, device, seq, created, version=version))
            if len(pending) >= CHUNK:
                _write_chunk(engine, pending, rng, now, outcome_sums, report)
                pending = []
        last_seq[f"{site}/{device}"] = per_box
    if pending:
        _write_chunk(engine, pending, rng, now, outcome_sums, report)
    _write_devices(engine, boxes, per_box, rng, now)
    names = ("day", "site", "engine", "bin", "suspicious")
    rows = [{**dict(zip(names, key, strict=True)), "positives": pos, "negatives": neg}
            for key, (pos, neg) in sorted(outcome_sums.items())]  # fmt: skip
    with engine.begin() as connection:
        add_counts(connection, outcome_bins, rows)
    report.fill_s = time.monotonic() - started
    return last_seq


def _times(rng: random.Random, now: datetime, days: int, count: int) -> list[datetime]:
    start = now - timedelta(days=days)
    step = timedelta(days=days) / max(count, 1)
    return [start + step * i + timedelta(seconds=rng.random() * 60) for i in range(count)]


def _write_chunk(
    engine: Engine,
    studies: list[DemoStudy],
    rng: random.Random,
    now: datetime,
    outcome_sums: dict[tuple[Any, ...], list[int]],
    report: Report,
) -> None:
    tally = Tally()
    rows, outcome_rows, history_rows = [], [], []
    for study in studies:
        record = _record(study.document)
        tally.result(record)
        rows.append(_row(record, now))
        if record.seq % 10 == 0:  # outcomes for a tenth
            outcome, history = _outcome_rows(study, record, rng, now, outcome_sums)
            outcome_rows.append(outcome)
            history_rows.append(history)
    with engine.begin() as connection:
        connection.execute(insert(results), rows)
        if outcome_rows:
            connection.execute(insert(outcomes), outcome_rows)
            connection.execute(insert(outcome_history), history_rows)
        tally.flush(connection)
    report.filled += len(rows)
    report.outcomes += len(outcome_rows)


def _record(document: dict[str, Any]) -> ResultRecord:
    model, study = document["model"], document["study"]
    created = parse_time(document["created_at"])
    assert created is not None
    return ResultRecord(
        id=document["id"], site=document["site"], device=document["device"],
        seq=document["seq"], study_uid=document["study_uid"], accession=document["accession"],
        score=study["score"], suspicious=study["suspicious"], threshold=study["threshold"],
        closed_by=document["closed_by"], model_name=model["name"],
        model_version=model["version"], model_sha256=model["sha256"],
        model_backend=model["backend"], timings_ms=document["timings_ms"],
        created_at=created, document=document,
    )  # fmt: skip


def _row(record: ResultRecord, now: datetime) -> dict[str, Any]:
    return {
        "id": record.id, "site": record.site, "device": record.device, "epoch": 1,
        "seq": record.seq, "study_uid": record.study_uid, "accession": record.accession,
        "score": record.score, "suspicious": record.suspicious, "threshold": record.threshold,
        "closed_by": record.closed_by, "model_name": record.model_name,
        "model_version": record.model_version, "model_sha256": record.model_sha256,
        "model_backend": record.model_backend, "timings_ms": record.timings_ms,
        "document": record.document, "created_at": record.created_at, "received_at": now,
        "deliveries": 1, "last_delivery_at": now,
    }  # fmt: skip


def _outcome_rows(
    study: DemoStudy,
    record: ResultRecord,
    rng: random.Random,
    now: datetime,
    sums: dict[tuple[Any, ...], list[int]],
) -> tuple[dict[str, Any], dict[str, Any]]:
    raw = demo_outcome(study, rng, record.created_at + timedelta(days=3))
    outcome = parse_outcome(raw, 0)
    engine = engine_label(record.model_name, record.model_version)
    key = (record.created_at.date(), record.site, engine, score_bin(record.score),
           record.suspicious)  # fmt: skip
    if outcome.label != "pending":
        sums[key][0 if outcome.label == "positive" else 1] += 1
    row = {"study_uid": record.study_uid, "result_id": record.id, "site": record.site,
           "engine": engine, "day": key[0], "bin": key[3], "suspicious": record.suspicious,
           "decision": outcome.decision, "birads": outcome.birads,
           "pathology": outcome.pathology, "read_at": outcome.read_at, "label": outcome.label,
           "recorded_at": now, "recorded_by": "bench"}  # fmt: skip
    history = {"study_uid": record.study_uid, "document": raw, "read_at": outcome.read_at,
               "effect": "new", "recorded_at": now, "recorded_by": "bench"}  # fmt: skip
    return row, history


def _write_devices(
    engine: Engine, boxes: list[tuple[str, str]], per_box: int, rng: random.Random, now: datetime
) -> None:
    tally = Tally()
    rows = []
    for site, device in boxes:
        health = demo_health(site, device, now, per_box * 4, rng)
        tally.health(site, device, None, health, now)
        rows.append({"site": site, "device": device, "first_seen": now, "status": "online",
                     "status_since": now, "health": health, "health_at": now,
                     "health_received_at": now, "epoch": 1, "max_seq": per_box,
                     "confirmed_seq": per_box,
                     "last_result_at": now})  # fmt: skip
    with engine.begin() as connection:
        connection.execute(insert(devices), rows)
        tally.flush(connection)


def count_results(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(results)).scalar_one())


# -- timing the pages -----------------------------------------------------------------------------


def time_calls(calls: dict[str, Callable[[], Any]], samples: int, report: Report) -> None:
    """Each call ``samples`` times, round-robin (so that no call runs only on a warm cache)."""
    for name in calls:
        report.timings_ms[name] = []
    for _ in range(samples):
        for name, call in calls.items():
            started = time.perf_counter()
            call()
            report.timings_ms[name].append((time.perf_counter() - started) * 1000)


def utc_now() -> datetime:
    """The database's now (:func:`edge.hub.database.utc_now`) to the whole second."""
    return database_now().replace(microsecond=0)


def days_ago(now: datetime, days: int) -> date:
    return (now - timedelta(days=days)).date()
