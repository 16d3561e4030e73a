"""Which devices the gap check searches: only those whose confirmation lags."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from hub_support import result_document

from edge.hub.database import open_database
from edge.hub.messages import Record, decode
from edge.hub.queries import find_gaps
from edge.hub.repair import devices_to_search
from edge.hub.store import Store

NOW = datetime(2025, 3, 1, 12, 0, 0)


def _result(site: str, seq: int, **changes: Any) -> Record:
    document = {**result_document(site, "box", seq), **changes}
    return decode(f"edge/{site}/box/results", json.dumps(document).encode(), "edge")


def test_only_devices_with_a_gap_in_their_current_epoch_are_searched(tmp_path: Path) -> None:
    engine = open_database(f"sqlite:///{tmp_path / 'hub.db'}", writer=True)
    store = Store(engine)
    store.write([_result("whole", seq) for seq in (1, 2, 3)], NOW)
    store.write([_result("holed", seq) for seq in (1, 2, 4)], NOW)
    store.write([_result("mended", seq) for seq in (1, 3)], NOW)
    store.write([_result("mended", 2)], NOW)
    # Journal wiped: the old numbering's gap stays on record, the new one is whole.
    store.write([_result("wiped", seq) for seq in (1, 3)], NOW)
    store.write([_result("wiped", seq, id=f"{seq:032x}") for seq in (1, 2)], NOW)
    with engine.connect() as connection:
        searched = devices_to_search(connection)
        current = {(g.site, g.epoch) for g in find_gaps(connection)}
    engine.dispose()
    assert searched == [("holed", "box", 1)]
    assert current == {("holed", 1), ("wiped", 1)}
