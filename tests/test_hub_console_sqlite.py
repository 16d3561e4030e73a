"""The console on a SQLite hub database: the same pages, aggregates and outcomes.

The application runs in this process under uvicorn, on a free port, over real
HTTP; the PostgreSQL tests in test_hub_console.py run it as ``edge hub serve``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest
from console_support import console_in_process, csrf_of
from hub_support import result_document

from edge.hub.config import load_hub_config
from edge.hub.console.users import add_user, new_token
from edge.hub.database import open_database
from edge.hub.messages import decode
from edge.hub.store import Store

PASSWORD = "sqlite password"


@pytest.fixture
def client(tmp_path: Path) -> Iterator[httpx.Client]:
    (tmp_path / "hub.yaml").write_text("console: {port: 8080}\n")
    config = load_hub_config(tmp_path / "hub.yaml")
    add_user(config.console.users_file, "rita", "reader", PASSWORD)
    writer = open_database(config.database_url(), writer=True)
    reader = open_database(config.database_url(), writer=False)
    store = Store(writer)
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    for seq, score in ((1, 0.9), (2, 0.1), (4, 0.7)):
        document = result_document("clinic-s", "box-1", seq, score=score)
        store.write([decode("edge/clinic-s/box-1/results", json.dumps(document).encode(), "edge")],
                    now)  # fmt: skip
    with (
        console_in_process(config, reader, writer) as url,
        httpx.Client(base_url=url, timeout=30) as http,
    ):
        http.headers["x-token"] = new_token(config.console.users_file, "rita")
        yield http
    reader.dispose()
    writer.dispose()


def test_pages_and_outcomes_on_sqlite(client: httpx.Client) -> None:
    page = client.get("/login")
    answer = client.post("/login", data={"username": "rita", "password": PASSWORD,
                                         "csrf": csrf_of(page.text)})  # fmt: skip
    assert answer.status_code == 303
    fleet = client.get("/fleet")
    assert fleet.status_code == 200 and "1 seq missing" in fleet.text
    worklist = client.get("/worklist", params={"suspicious": "on", "sort": "score"})
    assert worklist.text.index("A00001") < worklist.text.index("A00004")
    assert "A00002" not in worklist.text
    token = {"Authorization": f"Bearer {client.headers['x-token']}"}
    read_at = "2025-03-01T10:00:00Z"
    records = [{"accession": "A00001", "decision": "recall", "pathology": "malignant",
                "read_at": read_at},
               {"accession": "A00002", "decision": "no_recall", "read_at": read_at}]  # fmt: skip
    taken = client.post("/api/v1/outcomes", json=records, headers=token)
    assert [effect["effect"] for effect in taken.json()] == ["new", "new"]
    metrics = client.get("/api/v1/metrics", headers=token).json()
    assert metrics["accuracy"]["auc"]["value"] == 1.0
    assert client.get("/monitoring").status_code == 200
