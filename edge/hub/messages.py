"""What arrives from the appliances, decoded and checked before anything is stored.

Each MQTT message becomes exactly one record: a :class:`ResultRecord`,
:class:`ShadowRecord` (a result's companion), :class:`HealthRecord`,
:class:`StatusRecord` or :class:`EventRecord` when it is what its topic says it
is, or a :class:`Rejected` with a short reason when it is not (not JSON, an
unknown schema, a document the schema refuses, a site or device that contradicts
its topic). Nothing here raises on bad input: the
collector never stops for a message.

Results are checked against ``edge/schemas/result.schema.json`` with one
addition: the hub requires ``seq``, the per-device sequence number it detects
gaps with (see docs/messages.md).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cache
from typing import Any, cast

import fastjsonschema
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from edge.delivery.protocol import ProtocolError, parse_hello
from edge.messages.event import EVENT_SCHEMA
from edge.messages.health import HEALTH_SCHEMA
from edge.messages.result import RESULT_SCHEMA
from edge.messages.schemas import load_schema
from edge.messages.shadow import SHADOW_SCHEMA

STATUSES = ("online", "offline")
#: the topic leaves the collector subscribes to
LEAVES = ("results", "shadow", "health", "status", "events", "hello")
_MAX_DETAIL = 500
#: what a ``too_large`` reject keeps of the message
KEPT_PREFIX = 1024


@dataclass(frozen=True)
class Origin:
    """Where a message came from, read from its topic ``{prefix}/{site}/{device}/{leaf}``."""

    site: str
    device: str
    leaf: str


@dataclass(frozen=True)
class ResultRecord:
    """One ``edge.result/1`` document, with the fields the hub indexes pulled out."""

    id: str
    site: str
    device: str
    seq: int
    study_uid: str
    accession: str
    score: float
    suspicious: bool
    threshold: float
    closed_by: str
    model_name: str
    model_version: str
    model_sha256: str
    model_backend: str
    timings_ms: dict[str, float]
    created_at: datetime
    document: dict[str, Any]


@dataclass(frozen=True)
class ShadowRecord:
    """One ``edge.shadow/1`` document: a candidate engine's scores of a result's study."""

    site: str
    device: str
    result_id: str
    seq: int
    document: dict[str, Any]


@dataclass(frozen=True)
class HealthRecord:
    site: str
    device: str
    #: the device's own time stamp (``at``), UTC; None when absent or unreadable
    at: datetime | None
    document: dict[str, Any]


@dataclass(frozen=True)
class HelloRecord:
    """``edge.hello/1``: a box connected, and its numbering goes up to ``last_seq``."""

    site: str
    device: str
    last_seq: int


@dataclass(frozen=True)
class StatusRecord:
    site: str
    device: str
    status: str


@dataclass(frozen=True)
class EventRecord:
    site: str
    device: str
    #: sha256 of topic and payload: a re-delivered event is counted, not stored twice
    digest: str
    kind: str | None
    at: datetime | None
    document: dict[str, Any]


@dataclass(frozen=True)
class Rejected:
    topic: str
    payload: bytes
    #: ``bad_topic``, ``not_json``, ``unknown_schema``, ``invalid``, ``topic_mismatch``,
    #: ``bad_status``, ``too_large`` or ``internal_error``
    reason: str
    detail: str


Record = (
    ResultRecord | ShadowRecord | HealthRecord | StatusRecord | EventRecord | HelloRecord | Rejected
)


def parse_topic(topic: str, prefix: str) -> Origin | None:
    """The origin of ``{prefix}/{site}/{device}/{leaf}``, or None for any other topic."""
    parts = topic.split("/")
    if len(parts) != 4 or parts[0] != prefix or parts[3] not in LEAVES:
        return None
    if not parts[1] or not parts[2]:
        return None
    return Origin(site=parts[1], device=parts[2], leaf=parts[3])


def oversized(topic: str, payload: bytes, limit: int) -> Rejected | None:
    """A ``too_large`` reject for a message over ``limit`` bytes: its size and a prefix only.

    A box sends results and health of a few kilobytes; megabytes on its topic are
    a fault or an attack, and are neither parsed nor stored whole.
    """
    if len(payload) <= limit:
        return None
    kept = payload[:KEPT_PREFIX]
    detail = (
        f"{len(payload)} bytes, over mqtt.max_message_bytes ({limit}); "
        f"only the first {len(kept)} bytes are kept"
    )
    return Rejected(topic, kept, "too_large", detail)


def decode(topic: str, payload: bytes, prefix: str) -> Record:
    """Turn one MQTT message into the record the store takes."""
    origin = parse_topic(topic, prefix)
    if origin is None:
        return Rejected(topic, payload, "bad_topic", f"not {prefix}/SITE/DEVICE/{'|'.join(LEAVES)}")
    if origin.leaf == "status":
        return _status(topic, payload, origin)
    if origin.leaf == "hello":
        return _hello(topic, payload, origin)
    try:
        document = json.loads(payload)
    except (UnicodeDecodeError, ValueError) as exc:
        return Rejected(topic, payload, "not_json", _short(str(exc)))
    if not isinstance(document, dict):
        return Rejected(topic, payload, "unknown_schema", "not a JSON object")
    expected = {
        "results": RESULT_SCHEMA,
        "shadow": SHADOW_SCHEMA,
        "health": HEALTH_SCHEMA,
        "events": EVENT_SCHEMA,
    }
    schema = document.get("schema")
    if schema != expected[origin.leaf]:
        return Rejected(
            topic,
            payload,
            "unknown_schema",
            _short(f"schema {schema!r} on a {origin.leaf} topic; expected {expected[origin.leaf]}"),
        )
    for key in ("site", "device"):
        if key in document and document[key] != getattr(origin, key):
            return Rejected(
                topic, payload, "topic_mismatch", _short(f"{key} {document[key]!r} in the message")
            )
    if origin.leaf == "results":
        return _result(topic, payload, document)
    if origin.leaf == "shadow":
        return _shadow(topic, payload, origin, document)
    if origin.leaf == "health":
        return HealthRecord(origin.site, origin.device, parse_time(document.get("at")), document)
    return _event(topic, payload, origin, document)


def _status(topic: str, payload: bytes, origin: Origin) -> Record:
    text = payload.decode("utf-8", errors="replace").strip()
    if text not in STATUSES:
        return Rejected(topic, payload, "bad_status", _short(f"{text!r} is not online or offline"))
    return StatusRecord(origin.site, origin.device, text)


def _hello(topic: str, payload: bytes, origin: Origin) -> Record:
    try:
        hello = parse_hello(payload)
    except ProtocolError as exc:
        return Rejected(topic, payload, "invalid", _short(str(exc)))
    if (hello.site, hello.device) != (origin.site, origin.device):
        return Rejected(topic, payload, "topic_mismatch", "site or device in the message")
    return HelloRecord(origin.site, origin.device, hello.last_seq)


def _result(topic: str, payload: bytes, document: dict[str, Any]) -> Record:
    error = (
        None
        if quick_result_check(document)
        else best_match(result_validator().iter_errors(document))
    )
    if error is not None:
        where = "/".join(str(part) for part in error.absolute_path) or "(top level)"
        return Rejected(topic, payload, "invalid", _short(f"{where}: {error.message}"))
    created_at = parse_time(document["created_at"])
    if created_at is None:
        return Rejected(topic, payload, "invalid", "created_at: not an RFC 3339 time")
    model, study = document["model"], document["study"]
    return ResultRecord(
        id=document["id"],
        site=document["site"],
        device=document["device"],
        seq=document["seq"],
        study_uid=document["study_uid"],
        accession=document["accession"],
        score=float(study["score"]),
        suspicious=bool(study["suspicious"]),
        threshold=float(study["threshold"]),
        closed_by=document["closed_by"],
        model_name=model["name"],
        model_version=model["version"],
        model_sha256=model["sha256"],
        model_backend=model["backend"],
        timings_ms={name: float(value) for name, value in document["timings_ms"].items()},
        created_at=created_at,
        document=document,
    )


def _shadow(topic: str, payload: bytes, origin: Origin, document: dict[str, Any]) -> Record:
    error = best_match(shadow_validator().iter_errors(document))
    if error is not None:
        where = "/".join(str(part) for part in error.absolute_path) or "(top level)"
        return Rejected(topic, payload, "invalid", _short(f"{where}: {error.message}"))
    return ShadowRecord(
        origin.site, origin.device, document["result_id"], document["seq"], document
    )


def _event(topic: str, payload: bytes, origin: Origin, document: dict[str, Any]) -> Record:
    kind = document.get("kind")
    return EventRecord(
        site=origin.site,
        device=origin.device,
        digest=hashlib.sha256(topic.encode() + b"\0" + payload).hexdigest(),
        kind=kind if isinstance(kind, str) else None,
        at=parse_time(document.get("at")),
        document=document,
    )


@cache
def result_validator() -> Draft202012Validator:
    """The appliance's ``edge.result/1`` schema, with ``seq`` required by the hub."""
    schema = load_schema(RESULT_SCHEMA)
    schema["required"] = sorted({*schema["required"], "seq"})
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


