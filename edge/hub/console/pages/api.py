"""The read API (and the outcomes feed) for other systems: JSON, bearer tokens.

GET  /api/v1/devices                               the fleet, worst first
GET  /api/v1/results?since=&until=&site=&suspicious=&engine=&limit=&page=
GET  /api/v1/metrics?site=&engine=&since=&until=   the monitoring figures, comparisons too
POST /api/v1/outcomes                              [{study_uid|accession, ...}] (reader)
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from edge.hub.console.fleet import fleet
from edge.hub.console.monitoring import monitoring
from edge.hub.console.params import (
    ParamError,
    flag,
    limit_of,
    monitoring_selection,
    since_time,
    worklist_filters,
)
from edge.hub.console.shadows import engine_comparisons
from edge.hub.console.users import User
from edge.hub.console.web import api, console_of, json_response, read
from edge.hub.console.worklist import worklist
from edge.hub.database import utc_now
from edge.hub.outcomes import OutcomeError, parse_outcome, record_outcomes

MAX_BODY = 10 * 1024 * 1024


def _bad(message: str, status: int = 400) -> Response:
    return json_response({"error": message}, status)


@api()
async def devices_api(request: Request, user: User) -> Response:
    rows = await read(request, fleet, utc_now())
    return json_response([{**dataclasses.asdict(row), "defect_rate": row.defect_rate}
                          for row in rows])  # fmt: skip


@api()
async def results_api(request: Request, user: User) -> Response:
    params = request.query_params
    try:
        limit = limit_of(params)
        filters = worklist_filters(params, limit=limit)
        since, suspicious = since_time(params), flag(params, "suspicious")
    except ParamError as exc:
        return _bad(str(exc))
    filters = dataclasses.replace(filters, since=since, suspicious=bool(suspicious))
    items = await read(request, worklist, filters)
    return json_response([dataclasses.asdict(item) for item in items])


@api()
async def metrics_api(request: Request, user: User) -> Response:
    try:
        chosen = monitoring_selection(request.query_params, utc_now().date())
    except ParamError as exc:
        return _bad(str(exc))
    view = await read(request, monitoring, chosen, console_of(request).config.monitoring)
    compared = await read(request, engine_comparisons, chosen)
    comparisons = [dataclasses.asdict(item.comparison) for item in compared]
    return json_response({**dataclasses.asdict(view), "comparisons": comparisons})


@api("reader")
async def outcomes_api(request: Request, user: User) -> Response:
    body = await request.body()
    if len(body) > MAX_BODY:
        return _bad("the body is larger than 10 MiB", 413)
    try:
        raw: Any = json.loads(body)
    except ValueError:
        return _bad("the body is not JSON")
    if not isinstance(raw, list):
        raw = [raw]
    try:
        records = [parse_outcome(item, index) for index, item in enumerate(raw)]
        effects = await run_in_threadpool(
            record_outcomes, console_of(request).writer, records, user.name, utc_now()
        )
    except OutcomeError as exc:
        return _bad(str(exc), 422)
    return json_response([dataclasses.asdict(effect) for effect in effects])


routes = [
    Route("/api/v1/devices", devices_api),
    Route("/api/v1/results", results_api),
    Route("/api/v1/metrics", metrics_api),
    Route("/api/v1/outcomes", outcomes_api, methods=["POST"]),
]
