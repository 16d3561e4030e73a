"""Jinja filters: times, rates, scores and empty values shown the same way on every page."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import urlencode

import jinja2


def when(value: datetime | None) -> str:
    return "-" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


def ago(value: datetime | None, now: datetime) -> str:
    if value is None:
        return "-"
    seconds = int((now - value).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if abs(seconds) >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


def percent(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{100 * value:.{digits}f} %"


def number(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def dash(value: Any) -> Any:
    return "-" if value is None or value == "" else value


def interval(value: Any) -> str:
    """``0.912 (0.880-0.940)`` for a stats.Interval, ``-`` for None."""
    if value is None:
        return "-"
    return f"{value.value:.3f} ({value.low:.3f}-{value.high:.3f})"


def query(params: Any, **changes: Any) -> str:
    """The current query string with ``changes`` (None removes a key)."""
    merged = {key: value for key, value in params.items() if key not in changes}
    merged.update({key: value for key, value in changes.items() if value is not None})
    return urlencode(merged)


def install(environment: jinja2.Environment) -> None:
    environment.filters.update(when=when, ago=ago, percent=percent, number=number, dash=dash,
                               interval=interval)  # fmt: skip
    environment.globals.update(query=query)
