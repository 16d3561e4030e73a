"""The monitoring page's engine comparison, over real HTTP, on SQLite and PostgreSQL.

Shadowed results go in through the hub's own store (decoded messages, as the
collector stores them) and outcomes through the hub's outcome recording; the test
counts the expected agreement from its own pairs, not from the code under test.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import httpx
import pytest
from console_support import close_clients, console_in_process, login
from hub_support import postgres_database, result_document, shadow_companion

from edge.hub.config import load_hub_config
from edge.hub.console.users import add_user, new_token
from edge.hub.database import open_database
from edge.hub.messages import decode
from edge.hub.outcomes import parse_outcome, record_outcomes
from edge.hub.store import Store

PASSWORD = "compare password"
SITE = "clinic-c"
# (serving engine 1's score, shadow engine 2's score): 1 calls >= 0.5, 2 calls >= 0.4
PAIRS = [(0.9, 0.8), (0.6, 0.3), (0.2, 0.45), (0.1, 0.05), (0.3, 0.2), (0.7, 0.9), (0.55, 0.6)]


def shadowed_messages(
    site: str, seq: int, score: float, shadow: float, *, skipped: int = 0
) -> list[tuple[str, dict[str, Any]]]:
    """(topic, document) of what a box sends for a study engine ``1`` served and engine
    ``2`` scored in shadow: the one place the tests spell the shadow's format."""
    document = result_document(site, "box-1", seq, score=score)
    shadow = {
        "model": {"name": "demo", "version": "2", "sha256": "b" * 64, "backend": "onnxruntime"},
        "study": {"score": shadow, "suspicious": shadow >= 0.4, "threshold": 0.4},
        "breasts": {"L": {"score": shadow, "suspicious": shadow >= 0.4}},
        "images": [{"sop_uid": document["images"][0]["sop_uid"], "score": shadow}],
        "skipped": skipped,
    }
    companion = shadow_companion(document, shadow)
    return [(f"edge/{site}/box-1/results", document), (f"edge/{site}/box-1/shadow", companion)]


def _documents() -> list[tuple[str, dict[str, Any]]]:
    messages = [m for i, (a, b) in enumerate(PAIRS) for m in shadowed_messages(SITE, i + 1, a, b)]
    messages += shadowed_messages(SITE, len(PAIRS) + 1, 0.9, 0.1, skipped=2)  # left out
    plain = result_document("clinic-n", "box-1", 1, score=0.7)  # a site with no trial
    return [*messages, ("edge/clinic-n/box-1/results", plain)]


def _outcomes(documents: list[dict[str, Any]]) -> list[Any]:
    """Outcomes of the first five studies: a cancer where engine 1 scored >= 0.6."""
    return [
        parse_outcome({"study_uid": d["study_uid"],
                       "decision": "recall" if d["study"]["score"] >= 0.6 else "no_recall",
                       "pathology": "malignant" if d["study"]["score"] >= 0.6 else None,
                       "read_at": "2025-03-02T09:00:00Z"}, index)
        for index, d in enumerate(documents[:5])
    ]  # fmt: skip


@dataclass(frozen=True)
class Console:
    base: str
    #: a viewer's API token
    token: str


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def console(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Console]:
    folder = tmp_path_factory.mktemp(f"compare-{request.param}")
    url = f"sqlite:///{folder / 'hub.db'}" if request.param == "sqlite" else postgres_database()
    (folder / "hub.yaml").write_text(
        json.dumps({"database": {"url": url}, "console": {"port": 8080}})
    )
    config = load_hub_config(folder / "hub.yaml")
    add_user(config.console.users_file, "vic", "viewer", PASSWORD)
    writer = open_database(config.database_url(), writer=True)
    reader = open_database(config.database_url(), writer=False)
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    messages = _documents()
    Store(writer).write([decode(t, json.dumps(d).encode(), "edge") for t, d in messages], now)
    results = [d for topic, d in messages if topic.endswith("/results")]
    record_outcomes(writer, _outcomes(results), "quality-lead", now)
    token = new_token(config.console.users_file, "vic")
    with console_in_process(config, reader, writer) as base:
        yield Console(base, token)
    close_clients()
    reader.dispose()
    writer.dispose()


def figures(html: str) -> dict[str, str]:
    return dict(re.findall(r'data-figure="([a-z-]+)">([^<]*)<', html))


def expected() -> dict[str, str]:
    """The figures counted here from the pairs themselves."""
    calls = [(a >= 0.5, b >= 0.4) for a, b in PAIRS]
    n = len(calls)
    both = sum(a and b for a, b in calls)
    only_a = sum(a and not b for a, b in calls)
    only_b = sum(b and not a for a, b in calls)
    rate_a, rate_b = (both + only_a) / n, (both + only_b) / n
    return {
        "studies": str(n), "partial": "1", "both": str(both), "engine-only": str(only_a),
        "other-only": str(only_b), "neither": str(n - both - only_a - only_b),
        "agreement": f"{100 * (n - only_a - only_b) / n:.1f} %",
        "rate-a": f"{100 * rate_a:.1f} %", "rate-b": f"{100 * rate_b:.1f} %",
        "rate-change": f"{100 * (rate_b - rate_a):+.1f} pp",
    }  # fmt: skip


def test_the_page_shows_the_comparison_counted_from_the_stored_rows(console: Console) -> None:
    client = login(console.base, "vic", PASSWORD)
    for params in ({"site": SITE}, {}):  # the site, and every site
        page = client.get("/monitoring", params=params)
        assert page.status_code == 200
        section = page.text[page.text.index('id="engine-comparison"') :]
        assert section.count("<article") == 1
        assert 'data-site="clinic-c" data-engine="1" data-other="2"' in section
        found = figures(section)
        assert {key: found[key] for key in expected()} == expected()
        assert "Outcomes known for 5 of these studies (2 cancers)" in section
        assert section.count("<circle") == len(PAIRS)
        assert "1.000 (" in section  # engine 1's sensitivity and AUC on its own cancers
        for topic, document in _documents():
            assert topic.endswith("/shadow") or document["accession"] not in page.text
            assert document["study_uid"] not in page.text


def test_the_metrics_api_carries_the_same_comparison(console: Console) -> None:
    token = {"Authorization": f"Bearer {console.token}"}
    answer = httpx.get(console.base + "/api/v1/metrics", params={"site": SITE}, headers=token,
                       timeout=30)  # fmt: skip
    assert answer.status_code == 200
    [found] = answer.json()["comparisons"]
    want = expected()
    assert (found["engine"], found["other"], found["studies"], found["partial"]) == ("1", "2", 7, 1)
    assert [found[k] for k in ("both", "engine_only", "other_only", "neither")] == [
        int(want[k]) for k in ("both", "engine-only", "other-only", "neither")
    ]


def test_without_shadow_rows_there_is_nothing_to_compare(console: Console) -> None:
    client = login(console.base, "vic", PASSWORD)
    for params in ({"site": "clinic-n"}, {"engine": "3"}):
        page = client.get("/monitoring", params=params)
        assert page.status_code == 200
        assert 'class="comparison"' not in page.text
        assert re.search(
            r'id="no-comparison">No shadow scores (at clinic-n )?in the period', page.text
        )


def test_a_viewer_must_log_in_to_see_it(console: Console) -> None:
    answer = httpx.get(console.base + "/monitoring", params={"site": SITE}, timeout=30)
    assert answer.status_code == 303 and "engine-comparison" not in answer.text
