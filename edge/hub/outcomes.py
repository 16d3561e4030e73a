"""The radiologists' outcomes: the feedback that monitoring measures the AI against.

One outcome per study (named by its Study Instance UID, or by its accession
number, with the site where an accession is not unique). A record whose
``read_at`` is the same or later than the study's current one replaces it; an
earlier one is only kept in the history; the same record again changes
nothing. Every record taken is in ``outcome_history`` and every change in the
``audit`` log, with who and when. A batch is taken whole or not at all.

Truth for the accuracy figures: ``positive`` when pathology is malignant,
``negative`` when pathology is benign or the reading was no recall, ``pending``
(not counted) for a recall still waiting for pathology.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, select

from edge.hub.aggregates import add_outcome, engine_label, score_bin
from edge.hub.messages import parse_time
from edge.hub.tables import audit, outcome_history, outcomes, results

DECISIONS = ("recall", "no_recall")
PATHOLOGIES = ("malignant", "benign")
_KEYS = {"study_uid", "accession", "site", "decision", "birads", "pathology", "read_at"}


class OutcomeError(ValueError):
    """A record that cannot be taken; the message names the record and the field."""


@dataclass(frozen=True)
class Outcome:
    study_uid: str | None
    accession: str | None
    site: str | None
    decision: str
    birads: int | None
    pathology: str | None
    read_at: datetime
    document: dict[str, Any]

    @property
    def label(self) -> str:
        if self.pathology == "malignant":
            return "positive"
        if self.pathology == "benign" or self.decision == "no_recall":
            return "negative"
        return "pending"


@dataclass(frozen=True)
class Effect:
    study_uid: str
    #: ``new``, ``replaced``, ``unchanged`` or ``older`` (kept in the history only)
    effect: str


def parse_outcome(raw: Any, index: int) -> Outcome:
    """One record of ``POST /api/v1/outcomes`` or a CSV row; raises OutcomeError."""
    where = f"record {index}"
    if not isinstance(raw, dict):
        raise OutcomeError(f"{where}: expected an object")
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise OutcomeError(f"{where}: unknown field {unknown[0]!r}")
    study_uid, accession = _text(raw, "study_uid", where), _text(raw, "accession", where)
    if not study_uid and not accession:
        raise OutcomeError(f"{where}: give study_uid or accession")
    if raw.get("decision") not in DECISIONS:
        raise OutcomeError(f"{where}.decision: expected recall or no_recall")
    birads = raw.get("birads")
    if birads is not None and (
        isinstance(birads, bool) or not isinstance(birads, int) or not 0 <= birads <= 6
    ):
        raise OutcomeError(f"{where}.birads: expected an integer 0-6 or null")
    if raw.get("pathology") not in (*PATHOLOGIES, None):
        raise OutcomeError(f"{where}.pathology: expected malignant, benign or null")
    read_at = parse_time(raw.get("read_at"))
    if read_at is None:
        raise OutcomeError(f"{where}.read_at: expected an RFC 3339 time with its offset")
    return Outcome(study_uid, accession, _text(raw, "site", where), raw["decision"], birads,
                   raw.get("pathology"), read_at, dict(raw))  # fmt: skip


def _text(raw: dict[str, Any], key: str, where: str) -> str | None:
    value = raw.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > 64:
        raise OutcomeError(f"{where}.{key}: expected a string of at most 64 characters")
    return value


def record_outcomes(
    engine: Engine, records: list[Outcome], user: str, now: datetime
) -> list[Effect]:
    """Take ``records`` in one transaction; raises OutcomeError (nothing taken) on any."""
    with engine.begin() as connection:
        return [
            _record(connection, record, index, user, now) for index, record in enumerate(records)
        ]


def _record(
    connection: Connection, record: Outcome, index: int, user: str, now: datetime
) -> Effect:
    result = _result_for(connection, record, index)
    study_uid = str(result["study_uid"])
    current = (
        connection.execute(
            select(outcomes).where(outcomes.c.study_uid == study_uid).with_for_update()
        )
        .mappings()
        .first()
    )
    if current is not None and _same(current, record):
        return Effect(study_uid, "unchanged")
    effect = (
        "new" if current is None else "older" if record.read_at < current["read_at"] else "replaced"
    )
    connection.execute(outcome_history.insert().values(
        study_uid=study_uid, document=record.document, read_at=record.read_at, effect=effect,
        recorded_at=now, recorded_by=user,
    ))  # fmt: skip
    connection.execute(audit.insert().values(
        at=now, user=user, action="outcome",
        detail={"study_uid": study_uid, "effect": effect, "decision": record.decision,
                "birads": record.birads, "pathology": record.pathology},
    ))  # fmt: skip
    if effect != "older":
        _make_current(connection, current, record, result, user, now)
    return Effect(study_uid, effect)


def _make_current(
    connection: Connection,
    current: Any,
    record: Outcome,
    result: Any,
    user: str,
    now: datetime,
) -> None:
    row = {
        "study_uid": result["study_uid"], "result_id": result["id"], "site": result["site"],
        "engine": engine_label(result["model_name"], result["model_version"]),
        "day": result["created_at"].date(), "bin": score_bin(result["score"]),
        "suspicious": bool(result["suspicious"]), "decision": record.decision,
        "birads": record.birads, "pathology": record.pathology, "read_at": record.read_at,
        "label": record.label, "recorded_at": now, "recorded_by": user,
    }  # fmt: skip
    if current is not None:
        add_outcome(connection, _bin_key(current), current["label"], -1)
        connection.execute(
            outcomes.update().where(outcomes.c.study_uid == row["study_uid"]).values(**row)
        )
    else:
        connection.execute(outcomes.insert().values(**row))
    add_outcome(connection, _bin_key(row), record.label, 1)


def _bin_key(row: Any) -> tuple[Any, str, str, int, bool]:
    return (row["day"], row["site"], row["engine"], row["bin"], bool(row["suspicious"]))


def _same(current: Any, record: Outcome) -> bool:
    return (current["decision"], current["birads"], current["pathology"], current["read_at"]) == (
        record.decision, record.birads, record.pathology, record.read_at,
    )  # fmt: skip


def _result_for(connection: Connection, record: Outcome, index: int) -> Any:
    """The study's newest result: the one its outcome is counted against."""
    query = select(results)
    if record.study_uid:
        query = query.where(results.c.study_uid == record.study_uid)
    if record.accession:
        query = query.where(results.c.accession == record.accession)
    if record.site:
        query = query.where(results.c.site == record.site)
    rows = connection.execute(query.order_by(results.c.created_at.desc()).limit(50)).mappings()
    found = rows.all()
    if not found:
        raise OutcomeError(f"record {index}: no result for that study at the hub")
    if len({row["study_uid"] for row in found}) > 1:
        raise OutcomeError(
            f"record {index}: accession {record.accession!r} names several studies; "
            "give study_uid or site"
        )
    return found[0]
