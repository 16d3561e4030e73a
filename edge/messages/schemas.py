"""The JSON Schemas of the messages, shipped in the package under ``edge/schemas/``.

One file per message type, named after it (``edge.result/1`` ->
``result.schema.json``): the hub checks what it receives against them, and the
tests check what the box sends. Reading them needs no library; validating needs
``jsonschema`` (the hub's and the tests' extra), which the appliance does not.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

#: message type -> schema file
FILES = {
    "edge.result/1": "result.schema.json",
    "edge.health/1": "health.schema.json",
    "edge.event/1": "event.schema.json",
    "edge.hello/1": "hello.schema.json",
    "edge.confirm/1": "confirm.schema.json",
    "edge.resend/1": "resend.schema.json",
    "edge.shadow/1": "shadow.schema.json",
}


def load_schema(message_type: str) -> dict[str, Any]:
    """The JSON Schema of ``message_type`` (``edge.health/1``, ...)."""
    text = resources.files("edge").joinpath(f"schemas/{FILES[message_type]}").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema
