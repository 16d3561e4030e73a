"""Each (site, engine)'s drift reference is its own first days, summed in one query."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

from sqlalchemy import Connection

from edge.hub.aggregates import add_counts
from edge.hub.config import MonitoringConfig
from edge.hub.console.monitoring import Selection, monitoring
from edge.hub.database import open_database
from edge.hub.tables import result_bins, result_days

START = date(2026, 1, 1)


def _day(connection: Connection, day: date, site: str, engine: str, bin_index: int) -> None:
    """Ten results of ``site`` and ``engine`` on ``day``, all in score bin ``bin_index``."""
    add_counts(connection, result_days, [{"day": day, "site": site, "engine": engine,
               "results": 10, "suspicious": 0, "incomplete": 0, "latency_ms_sum": 0.0,
               "latency_n": 0}])  # fmt: skip
    add_counts(connection, result_bins, [{"day": day, "site": site, "engine": engine,
               "kind": "score", "bin": bin_index, "count": 10}])  # fmt: skip


def test_groups_beginning_on_different_days_each_have_their_own_reference(
    tmp_path: Path,
) -> None:
    engine = open_database(f"sqlite:///{tmp_path / 'hub.db'}", writer=True)
    config = MonitoringConfig(reference_days=3)
    with engine.begin() as connection:
        for offset in range(10):
            day = START + timedelta(days=offset)
            # "a v1" begins on day 0 in bin 2, then moves to bin 9 from day 3.
            _day(connection, day, "a", "m 1", 2 if offset < 3 else 9)
            # "b v2" begins on day 5 in bin 4 and stays; "c v2" on day 5 too, in bin 6.
            if offset >= 5:
                _day(connection, day, "b", "m 2", 4)
                _day(connection, day, "c", "m 2", 6 if offset < 8 else 7)
    chosen = Selection(since=START + timedelta(days=8), until=START + timedelta(days=10))
    with engine.connect() as connection:
        view = monitoring(connection, chosen, config)
    engine.dispose()
    rows = {row.site: row for row in view.groups}
    assert rows["b"].psi == 0.0  # the same bin as its own first three days
    assert rows["a"].drift == "alarm" and rows["c"].drift == "alarm"
    # The reference: a's days 0-2 (bin 2), b's and c's days 5-7 (bins 4 and 6).
    reference = [0] * 20
    reference[2], reference[4], reference[6] = 30, 30, 30
    assert view.reference_histogram == reference
