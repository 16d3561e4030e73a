"""The hub's side of the confirmations: what it confirms, and the gaps it sees, on SQLite
and PostgreSQL (where installed)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from hub_support import postgres_database, result_document
from sqlalchemy import Engine, text

from edge.delivery.protocol import Hello, encode, hello_message
from edge.hub.database import open_database
from edge.hub.messages import Record, decode
from edge.hub.queries import find_gaps
from edge.hub.store import Store

NOW = datetime(2025, 3, 1, 12, 0, 0)
BOX = ("clinic-1", "box-1")


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    url = f"sqlite:///{tmp_path / 'hub.db'}" if request.param == "sqlite" else postgres_database()
    instance = open_database(url, writer=True)
    yield instance
    instance.dispose()


def result(seq: int, **changes: object) -> Record:
    document = {**result_document(*BOX, seq), **changes}
    return decode("edge/clinic-1/box-1/results", json.dumps(document).encode(), "edge")


def hello(last_seq: int) -> Record:
    payload = encode(hello_message(Hello(*BOX, last_seq=last_seq, confirmed_seq=0, unconfirmed=0)))
    return decode("edge/clinic-1/box-1/hello", payload, "edge")


def spans(engine: Engine) -> list[tuple[int, int]]:
    with engine.connect() as connection:
        return [(gap.first, gap.last) for gap in find_gaps(connection)]


def test_the_confirmation_covers_only_what_is_stored_from_seq_1_on(engine: Engine) -> None:
    store = Store(engine)
    report = store.write([result(1), result(2), result(4)], NOW)
    confirmation = report.confirms[BOX]
    assert confirmation is not None
    assert (confirmation.seq, confirmation.id, confirmation.epoch) == (
        2, result_document(*BOX, 2)["id"], 1,
    )  # fmt: skip
    assert store.write([result(3)], NOW).confirms[BOX].seq == 4  # type: ignore[union-attr]
    assert store.write([result(3)], NOW).confirms[BOX].seq == 4  # type: ignore[union-attr]


def test_nothing_is_confirmed_before_seq_1_arrives(engine: Engine) -> None:
    assert Store(engine).write([result(2)], NOW).confirms == {BOX: None}


def test_the_boxs_last_seq_makes_a_lost_last_result_a_gap(engine: Engine) -> None:
    store = Store(engine)
    store.write([result(1), result(2)], NOW)
    report = store.write([hello(3)], NOW)
    assert report.confirms[BOX] is not None and report.confirms[BOX].seq == 2
    assert spans(engine) == [(3, 3)]
    store.write([result(3)], NOW)
    assert spans(engine) == []


def test_a_hub_database_of_an_earlier_version_gets_the_new_columns(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    first = open_database(url, writer=True)
    with first.begin() as connection:
        for column in ("confirmed_seq", "device_last_seq", "device_last_seq_at"):
            connection.execute(text(f"ALTER TABLE devices DROP COLUMN {column}"))
    first.dispose()
    again = open_database(url, writer=True)
    Store(again).write([result(1), hello(1)], NOW)
    again.dispose()
