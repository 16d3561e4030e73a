"""What the journal hands back: small frozen records, never database rows."""

from __future__ import annotations

from dataclasses import dataclass

from edge.types import ImageScore, ShadowScore


@dataclass(frozen=True)
class FileRecord:
    """What the journal knows of one path in the watch folder."""

    path: str
    size: int
    mtime_ns: int
    sop_uid: str | None
    study_uid: str | None
    state: str
    reason: str | None
    updated_at: float


@dataclass(frozen=True)
class OutboxEntry:
    """A journalled result on its way to the broker; ``entry`` orders the outbox."""

    entry: int
    seq: int
    result_id: str
    topic: str
    payload: bytes
    created_at: float


@dataclass(frozen=True)
class Companion:
    """A result's journalled companion (``edge.shadow/1``) on its way to the broker."""

    #: the entry of the result it belongs to
    entry: int
    seq: int
    topic: str
    payload: bytes


@dataclass(frozen=True)
class Unaccompanied:
    """A journalled result whose images were scored in shadow but that has no
    companion: the box stopped between journalling the one and the other."""

    seq: int
    id: str
    study_uid: str
    images: tuple[ImageScore, ...]
    shadows: dict[str, ShadowScore]


@dataclass(frozen=True)
class ResultSummary:
    """One study result as ``edge status`` lists it."""

    seq: int
    device: str
    id: str
    study_uid: str
    score: float
    suspicious: bool
    closed_by: str
    images: int
    created_at: float
    delivered_at: float | None


@dataclass(frozen=True)
class EventRecord:
    """An ``edge.event/1`` as journalled: no path, no patient identifier."""

    at: str
    kind: str
    reason: str
    stage: str | None
    file: str | None
    study: str | None
    message: str


@dataclass(frozen=True)
class Backlog:
    """Results not yet acknowledged: in the outbox, and waiting behind it."""

    outbox: int
    waiting: int
    oldest_created_at: float | None
    last_seq: int


@dataclass(frozen=True)
class Unconfirmed:
    """Where the hub's confirmations stand: results held that it has not confirmed."""

    last_seq: int
    confirmed_seq: int
    count: int
    oldest_created_at: float | None
