"""Checking what the box sends against the JSON Schemas shipped in ``edge/schemas/``."""

from __future__ import annotations

from typing import Any

import jsonschema

from edge.messages.schemas import load_schema


def conforms(message: Any) -> None:
    """Raise :class:`jsonschema.ValidationError` unless ``message`` fits its own schema."""
    assert isinstance(message, dict), message
    schema = load_schema(message["schema"])
    jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    ).validate(message)