@cache
def shadow_validator() -> Draft202012Validator:
    """The appliance's ``edge.shadow/1`` schema."""
    schema = load_schema(SHADOW_SCHEMA)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def quick_result_check(document: dict[str, Any]) -> bool:
    """Whether ``document`` passes the same schema, compiled to code (fastjsonschema).

    About twenty times faster than :func:`result_validator`, which keeps the
    last word: a document this refuses is checked again there, and only an
    error found there rejects it (and names the field).
    """
    try:
        _compiled_result_schema()(document)
    except fastjsonschema.JsonSchemaException:
        return False
    return True


@cache
def _compiled_result_schema() -> Any:
    schema = dict(cast(Mapping[str, Any], result_validator().schema))
    # Compiled as draft 7 (fastjsonschema's newest): the keywords used mean the same there.
    schema.pop("$schema", None)
    schema.pop("$id", None)
    return fastjsonschema.compile(schema)


_OFFSET = re.compile(r"(Z|z)$")


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 time as a naive UTC datetime (the database stores UTC), or None."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(_OFFSET.sub("+00:00", value))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None  # RFC 3339 requires an offset; a local time would be a guess
    return parsed.astimezone(timezone.utc).replace(tzinfo=None)


def _short(text: str) -> str:
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 3] + "..."
