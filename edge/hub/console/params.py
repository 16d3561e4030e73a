"""Query parameters of the pages and the API, checked: a bad one is a 400 naming it."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime, timedelta

from edge.hub.console.monitoring import Selection
from edge.hub.console.worklist import PAGE, Filters
from edge.hub.messages import parse_time

#: the monitoring page's period when none is asked for
DEFAULT_DAYS = 30
MAX_LIMIT = 1000


class ParamError(ValueError):
    pass


def worklist_filters(params: Mapping[str, str], *, limit: int = PAGE) -> Filters:
    sort = params.get("sort") or "newest"
    if sort not in ("newest", "score"):
        raise ParamError("sort: expected newest or score")
    page = _integer(params, "page", 1, 1, 100_000)
    until = _day(params, "until")
    return Filters(
        site=params.get("site") or None,
        since=_datetime(_day(params, "since")),
        until=_datetime(until + timedelta(days=1)) if until else None,
        suspicious=params.get("suspicious") in ("1", "on", "true", "yes"),
        engine=params.get("engine") or None,
        sort="score" if sort == "score" else "newest",
        limit=limit,
        offset=(page - 1) * limit,
    )


def monitoring_selection(params: Mapping[str, str], today: date) -> Selection:
    """The period (``since`` .. ``until`` inclusive days), site, engine and reference."""
    until = _day(params, "until") or today
    since = _day(params, "since") or until - timedelta(days=DEFAULT_DAYS - 1)
    if since > until:
        raise ParamError("since: after until")
    ref_from, ref_to = _day(params, "ref_from"), _day(params, "ref_to")
    if (ref_from is None) != (ref_to is None):
        raise ParamError("ref_from and ref_to: give both or neither")
    reference = (ref_from, ref_to + timedelta(days=1)) if ref_from and ref_to else None
    return Selection(since, until + timedelta(days=1), params.get("site") or None,
                     params.get("engine") or None, reference)  # fmt: skip


def since_time(params: Mapping[str, str], key: str = "since") -> datetime | None:
    """An RFC 3339 time or a date; None when absent."""
    text = params.get(key)
    if not text:
        return None
    moment = parse_time(text) if "T" in text else _datetime(_day(params, key))
    if moment is None:
        raise ParamError(f"{key}: expected a date (2025-03-01) or an RFC 3339 time")
    return moment


def limit_of(params: Mapping[str, str], default: int = 100) -> int:
    return _integer(params, "limit", default, 1, MAX_LIMIT)


def flag(params: Mapping[str, str], key: str) -> bool | None:
    value = params.get(key)
    if value is None or value == "":
        return None
    if value not in ("true", "false", "1", "0"):
        raise ParamError(f"{key}: expected true or false")
    return value in ("true", "1")


def _day(params: Mapping[str, str], key: str) -> date | None:
    text = params.get(key)
    if not text:
        return None
    try:
        return date.fromisoformat(text[:10])
    except ValueError:
        raise ParamError(f"{key}: expected a date as 2025-03-01") from None


def _datetime(day: date | None) -> datetime | None:
    return None if day is None else datetime(day.year, day.month, day.day)


def _integer(params: Mapping[str, str], key: str, default: int, low: int, high: int) -> int:
    text = params.get(key)
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ParamError(f"{key}: expected a whole number") from None
    if not low <= value <= high:
        raise ParamError(f"{key}: expected {low} to {high}")
    return value
