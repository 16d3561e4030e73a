"""Running ``edge hub bench``: the fill, then a real collector and a real console, timed.

See :mod:`edge.hub.bench` for what is measured. The collector and the console
run in this process (threads), against the broker and the database of the
configuration; the database must be empty.
"""

from __future__ import annotations

import json
import multiprocessing
import random
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as paho
import uvicorn
from sqlalchemy import Engine, select

from edge.common.mqttclient import make_client
from edge.hub.bench import Plan, Report, count_results, days_ago, fill, time_calls, utc_now
from edge.hub.collector import Collector
from edge.hub.config import HubConfig, read_secret
from edge.hub.console.app import build_app
from edge.hub.console.users import add_user, new_token
from edge.hub.demo import demo_study
from edge.hub.errors import HubError
from edge.hub.store import Store
from edge.hub.tables import results

BENCH_USER, BENCH_PASSWORD = "bench", "bench-password-not-secret"


def run_bench(config: HubConfig, engine: Engine, plan: Plan, say: Callable[[str], None]) -> Report:
    if count_results(engine):
        raise HubError("edge hub bench needs an empty database: it fills it with demo results")
    report, now = Report(), utc_now()
    say(f"filling {plan.results} results from {plan.boxes} boxes over {plan.days} days ...")
    last_seq = fill(engine, plan, report, now)
    say(f"filled in {report.fill_s:.0f} s; ingesting {plan.ingest} over MQTT ...")
    ingest(config, engine, plan, last_seq, report)
    say(f"ingested in {report.ingest_s:.1f} s; timing the pages ({plan.samples} each) ...")
    time_pages(config, engine, plan, report)
    return report


# -- ingest ---------------------------------------------------------------------------------------


def ingest(
    config: HubConfig, engine: Engine, plan: Plan, last_seq: dict[str, int], report: Report
) -> None:
    """Publish ``plan.ingest`` results as fast as the broker takes them; time until all stored.

    The boxes publish from another process, as they would from other machines: in
    this one they would take the collector's share of the interpreter.
    """
    collector = Collector(config, Store(engine))
    thread = threading.Thread(target=collector.run, name="bench-collector", daemon=True)
    thread.start()
    client = _publisher(config)
    context = multiprocessing.get_context("spawn")
    ready, go = context.Event(), context.Event()
    try:
        payloads = _payloads(plan, last_seq)
        _probe(client, engine, payloads.pop(0))
        base = count_results(engine)
        boxes = context.Process(target=_publish_all, args=(config, payloads, ready, go),
                                name="bench-boxes", daemon=True)  # fmt: skip
        boxes.start()
        if not ready.wait(timeout=120):
            raise HubError("the bench's publisher did not connect within 120 s")
        started = time.monotonic()
        go.set()
        _wait_stored(engine, base + len(payloads), timeout=1800)
        report.ingest_s = time.monotonic() - started
        report.ingested = len(payloads)
        boxes.join(timeout=60)
    finally:
        client.loop_stop()
        client.disconnect()
        collector.request_exit()
        thread.join(timeout=60)


def _publish_all(config: HubConfig, payloads: list[tuple[str, bytes]], ready: Any, go: Any) -> None:
    """In the publisher's process: connect, say so, and on ``go`` publish every payload."""
    client = _publisher(config)
    ready.set()
    go.wait()
    try:
        infos = [client.publish(topic, body, qos=1) for topic, body in payloads]
        for info in infos:
            info.wait_for_publish(timeout=600)
    finally:
        client.loop_stop()
        client.disconnect()


def _publisher(config: HubConfig) -> paho.Client:
    mqtt = config.mqtt
    password = read_secret(mqtt.password_file) if mqtt.password_file else None
    client = make_client(f"edge-hub-bench-{time.monotonic_ns()}", tls=mqtt.tls,
                         username=mqtt.username, password=password)  # fmt: skip
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect(mqtt.host, mqtt.port)
    client.loop_start()
    return client


def _payloads(plan: Plan, last_seq: dict[str, int]) -> list[tuple[str, bytes]]:
    """One more result per box in turn, as the boxes would send them, encoded beforehand."""
    rng, boxes, now = random.Random(plan.seed + 1), plan.box_names(), utc_now()
    prefix = "edge"
    out = []
    for index in range(plan.ingest + 1):
        site, device = boxes[index % len(boxes)]
        seq = last_seq[f"{site}/{device}"] + index // len(boxes) + 1
        document = demo_study(rng, site, device, seq, now).document
        out.append((f"{prefix}/{site}/{device}/results", json.dumps(document).encode()))
    return out


