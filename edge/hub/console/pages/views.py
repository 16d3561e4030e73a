"""The browser's pages: fleet, worklist, study, monitoring."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response
from starlette.routing import Route

from edge.hub.console import charts
from edge.hub.console.auditlog import recent
from edge.hub.console.fleet import fleet
from edge.hub.console.monitoring import Monitoring, monitoring
from edge.hub.console.params import ParamError, monitoring_selection, worklist_filters
from edge.hub.console.shadows import SCATTER_POINTS, EngineComparison, engine_comparisons
from edge.hub.console.web import Visit, error_page, page, read, render
from edge.hub.console.worklist import sites_and_engines, study, worklist
from edge.hub.database import utc_now

#: the fleet page reloads itself this often (a meta refresh: no script needed)
FLEET_REFRESH_S = 30


@page()
async def fleet_page(visit: Visit) -> Response:
    now = utc_now()
    rows = await read(visit.request, fleet, now)
    return render(visit.request, visit.session, visit.user, "fleet.html", rows=rows, now=now,
                  refresh=FLEET_REFRESH_S)  # fmt: skip


@page()
async def worklist_page(visit: Visit) -> Response:
    try:
        filters = worklist_filters(visit.request.query_params)
    except ParamError as exc:
        return error_page(visit.request, visit.session, visit.user, 400, str(exc))
    items = await read(visit.request, worklist, filters)
    sites, engines = await read(visit.request, sites_and_engines)
    return render(visit.request, visit.session, visit.user, "worklist.html", items=items,
                  filters=filters, sites=sites, engines=engines,
                  params=visit.request.query_params)  # fmt: skip


@page()
async def study_page(visit: Visit) -> Response:
    found = await read(visit.request, study, visit.request.path_params["study_uid"])
    if found is None:
        return error_page(visit.request, visit.session, visit.user, 404,
                          "The hub holds no result for that study.")  # fmt: skip
    return render(visit.request, visit.session, visit.user, "study.html", study=found,
                  now=utc_now())  # fmt: skip


@page()
async def monitoring_page(visit: Visit) -> Response:
    try:
        chosen = monitoring_selection(visit.request.query_params, utc_now().date())
    except ParamError as exc:
        return error_page(visit.request, visit.session, visit.user, 400, str(exc))
    config = visit.console.config.monitoring
    view = await read(visit.request, monitoring, chosen, config)
    sites, engines = await read(visit.request, sites_and_engines)
    compared = await read(visit.request, engine_comparisons, chosen)
    shown: dict[str, Any] = {"view": view, "config": config, "sites": sites, "engines": engines,
             "charts": _charts(view), "compared": compared,
             "scatters": [_scatter(item) for item in compared],
             "scatter_points": SCATTER_POINTS}  # fmt: skip
    return render(visit.request, visit.session, visit.user, "monitoring.html", **shown)


def _charts(view: Monitoring) -> dict[str, str]:
    labels = [point.day.strftime("%m-%d") for point in view.days]
    bins = len(view.current_histogram)
    bin_labels = [f"{i / bins:.2f}" for i in range(bins)]
    return {
        "volume": charts.line_chart("Results per day", labels,
                                    [("results", "#1f5fa8", [p.results for p in view.days])]),
        "rates": charts.line_chart("Suspicious and defect rates", labels, [
            ("suspicious", "#c0392b", [p.suspicious_rate for p in view.days]),
            ("defects", "#8e44ad", [p.defect_rate for p in view.days]),
        ], y_max=1.0, y_format="{:.0%}"),
        "latency": charts.line_chart("Latency p95 (ms)", labels,
                                     [("p95", "#16a085", [p.latency_p95_ms for p in view.days])]),
        "scores": charts.bar_chart("Score distribution: reference and period", [
            ("reference", "#95a5a6", _shares(view.reference_histogram)),
            ("period", "#1f5fa8", _shares(view.current_histogram)),
        ], bin_labels),
    }  # fmt: skip


def _scatter(item: EngineComparison) -> str:
    c = item.comparison
    return charts.scatter_chart(f"Study scores at {c.site}: {c.engine} against {c.other}",
                                (f"score of A ({c.engine})", f"score of B ({c.other})"),
                                item.points)  # fmt: skip


def _shares(histogram: list[int]) -> list[float]:
    total = sum(histogram)
    return [count / total if total else 0.0 for count in histogram]


@page("admin")
async def audit_page(visit: Visit) -> Response:
    entries = await read(visit.request, recent, 200)
    return render(visit.request, visit.session, visit.user, "audit.html", entries=entries)


routes = [
    Route("/fleet", fleet_page),
    Route("/worklist", worklist_page),
    Route("/studies/{study_uid}", study_page),
    Route("/monitoring", monitoring_page),
    Route("/audit", audit_page),
]
