"""The result stream and the confirmation messages, on a real journal (no broker needed)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from journal_builders import four_views, journalled, score_all, study_result
from jsonschema import Draft202012Validator

from edge.delivery import protocol
from edge.delivery.stream import ResultStream, packet_size
from edge.journal import Journal
from edge.journal.retention import Retention
from edge.mqtt import Backoff

SCHEMAS = Path(__file__).parents[1] / "edge" / "schemas"


def journal_with(tmp_path: Path, count: int) -> Journal:
    journal = Journal.open(tmp_path, device="box-1")
    for index in range(count):
        scores = four_views(tmp_path, f"1.2.{index}")
        score_all(journal, scores)
        journalled(journal, study_result(scores))
    return journal


def stream_on(journal: Journal, *, by_hub: bool, window: int = 20) -> ResultStream:
    stream = ResultStream(
        journal, by_hub=by_hub, max_in_flight=window, retry=Backoff(0.0, 0.0, random.Random(1))
    )
    stream.restart(receive_maximum=65535, max_packet=None, confirmed_seq=0)
    return stream


def send_all(stream: ResultStream, first_mid: int = 1) -> list[tuple[int, int]]:
    """(mid, seq) of everything the stream hands out now."""
    sent = []
    mid = first_mid
    while (row := stream.peek(now=1e12)) is not None:
        stream.sent(mid, row)
        sent.append((mid, row.seq))
        mid += 1
    return sent


def test_a_refused_result_is_retried_alone_then_the_stream_goes_on_in_order(
    tmp_path: Path,
) -> None:
    journal = journal_with(tmp_path, 3)
    stream = stream_on(journal, by_hub=True)
    sent = send_all(stream)
    assert [seq for _, seq in sent] == [1, 2, 3]
    stream.refused(1, "not authorized")
    for mid in (2, 3):
        row = stream.acked(mid)
        assert row is not None
        journal.acknowledge(row.entry)
    assert stream.refusal is not None and stream.refusal.seq == 1
    # Alone: seq 1 and nothing else until the broker takes it.
    assert [seq for _, seq in send_all(stream, 10)] == [1]
    stream.acked(10)
    assert stream.refusal is None
    # Then on in order: 2 and 3 again, so that the hub sees them after 1.
    assert [seq for _, seq in send_all(stream, 20)] == [2, 3]
    journal.close()


def test_with_the_broker_confirming_an_accepted_result_is_not_sent_again(tmp_path: Path) -> None:
    journal = journal_with(tmp_path, 3)
    stream = stream_on(journal, by_hub=False)
    send_all(stream)
    stream.refused(1, "quota exceeded")
    for mid in (2, 3):
        row = stream.acked(mid)
        assert row is not None
        journal.acknowledge(row.entry)
    assert [seq for _, seq in send_all(stream, 10)] == [1]
    stream.acked(10)
    assert send_all(stream, 20) == []
    journal.close()


def test_the_window_follows_the_brokers_receive_maximum(tmp_path: Path) -> None:
    journal = journal_with(tmp_path, 3)
    stream = stream_on(journal, by_hub=True)
    stream.restart(receive_maximum=1, max_packet=None, confirmed_seq=0)
    assert stream.window == 1
    assert [seq for _, seq in send_all(stream)] == [1]
    stream.acked(1)
    assert [seq for _, seq in send_all(stream, 2)] == [2]
    journal.close()


def test_a_result_over_the_brokers_packet_size_is_held_never_skipped(tmp_path: Path) -> None:
    journal = journal_with(tmp_path, 2)
    stream = stream_on(journal, by_hub=True)
    row = journal.sendable_after(0, replay=None, limit=1)[0]
    limit = packet_size(row.topic, row.payload) - 1
    stream.restart(receive_maximum=20, max_packet=limit, confirmed_seq=0)
    assert send_all(stream) == []
    assert stream.too_large is not None and stream.too_large.seq == 1
    journal.close()


def test_confirmed_results_are_not_replayed_and_unconfirmed_ones_are_kept(
    tmp_path: Path,
) -> None:
    journal = journal_with(tmp_path, 4)
    for row in journal.outbox_after(0):
        journal.acknowledge(row.entry)
    assert not journal.confirm(2, "not-its-id")  # another numbering's confirmation
    assert journal.confirm(2, "id-2")
    assert not journal.confirm(1, "id-1")  # no news
    state = journal.unconfirmed()
    assert (state.last_seq, state.confirmed_seq, state.count) == (4, 2, 2)
    stream = stream_on(journal, by_hub=True)
    stream.restart(receive_maximum=20, max_packet=None, confirmed_seq=2)
    assert [seq for _, seq in send_all(stream)] == [3, 4]
    stream.rewind(1, 2)  # the hub asks for what it had confirmed, e.g. after a restore
    assert [seq for _, seq in send_all(stream, 10)] == [1, 2]
    # Retention keeps seq 3, delivered to the broker long ago, while the hub has not
    # confirmed it (seq 4 is the newest, which is always kept).
    forgotten = Retention(journal, 1e-9, keep_unconfirmed=True).run_pass()
    assert [r.seq for r in journal.recent_results()] == [4, 3]
    assert forgotten.results == 2
    journal.close()


def test_a_request_after_the_connects_replay_sends_its_range_alone(tmp_path: Path) -> None:
    journal = journal_with(tmp_path, 5)
    stream = stream_on(journal, by_hub=True)
    for mid, _seq in send_all(stream):  # the connect's replay: everything unconfirmed
        row = stream.acked(mid)
        assert row is not None
        journal.acknowledge(row.entry)
    assert send_all(stream, 10) == []
    stream.rewind(2, 3)  # an operator's edge hub resend --seq 2-3
    assert [seq for _, seq in send_all(stream, 20)] == [2, 3]
    for mid in (20, 21):
        stream.acked(mid)
    stream.rewind(5, None)  # a gap at the newest
    assert [seq for _, seq in send_all(stream, 30)] == [5]
    journal.close()


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("hello", protocol.hello_message(protocol.Hello("clinic-1", "box-1", 5, 3, 2))),
        (
            "confirm",
            protocol.confirm_message(protocol.Confirmation("clinic-1", "box-1", 3, "a" * 32, 1)),
        ),
        (
            "resend",
            protocol.resend_message(protocol.ResendRequest("clinic-1", "box-1", 4, None, "gap")),
        ),
    ],
)
def test_each_message_matches_its_json_schema_and_reads_back(
    name: str, message: dict[str, object]
) -> None:
    schema = json.loads((SCHEMAS / f"{name}.schema.json").read_text())
    Draft202012Validator.check_schema(schema)
    Draft202012Validator(schema).validate(message)
    parse = {
        "hello": protocol.parse_hello,
        "confirm": protocol.parse_confirmation,
        "resend": protocol.parse_resend,
    }[name]
    parsed = parse(protocol.encode(message))
    assert parsed.site == "clinic-1"


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b'{"schema": "edge.confirm/1"}',
        b'{"schema": "edge.confirm/1", "site": "s", "device": "d", "seq": 0, "id": "x"}',
        b'{"schema": "edge.result/1", "seq": 3}',
    ],
)
def test_a_confirmation_the_box_cannot_read_is_refused(payload: bytes) -> None:
    with pytest.raises(protocol.ProtocolError):
        protocol.parse_confirmation(payload)
