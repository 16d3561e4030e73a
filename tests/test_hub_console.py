"""The console and its API over real HTTP: a collector, a mosquitto and PostgreSQL behind it.

One hub per module (collector + ``edge hub serve``); each test publishes what it
needs under its own site so that tests do not see each other's boxes.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from console_support import (
    PASSWORD,
    Hub,
    add_user,
    close_clients,
    csrf_of,
    edge_hub,
    health_document,
    login,
    new_token,
    open_client,
    start_hub,
)
from hub_support import Publisher, count_rows, postgres_database, result_document, wait_until
from support import Broker

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    folder = tmp_path_factory.mktemp("console")
    (folder / "broker").mkdir()
    broker = Broker(folder / "broker")
    broker.start()
    started = start_hub(folder / "hub", broker.port, postgres_database())
    add_user(started.config, "ada", "admin")
    add_user(started.config, "rita", "reader")
    add_user(started.config, "vic", "viewer")
    add_user(started.config, "eve", "viewer")  # whose logins the rate limit test blocks
    yield started
    started.stop()
    broker.stop()


@pytest.fixture(autouse=True)
def _clients_closed() -> Iterator[None]:
    yield
    close_clients()


@pytest.fixture
def publisher(hub: Hub) -> Iterator[Publisher]:
    client = Publisher(hub.broker_port)
    yield client
    client.close()


def token(hub: Hub, name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {new_token(hub.config, name)}"}


def publish_results(publisher: Publisher, hub: Hub, site: str, scores: list[float]) -> None:
    before = count_rows(hub.database_url, "SELECT count(*) FROM results")
    for seq, score in enumerate(scores, start=1):
        publisher.result(result_document(site, "box-1", seq, score=score))
    wait_until(lambda: count_rows(hub.database_url, "SELECT count(*) FROM results")
               >= before + len(scores), what="results stored")  # fmt: skip


def api_get(hub: Hub, path: str, headers: dict[str, str], **params: Any) -> Any:
    answer = httpx.get(hub.console.url + path, headers=headers, params=params, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()


# -- security --------------------------------------------------------------------------------


def test_the_users_file_keeps_argon2_hashes_only_and_is_private(hub: Hub) -> None:
    users_file = hub.config.parent / "users.yaml"
    text = users_file.read_text()
    assert PASSWORD not in text
    assert text.count("$argon2id$") == 4
    assert stat.S_IMODE(os.stat(users_file).st_mode) == 0o600
    issued = new_token(hub.config, "vic")
    assert issued.startswith("edge_") and issued not in users_file.read_text()
    listed = edge_hub(hub.config, "users", "list")
    assert "vic\tviewer" in listed.stdout


def test_without_a_login_pages_send_to_the_login_page_and_the_api_answers_401(hub: Hub) -> None:
    base = hub.console.url
    for path in ("/fleet", "/worklist?site=x", "/monitoring", "/studies/1.2.3", "/audit"):
        answer = httpx.get(base + path, timeout=30)
        assert answer.status_code == 303
        assert answer.headers["location"].startswith("/login?next=")
    for path in ("/api/v1/devices", "/api/v1/results", "/api/v1/metrics"):
        answer = httpx.get(base + path, timeout=30)
        assert answer.status_code == 401
        assert answer.headers["www-authenticate"] == "Bearer"
        bad = httpx.get(base + path, headers={"Authorization": "Bearer edge_nope"}, timeout=30)
        assert bad.status_code == 401
    posted = httpx.post(base + "/api/v1/outcomes", json=[], timeout=30)
    assert posted.status_code == 401


def test_a_session_cookie_is_httponly_and_samesite_and_a_forged_one_is_refused(hub: Hub) -> None:
    client = open_client(hub.console.url)
    page = client.get("/login")
    cookie = page.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    assert "content-security-policy" in page.headers
    answer = client.post("/login", data={"username": "vic", "password": PASSWORD,
                                         "csrf": csrf_of(page.text)})  # fmt: skip
    assert answer.status_code == 303
    assert client.get("/fleet").status_code == 200
    value = client.cookies["edge_session"]
    forged = httpx.get(hub.console.url + "/fleet", timeout=30,
                       cookies={"edge_session": value[:-3] + "AAA"})  # fmt: skip
    assert forged.status_code == 303


def test_every_post_needs_the_sessions_csrf_token(hub: Hub) -> None:
    fresh = open_client(hub.console.url)
    fresh.get("/login")
    refused = fresh.post("/login", data={"username": "rita", "password": PASSWORD})
    assert refused.status_code == 403
    client = login(hub.console.url, "rita")
    study_form = {"decision": "recall", "read_at": "2025-03-01T10:00:00Z"}
    assert client.post("/studies/1.2.3/outcome", data=study_form).status_code == 403
    other = login(hub.console.url, "vic")
    other_csrf = csrf_of(other.get("/fleet").text)
    answer = client.post("/studies/1.2.3/outcome", data={**study_form, "csrf": other_csrf})
    assert answer.status_code == 403
    assert client.post("/logout", data={}).status_code == 403


def test_failed_logins_are_rate_limited_even_for_the_right_password(hub: Hub) -> None:
    client = open_client(hub.console.url)
    statuses = []
    for password in ["wrong"] * 5 + [PASSWORD]:
        page = client.get("/login")
        answer = client.post("/login", data={"username": "eve", "password": password,
                                              "csrf": csrf_of(page.text)})  # fmt: skip
        statuses.append(answer.status_code)
    assert statuses == [401] * 5 + [429]
    assert "Too many failed logins" in answer.text


def test_roles_limit_what_a_user_may_do(hub: Hub) -> None:
    viewer = token(hub, "vic")
    answer = httpx.post(hub.console.url + "/api/v1/outcomes", headers=viewer, timeout=30,
                        json=[{"study_uid": "1.2", "decision": "recall",
                               "read_at": "2025-03-01T10:00:00Z"}])  # fmt: skip
    assert answer.status_code == 403
    client = login(hub.console.url, "vic")
    assert client.get("/audit").status_code == 403
    assert client.get("/outcomes/upload").status_code == 403


# -- the read API and the outcomes -------------------------------------------------------------


def test_devices_api_shows_a_stopped_box_offline_with_its_health(
    hub: Hub, publisher: Publisher
) -> None:
    health = health_document("site-dev", "box-1", alarms=["outbox_full"])
    publisher.publish("edge/site-dev/box-1/health", json.dumps(health), retain=True)
    publisher.publish("edge/site-dev/box-1/status", "online", retain=True)
    headers = token(hub, "vic")

    def box() -> dict[str, Any] | None:
        rows = api_get(hub, "/api/v1/devices", headers)
        found = [row for row in rows if row["site"] == "site-dev"]
        return found[0] if found and found[0]["gpu_temperature_c"] is not None else None

    row = wait_until(box, what="the box in /api/v1/devices")
    assert row["status"] == "online"
    assert (row["gpu_temperature_c"], row["latency_p95_ms"]) == (61.0, 120.0)
    assert "alarm outbox_full" in row["problems"]
    publisher.publish("edge/site-dev/box-1/status", "offline", retain=True)
    row = wait_until(lambda: (r := box()) and r["status"] == "offline" and r, what="offline")
    assert "offline" in row["problems"]


def test_results_api_filters_by_site_and_suspicion(hub: Hub, publisher: Publisher) -> None:
    publish_results(publisher, hub, "site-res", [0.1, 0.7, 0.9])
    headers = token(hub, "vic")
    every = api_get(hub, "/api/v1/results", headers, site="site-res")
    assert [row["score"] for row in every] == [0.9, 0.7, 0.1] or len(every) == 3
    suspicious = api_get(hub, "/api/v1/results", headers, site="site-res", suspicious="true")
    assert sorted(row["score"] for row in suspicious) == [0.7, 0.9]
    assert all(row["site"] == "site-res" for row in suspicious)
    bad = httpx.get(hub.console.url + "/api/v1/results", headers=headers, timeout=30,
                    params={"since": "yesterday"})  # fmt: skip
    assert bad.status_code == 400 and "since" in bad.json()["error"]


def test_outcomes_are_idempotent_keep_their_history_and_move_the_metrics(
    hub: Hub, publisher: Publisher
) -> None:
    site = "site-out"
    scores = [0.9, 0.8, 0.3, 0.2]
    publish_results(publisher, hub, site, scores)
    documents = [result_document(site, "box-1", seq, score=s) for seq, s in enumerate(scores, 1)]
    reader = token(hub, "rita")
    read_at = "2025-03-01T10:00:00Z"
    records = [
        {"study_uid": documents[0]["study_uid"], "decision": "recall", "birads": 5,
         "pathology": "malignant", "read_at": read_at},
        {"accession": documents[1]["accession"], "site": site, "decision": "recall",
         "birads": 4, "pathology": "malignant", "read_at": read_at},
        {"study_uid": documents[2]["study_uid"], "decision": "no_recall", "birads": 1,
         "pathology": None, "read_at": read_at},
        {"study_uid": documents[3]["study_uid"], "decision": "no_recall", "birads": 2,
         "pathology": None, "read_at": read_at},
    ]  # fmt: skip
    metrics = api_get(hub, "/api/v1/metrics", reader, site=site)
    assert metrics["accuracy"]["auc"] is None
    first = post_outcomes(hub, reader, records)
    assert [effect["effect"] for effect in first] == ["new"] * 4
    assert [effect["effect"] for effect in post_outcomes(hub, reader, records)] == ["unchanged"] * 4
    metrics = api_get(hub, "/api/v1/metrics", reader, site=site)
    accuracy = metrics["accuracy"]
    assert (accuracy["positives"], accuracy["negatives"]) == (2, 2)
    assert accuracy["auc"]["value"] == 1.0
    assert accuracy["sensitivity"]["value"] == 1.0
    assert accuracy["level"] == "alarm"  # four cases: the lower bound is far below 0.88

    later = {**records[3], "pathology": "malignant", "decision": "recall",
             "read_at": "2025-04-01T10:00:00Z"}  # fmt: skip
    older = {**records[2], "decision": "recall", "read_at": "2025-01-01T10:00:00Z"}
    assert [e["effect"] for e in post_outcomes(hub, reader, [later, older])] == [
        "replaced", "older"]  # fmt: skip
    accuracy = api_get(hub, "/api/v1/metrics", reader, site=site)["accuracy"]
    assert (accuracy["positives"], accuracy["negatives"]) == (3, 1)
    assert accuracy["auc"]["value"] == pytest.approx(2 / 3)
    history = count_rows(hub.database_url, "SELECT count(*) FROM outcome_history WHERE "
                         f"study_uid = '{documents[3]['study_uid']}'")  # fmt: skip
    assert history == 2
    audited = count_rows(hub.database_url, "SELECT count(*) FROM audit WHERE \"user\" = 'rita'")
    assert audited >= 6


def post_outcomes(hub: Hub, headers: dict[str, str], records: list[dict[str, Any]]) -> Any:
    answer = httpx.post(hub.console.url + "/api/v1/outcomes", headers=headers, json=records,
                        timeout=30)  # fmt: skip
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_an_invalid_or_unknown_outcome_takes_nothing(hub: Hub, publisher: Publisher) -> None:
    publish_results(publisher, hub, "site-bad", [0.4])
    document = result_document("site-bad", "box-1", 1, score=0.4)
    reader = token(hub, "rita")
    good = {
        "study_uid": document["study_uid"],
        "decision": "recall",
        "read_at": "2025-03-01T10:00:00Z",
    }
    for bad, expected in (
        ({**good, "decision": "maybe"}, "record 1.decision"),
        ({**good, "study_uid": "9.9.9"}, "record 1: no result"),
        ({**good, "read_at": "2025-03-01 10:00"}, "record 1.read_at"),
        ({**good, "birads": 9}, "record 1.birads"),
    ):
        answer = httpx.post(hub.console.url + "/api/v1/outcomes", headers=reader,
                            json=[good, bad], timeout=30)  # fmt: skip
        assert answer.status_code == 422 and expected in answer.json()["error"]
    taken = count_rows(hub.database_url, "SELECT count(*) FROM outcomes WHERE "
                       f"study_uid = '{document['study_uid']}'")  # fmt: skip
    assert taken == 0


def test_a_csv_upload_records_outcomes_as_the_logged_in_reader(
    hub: Hub, publisher: Publisher
) -> None:
    publish_results(publisher, hub, "site-csv", [0.6, 0.1])
    documents = [result_document("site-csv", "box-1", seq, score=s)
                 for seq, s in ((1, 0.6), (2, 0.1))]  # fmt: skip
    text = "study_uid,decision,birads,pathology,read_at\n" + "".join(
        f"{d['study_uid']},{decision},,{pathology},2025-03-02T09:00:00Z\n"
        for d, decision, pathology in ((documents[0], "recall", "malignant"),
                                       (documents[1], "no_recall", ""))
    )  # fmt: skip
    client = login(hub.console.url, "rita")
    csrf = csrf_of(client.get("/outcomes/upload").text)
    answer = client.post("/outcomes/upload", data={"csrf": csrf},
                         files={"file": ("outcomes.csv", text.encode(), "text/csv")})  # fmt: skip
    assert answer.status_code == 200, answer.text
    assert "2 new" in answer.text
    recorded = count_rows(hub.database_url, "SELECT count(*) FROM outcomes WHERE "
                          "recorded_by = 'rita' AND site = 'site-csv'")  # fmt: skip
    assert recorded == 2
    audit_page = login(hub.console.url, "ada").get("/audit")
    assert audit_page.status_code == 200 and "rita" in audit_page.text


# -- pages and aggregates -------------------------------------------------------------------------


def test_pages_render_from_the_aggregates_and_count_a_redelivery_once(
    hub: Hub, publisher: Publisher
) -> None:
    site = "site-agg"
    publish_results(publisher, hub, site, [0.2, 0.95])
    publisher.result(result_document(site, "box-1", 2, score=0.95))  # a re-delivery
    wait_until(lambda: count_rows(hub.database_url, "SELECT sum(deliveries) FROM results "
                                  f"WHERE site = '{site}'") == 3, what="re-delivery")  # fmt: skip
    assert count_rows(hub.database_url, "SELECT sum(results) FROM result_days "
                      f"WHERE site = '{site}'") == 2  # fmt: skip
    client = login(hub.console.url, "vic")
    worklist = client.get("/worklist", params={"site": site, "suspicious": "on"})
    assert worklist.status_code == 200
    assert "A00002" in worklist.text and "A00001" not in worklist.text
    study_uid = result_document(site, "box-1", 2)["study_uid"]
    study = client.get(f"/studies/{study_uid}")
    assert study.status_code == 200 and "delivered 2 time(s)" in study.text
    monitoring = client.get("/monitoring", params={"site": site})
    assert monitoring.status_code == 200 and "<svg" in monitoring.text
    assert "http://" not in monitoring.text.replace('xmlns="http://www.w3.org/2000/svg"', "")
    css = client.get("/static/console.css")
    assert css.status_code == 200 and "text/css" in css.headers["content-type"]


def test_health_counters_become_the_fleets_defect_rate(hub: Hub, publisher: Publisher) -> None:
    site = "site-def"
    first = health_document(
        site,
        "box-1",
        counters={
            "received": 10,
            "quarantined_by_reason": {"not_dicom": 1},
            "skipped_by_reason": {},
        },
    )
    publisher.publish(f"edge/{site}/box-1/health", json.dumps(first))
    later = {
        **first,
        "at": _later(first["at"]),
        "counters": {
            "received": 30,
            "quarantined_by_reason": {"not_dicom": 2},
            "skipped_by_reason": {"qc_image": 3},
        },
    }
    publisher.publish(f"edge/{site}/box-1/health", json.dumps(later))
    headers = token(hub, "vic")

    def defects() -> dict[str, Any] | None:
        rows = [r for r in api_get(hub, "/api/v1/devices", headers) if r["site"] == site]
        return rows[0] if rows and rows[0]["received_24h"] == 30 else None

    row = wait_until(defects, what="defects counted")
    assert row["defects_24h"] == {"quarantined:not_dicom": 2, "skipped:qc_image": 3}
    assert row["defect_rate"] == pytest.approx(5 / 30)


def _later(at: str) -> str:
    moment = datetime.fromisoformat(at.replace("Z", "+00:00")) + timedelta(seconds=5)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
