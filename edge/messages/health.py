"""The health message: ``edge.health/1``, retained on ``{prefix}/{site}/{device}/health``.

The daemon takes a :class:`HealthSnapshot` of its stages on the tick (and when the
hub asks on ``health/get``); this module only lays it out, so that what the box
says about itself is written in one place, against
``edge/schemas/health.schema.json`` (documented in ``docs/messages.md``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edge.common.clock import iso, now_iso
from edge.types import EngineInfo

HEALTH_SCHEMA = "edge.health/1"


@dataclass(frozen=True)
class EngineState:
    info: EngineInfo
    backend_requested: str
    backend_reason: str
    #: where the serving engine came from (the store's current, or the bundle folder)
    source: str
    #: versions of engines still finishing studies they started
    finishing: list[str]
    last_activation: dict[str, Any] | None
    #: the engine scoring in shadow: ``version`` (None: none) and ``last_change`` (its
    #: last load or failure)
    shadow: dict[str, Any] | None = None


@dataclass(frozen=True)
class JournalState:
    """The journal's backlog; the counts are None when the journal could not be read."""

    outbox: int | None
    waiting: int | None
    last_seq: int | None
    oldest_created_at: float | None
    write_error: str | None
    #: why the journal cannot be used now (damaged, a read failing), or None
    error: str | None = None
    #: what replaced a journal found damaged at start (``Recovery.health()``), or None
    replaced: dict[str, Any] | None = None


@dataclass(frozen=True)
class HealthSnapshot:
    site: str
    device: str
    version: str
    uptime_s: float
    engine: EngineState
    broker_connected: bool
    broker_error: str | None
    disk: dict[str, dict[str, Any]]
    files_pending: int
    infer_depth: int
    #: images the engine is scoring now (the batch in its hands)
    scoring: int
    open_studies: int
    unjournalled: int
    journal: JournalState
    counters: dict[str, Any]
    latency_ms: dict[str, dict[str, float]]
    last_error: dict[str, Any] | None
    alarms: list[str]
    gpu: dict[str, Any] | None
    #: the hub's confirmations (``journal.confirm``, ``confirmed_seq``, ...), laid out
    #: by :mod:`edge.delivery.health`
    journal_delivery: dict[str, Any]
    #: ``broker.window`` and ``broker.refused``
    broker_delivery: dict[str, Any]
    #: the DICOM receiver's counters (:mod:`edge.dicom.counters`), where one is configured
    receiver: dict[str, Any] | None = None
    #: the DICOM destinations' queues (docs/dicom.md); None when the CAD SR is off
    dicom: dict[str, Any] | None = None


def health_message(snapshot: HealthSnapshot) -> dict[str, Any]:
    """The ``edge.health/1`` document for ``snapshot``."""
    journal = snapshot.journal
    message: dict[str, Any] = {
        "schema": HEALTH_SCHEMA,
        "site": snapshot.site,
        "device": snapshot.device,
        "version": snapshot.version,
        "at": now_iso(),
        "uptime_s": round(snapshot.uptime_s, 1),
        "engine": _engine(snapshot.engine),
        "broker": {
            "connected": snapshot.broker_connected,
            "last_error": snapshot.broker_error,
            **snapshot.broker_delivery,
        },
        "disk": snapshot.disk,
        "queues": {
            "files_pending": snapshot.files_pending,
            "infer": snapshot.infer_depth,
            "scoring": snapshot.scoring,
            "open_studies": snapshot.open_studies,
            "outbox": journal.outbox,
            "journal_backlog": journal.waiting,
            "unjournalled": snapshot.unjournalled,
        },
        "journal": {
            "last_seq": journal.last_seq,
            "oldest_undelivered_at": None
            if journal.oldest_created_at is None
            else iso(journal.oldest_created_at),
            "write_error": journal.write_error,
            "error": journal.error,
            "replaced": journal.replaced,
            **snapshot.journal_delivery,
        },
        "counters": snapshot.counters,
        "latency_ms": snapshot.latency_ms,
        "last_error": snapshot.last_error,
        "alarms": snapshot.alarms,
    }
    if snapshot.receiver is not None:
        message["receiver"] = snapshot.receiver
    if snapshot.gpu is not None:
        message["gpu"] = snapshot.gpu
    if snapshot.dicom is not None:
        message["dicom"] = snapshot.dicom
    return message


def _engine(engine: EngineState) -> dict[str, Any]:
    return {
        "name": engine.info.name,
        "version": engine.info.version,
        "sha256": engine.info.sha256,
        "backend": engine.info.backend,
        "backend_requested": engine.backend_requested,
        "backend_reason": engine.backend_reason,
        "source": engine.source,
        "finishing": engine.finishing,
        "last_activation": engine.last_activation,
        "shadow": engine.shadow or {"version": None, "last_change": None},
    }
