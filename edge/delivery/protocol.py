"""The confirmation protocol between a box and the hub: the three messages it adds.

    box -> hub   {prefix}/{site}/{device}/hello     edge.hello/1    at every connect
    hub -> box   {prefix}/{site}/{device}/confirm   edge.confirm/1  after each commit (retained)
    hub -> box   {prefix}/{site}/{device}/resend    edge.resend/1   missing ranges, or by hand

The broker's PUBACK only says the broker took a result; a broker that restarts
without persistence, or a shared subscription whose session is gone, may still
drop it. The box therefore keeps every result until the hub says it is in its
database (``confirm``), and the hub learns the box's newest ``seq`` (``hello``,
and health's ``journal.last_seq``) so that a lost *last* result is a gap too.

Both sides build and read these messages here, so the wire format has one home;
each has a JSON Schema in ``edge/schemas/`` and is described in docs/messages.md.
Parsing is strict and never raises anything but :class:`ProtocolError`: the box
ignores (and logs) a confirmation it cannot read rather than trusting it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

HELLO_SCHEMA = "edge.hello/1"
CONFIRM_SCHEMA = "edge.confirm/1"
RESEND_SCHEMA = "edge.resend/1"
_RESULT_ID = re.compile(r"^[0-9a-f]{32}$")


class ProtocolError(ValueError):
    """A confirmation-protocol message that is not what its topic says."""


@dataclass(frozen=True)
class Hello:
    """The box's word at each connect: how far its numbering goes and what it holds."""

    site: str
    device: str
    last_seq: int
    confirmed_seq: int
    unconfirmed: int


@dataclass(frozen=True)
class Confirmation:
    """Every result of the box with ``seq`` up to this one is committed at the hub.

    ``id`` is the hub's copy of that result's id: a box whose own result with this
    ``seq`` has another id (its journal began a new numbering) ignores it.
    """

    site: str
    device: str
    seq: int
    id: str
    epoch: int


@dataclass(frozen=True)
class ResendRequest:
    """Send results ``first_seq`` to ``last_seq`` again (None: up to the newest)."""

    site: str
    device: str
    first_seq: int
    last_seq: int | None
    #: ``gap`` (the collector found it missing) or ``operator`` (``edge hub resend``)
    reason: str


def hello_message(hello: Hello) -> dict[str, Any]:
    return {
        "schema": HELLO_SCHEMA,
        "site": hello.site,
        "device": hello.device,
        "at": _now(),
        "last_seq": hello.last_seq,
        "confirmed_seq": hello.confirmed_seq,
        "unconfirmed": hello.unconfirmed,
    }


def confirm_message(confirmation: Confirmation) -> dict[str, Any]:
    return {
        "schema": CONFIRM_SCHEMA,
        "site": confirmation.site,
        "device": confirmation.device,
        "at": _now(),
        "seq": confirmation.seq,
        "id": confirmation.id,
        "epoch": confirmation.epoch,
    }


def resend_message(request: ResendRequest) -> dict[str, Any]:
    return {
        "schema": RESEND_SCHEMA,
        "site": request.site,
        "device": request.device,
        "at": _now(),
        "first_seq": request.first_seq,
        "last_seq": request.last_seq,
        "reason": request.reason,
    }


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":"), sort_keys=True).encode()


def parse_hello(payload: bytes) -> Hello:
    document = _document(payload, HELLO_SCHEMA)
    return Hello(
        site=_text(document, "site"),
        device=_text(document, "device"),
        last_seq=_count(document, "last_seq"),
        confirmed_seq=_count(document, "confirmed_seq"),
        unconfirmed=_count(document, "unconfirmed"),
    )


def parse_confirmation(payload: bytes) -> Confirmation:
    document = _document(payload, CONFIRM_SCHEMA)
    result_id = _text(document, "id")
    if not _RESULT_ID.match(result_id):
        raise ProtocolError("id: not 32 hex digits")
    return Confirmation(
        site=_text(document, "site"),
        device=_text(document, "device"),
        seq=_count(document, "seq", minimum=1),
        id=result_id,
        epoch=_count(document, "epoch", minimum=1),
    )


def parse_resend(payload: bytes) -> ResendRequest:
    document = _document(payload, RESEND_SCHEMA)
    first = _count(document, "first_seq", minimum=1)
    last = None if document.get("last_seq") is None else _count(document, "last_seq", minimum=1)
    if last is not None and last < first:
        raise ProtocolError("last_seq: below first_seq")
    reason = document.get("reason", "gap")
    if reason not in ("gap", "operator"):
        raise ProtocolError("reason: not gap or operator")
    return ResendRequest(
        site=_text(document, "site"),
        device=_text(document, "device"),
        first_seq=first,
        last_seq=last,
        reason=str(reason),
    )


def _document(payload: bytes, schema: str) -> dict[str, Any]:
    try:
        document = json.loads(payload)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(f"not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise ProtocolError("not a JSON object")
    if document.get("schema") != schema:
        raise ProtocolError(f"schema: not {schema}")
    return document


def _text(document: dict[str, Any], key: str) -> str:
    value = document.get(key)
    if not isinstance(value, str) or not value:
        raise ProtocolError(f"{key}: not a non-empty string")
    return value


def _count(document: dict[str, Any], key: str, *, minimum: int = 0) -> int:
    value = document.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ProtocolError(f"{key}: not an integer >= {minimum}")
    return value


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")
