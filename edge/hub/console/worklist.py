"""The worklist and the study page: results as the reading room triages them.

A page of the worklist reads one index range of ``results`` (created_at, or
site and created_at, or score) and at most ``limit`` rows: never all results.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Connection, Select, select

from edge.hub.tables import outcome_history, outcomes, result_days, results

Sort = Literal["newest", "score"]
PAGE = 50


@dataclass(frozen=True)
class Filters:
    site: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    suspicious: bool = False
    engine: str | None = None
    sort: Sort = "newest"
    limit: int = PAGE
    offset: int = 0


@dataclass(frozen=True)
class WorkItem:
    id: str
    site: str
    device: str
    study_uid: str
    accession: str
    created_at: datetime
    score: float
    suspicious: bool
    breasts: dict[str, float]
    views: tuple[str, ...]
    missing_views: tuple[str, ...]
    engine: str


def worklist(connection: Connection, filters: Filters) -> list[WorkItem]:
    query = _filtered(select(results), filters)
    if filters.sort == "score":
        query = query.order_by(results.c.score.desc(), results.c.created_at.desc())
    else:
        query = query.order_by(results.c.created_at.desc(), results.c.id)
    query = query.limit(filters.limit).offset(filters.offset)
    return [_item(row) for row in connection.execute(query).mappings()]


def _filtered(query: Select[Any], filters: Filters) -> Select[Any]:
    if filters.site:
        query = query.where(results.c.site == filters.site)
    if filters.since:
        query = query.where(results.c.created_at >= filters.since)
    if filters.until:
        query = query.where(results.c.created_at < filters.until)
    if filters.suspicious:
        query = query.where(results.c.suspicious.is_(True))
    if filters.engine:
        name, _, version = filters.engine.rpartition(" ")
        query = query.where(results.c.model_name == name, results.c.model_version == version)
    return query


def _item(row: Any) -> WorkItem:
    document = row["document"] if isinstance(row["document"], dict) else {}
    breasts = document.get("breasts")
    breasts = breasts if isinstance(breasts, dict) else {}
    images = document.get("images")
    images = images if isinstance(images, list) else []
    views = sorted({f"{image.get('laterality')}{image.get('view')}" for image in images
                    if isinstance(image, dict)})  # fmt: skip
    return WorkItem(
        id=row["id"],
        site=row["site"],
        device=row["device"],
        study_uid=row["study_uid"],
        accession=row["accession"],
        created_at=row["created_at"],
        score=row["score"],
        suspicious=row["suspicious"],
        breasts={side: float(value["score"]) for side, value in sorted(breasts.items())
                 if isinstance(value, dict) and isinstance(value.get("score"), int | float)},
        views=tuple(views),
        missing_views=tuple(str(v) for v in document.get("missing_views") or []),
        engine=f"{row['model_name']} {row['model_version']}",
    )  # fmt: skip


@dataclass(frozen=True)
class Study:
    study_uid: str
    #: every result the hub holds for the study, newest first
    results: list[dict[str, Any]]
    outcome: dict[str, Any] | None
    history: list[dict[str, Any]]


def study(connection: Connection, study_uid: str) -> Study | None:
    rows = connection.execute(
        select(results)
        .where(results.c.study_uid == study_uid)
        .order_by(results.c.created_at.desc())
    ).mappings()
    found = [dict(row) for row in rows]
    if not found:
        return None
    outcome = (
        connection.execute(select(outcomes).where(outcomes.c.study_uid == study_uid))
        .mappings()
        .first()
    )
    history = connection.execute(
        select(outcome_history)
        .where(outcome_history.c.study_uid == study_uid)
        .order_by(outcome_history.c.id.desc())
    ).mappings()
    return Study(study_uid, found, dict(outcome) if outcome else None, [dict(h) for h in history])


def sites_and_engines(connection: Connection) -> tuple[list[str], list[str]]:
    """The filters' choices, from the aggregates (not a scan of the results)."""
    sites = connection.execute(select(result_days.c.site).distinct().order_by(result_days.c.site))
    engines = connection.execute(
        select(result_days.c.engine).distinct().order_by(result_days.c.engine)
    )
    return [row[0] for row in sites], [row[0] for row in engines]
