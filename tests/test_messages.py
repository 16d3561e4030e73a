"""Every message the box sends is built in edge.messages and fits its JSON Schema."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from journal_builders import ENGINE, four_views, study_result
from schemas import conforms

from edge.common.privacy import file_tag
from edge.delivery.health import DeliverySnapshot, broker_fields, delivery_alarms, journal_fields
from edge.delivery.protocol import CONFIRM_SCHEMA, HELLO_SCHEMA, RESEND_SCHEMA
from edge.delivery.stream import Refusal
from edge.health.metrics import Metrics
from edge.journal import Unconfirmed
from edge.messages import schemas
from edge.messages.event import EVENT_SCHEMA, event
from edge.messages.health import (
    HEALTH_SCHEMA,
    EngineState,
    HealthSnapshot,
    JournalState,
    health_message,
)
from edge.messages.result import RESULT_SCHEMA, result_message
from edge.messages.shadow import SHADOW_SCHEMA

SCHEMA_FOLDER = Path(__file__).parents[1] / "edge" / "schemas"


def snapshot(**changes: Any) -> HealthSnapshot:
    fields: dict[str, Any] = {
        "site": "clinic-1",
        "device": "box-1",
        "version": "0.1.0",
        "uptime_s": 12.34,
        "engine": EngineState(ENGINE, "auto", "CPU only", "bundle", [], None),
        "broker_connected": True,
        "broker_error": None,
        "disk": {
            "watch": {"path": "/srv/export", "free_mb": 1000, "free_percent": 40.0},
            "state": {"path": "/var/lib/edge", "error": "No such file or directory"},
        },
        "files_pending": 0,
        "infer_depth": 1,
        "scoring": 1,
        "open_studies": 2,
        "unjournalled": 0,
        "journal": JournalState(3, 0, 17, 1_700_000_000.0, None),
        "counters": {**Metrics().counters(), "events_dropped": 0},
        "latency_ms": {"infer": {"p50": 20.0, "p95": 25.0, "p99": 30.0}},
        "last_error": None,
        "alarms": ["state_disk_low"],
        "gpu": None,
        **delivery_fields(
            DeliverySnapshot(True, Unconfirmed(17, 15, 2, 1_700_000_000.0), None, None, 20, 3600.0)
        ),
    }
    return HealthSnapshot(**{**fields, **changes})


def delivery_fields(delivery: DeliverySnapshot) -> dict[str, Any]:
    return {
        "journal_delivery": journal_fields(delivery),
        "broker_delivery": broker_fields(delivery),
    }


def test_every_message_type_has_its_schema_and_every_schema_a_type() -> None:
    confirmation_protocol = {HELLO_SCHEMA, CONFIRM_SCHEMA, RESEND_SCHEMA}
    assert set(schemas.FILES) == {
        RESULT_SCHEMA,
        SHADOW_SCHEMA,
        HEALTH_SCHEMA,
        EVENT_SCHEMA,
        *confirmation_protocol,
    }
    assert {path.name for path in SCHEMA_FOLDER.glob("*.schema.json")} == set(
        schemas.FILES.values()
    )
    for message_type in schemas.FILES:
        schema = schemas.load_schema(message_type)
        jsonschema.Draft202012Validator.check_schema(schema)
        assert schema["$id"] == message_type


def test_the_result_message_fits_its_schema(tmp_path: Path) -> None:
    result = study_result(four_views(tmp_path, "1.2.3"))
    conforms(result_message(result, site="clinic-1", device="box-1", seq=1))


def test_the_health_message_fits_its_schema() -> None:
    message = health_message(snapshot())
    conforms(message)
    assert message["journal"]["oldest_undelivered_at"] == "2023-11-14T22:13:20+00:00"
    assert "gpu" not in message
    activation = {"at": "2026-01-01T00:00:00+00:00", "ok": False, "error": "self-test failed"}
    engine = EngineState(ENGINE, "auto", "CPU only", "store", ["0.9.0"], activation)
    gpu = {
        "source": "nvml",
        "devices": [
            {
                "index": 0,
                "name": "NVIDIA L4",
                "temperature_c": 41,
                "utilization_percent": None,
                "memory_used_mb": 812,
                "memory_total_mb": 23034,
                "throttle_reasons": ["gpu_idle"],
            }
        ],
    }
    conforms(health_message(snapshot(engine=engine, gpu=gpu, journal=JournalState(*[None] * 5))))


def test_an_event_fits_its_schema_and_names_the_file_by_its_tag() -> None:
    path = Path("/srv/export/DOE^JANE/1.dcm")
    document = event(
        "quarantined",
        site="clinic-1",
        device="box-1",
        reason="not_dicom",
        message=f"cannot read {path}",
        path=path,
        where="ingest",
    )
    conforms(document)
    assert document["file"] == file_tag(path)
    assert "DOE" not in json.dumps(document)


@pytest.mark.parametrize(
    ("field", "value"),
    [("file", "/srv/export/DOE^JANE/1.dcm"), ("study", "1.2.840.113619.2.55"), ("extra", 1)],
)
def test_the_event_schema_refuses_a_path_a_uid_or_an_unknown_field(field: str, value: Any) -> None:
    document = event("error", site="s", device="d", reason="internal_error", message="m")
    conforms(document)
    changed = copy.deepcopy(document)
    changed[field] = value
    with pytest.raises(jsonschema.ValidationError):
        conforms(changed)


def test_a_health_with_a_refused_result_and_every_new_alarm_fits_its_schema() -> None:
    refusal = Refusal(7, 3, "edge/clinic-1/box-1/results", "not authorized", 1_700_000_000.0)
    delivery = DeliverySnapshot(True, Unconfirmed(3, 0, 3, 1.0), refusal, None, 1, 60.0)
    raised = delivery_alarms(delivery)
    assert raised == [
        "hub_unconfirmed",
        "broker_refused: not authorized on edge/clinic-1/box-1/results",
    ]
    alarms = [*raised, "watch_unavailable", "inotify_limit: raise fs.inotify.max_user_instances"]
    message = health_message(snapshot(alarms=alarms, **delivery_fields(delivery)))
    conforms(message)
    assert message["broker"]["refused"]["seq"] == 3
    assert message["journal"]["unconfirmed"] == 3