def _probe(client: paho.Client, engine: Engine, payload: tuple[str, bytes]) -> None:
    """Publish one result until it is stored: the collector's subscription is in place."""
    deadline = time.monotonic() + 120
    base = count_results(engine)
    while time.monotonic() < deadline:
        client.publish(*payload, qos=1).wait_for_publish(timeout=30)
        if _wait_stored(engine, base + 1, timeout=3, fail=False):
            return
    raise HubError("the collector stored nothing within 120 s: is the broker running?")


def _wait_stored(engine: Engine, count: int, timeout: float, *, fail: bool = True) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if count_results(engine) >= count:
            return True
        time.sleep(0.1)
    if fail:
        raise HubError(f"only {count_results(engine)} of {count} results stored in {timeout} s")
    return False


# -- pages ------------------------------------------------------------------------------------


def time_pages(config: HubConfig, engine: Engine, plan: Plan, report: Report) -> None:
    folder = Path(tempfile.mkdtemp(prefix="edge-hub-bench-"))
    users = folder / "users.yaml"
    add_user(users, BENCH_USER, "reader", BENCH_PASSWORD)
    token = new_token(users, BENCH_USER)
    settings = {"users_file": users, "port": _free_port(), "session_secret_file": folder / "key"}
    console = config.console.model_copy(update=settings)
    app = build_app(config.model_copy(update={"console": console}), engine)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=console.port,
                                           log_config=None, access_log=False))  # fmt: skip
    thread = threading.Thread(target=server.run, name="bench-console", daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{console.port}", timeout=120) as browser:
            _log_in(browser)
            calls = _calls(browser, engine, token)
            time_calls(calls, plan.samples, report)
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def _log_in(browser: httpx.Client) -> None:
    page = browser.get("/login").text
    csrf = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    answer = browser.post("/login", data={"username": BENCH_USER, "password": BENCH_PASSWORD,
                                          "csrf": csrf})  # fmt: skip
    if answer.status_code != 303:
        raise HubError(f"the bench could not log in: {answer.status_code}")


def _calls(browser: httpx.Client, engine: Engine, token: str) -> dict[str, Callable[[], Any]]:
    with engine.connect() as connection:
        studies = [row[0] for row in connection.execute(
            select(results.c.study_uid).where(results.c.seq % 10 == 5).limit(500))]  # fmt: skip
    week = days_ago(utc_now(), 7).isoformat()
    api = {"Authorization": f"Bearer {token}"}
    picks = iter(studies * 10)
    rng = random.Random(5)

    def get(path: str, **headers: str) -> Callable[[], Any]:
        return lambda: _ok(browser.get(path, headers=headers))

    def outcome() -> None:
        body = [{"study_uid": next(picks), "decision": "no_recall", "birads": 1,
                 "read_at": f"2030-01-01T00:{rng.randint(0, 59):02d}:00Z"}]  # fmt: skip
        _ok(browser.post("/api/v1/outcomes", json=body, headers=api))

    return {
        "page /fleet": get("/fleet"),
        "page /worklist (newest)": get("/worklist"),
        "page /worklist?site&suspicious": get("/worklist?site=site-007&suspicious=on"),
        "page /worklist?sort=score&since=7d": get(f"/worklist?sort=score&since={week}"),
        "page /studies/UID": lambda: _ok(browser.get(f"/studies/{next(picks)}")),
        "page /monitoring (all sites, 30 d)": get("/monitoring"),
        "page /monitoring?site": get("/monitoring?site=site-007"),
        "api GET /api/v1/devices": get("/api/v1/devices", **api),
        "api GET /api/v1/results?site&suspicious": get(
            "/api/v1/results?site=site-007&suspicious=true&limit=100", **api),
        "api GET /api/v1/metrics": get("/api/v1/metrics", **api),
        "api GET /api/v1/metrics?site": get("/api/v1/metrics?site=site-007", **api),
        "api POST /api/v1/outcomes (1 record)": outcome,
    }  # fmt: skip


def _ok(answer: httpx.Response) -> None:
    if answer.status_code != 200:
        raise HubError(f"{answer.request.url.path}: {answer.status_code} {answer.text[:200]}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
