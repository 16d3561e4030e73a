"""Reading a box's JSON documents (its health, above all) without trusting their shape.

What a box sends is validated against its schema on arrival, but a document kept from
an older box, or a field a newer one adds, must still read as "not known" rather than
fail a page: each reader answers None for anything that is not what it expects.
"""

from __future__ import annotations

from typing import Any


def at(document: Any, *keys: str) -> Any:
    """The value under ``keys`` in nested objects, or None where any level is missing."""
    for key in keys:
        if not isinstance(document, dict):
            return None
        document = document.get(key)
    return document


def text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def integer(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)
