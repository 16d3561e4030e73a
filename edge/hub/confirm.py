"""What the hub confirms to a box: the highest ``seq`` up to which it holds every result.

Moved up inside the transaction that stores the box's results, with the box's
``devices`` row locked, so that two collectors of one group never confirm past a
result neither has committed. The collector publishes it after the commit
(:mod:`edge.hub.collector`); the protocol is :mod:`edge.delivery.protocol`.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, select

from edge.delivery.protocol import Confirmation
from edge.hub.tables import results

#: results looked at per step while the confirmation moves up
PAGE = 500


def advance(
    connection: Connection, site: str, device: str, epoch: int, confirmed: int
) -> tuple[int, Confirmation | None]:
    """The new confirmed ``seq`` of the box's ``epoch``, from ``confirmed`` over the
    results now stored, and the confirmation to send (None while seq 1 is missing)."""
    numbering = _numbering(site, device, epoch)
    while True:
        seqs = connection.execute(
            select(results.c.seq)
            .where(*numbering, results.c.seq > confirmed)
            .order_by(results.c.seq)
            .limit(PAGE)
        ).scalars()
        taken = 0
        for seq in seqs:
            if seq != confirmed + 1:
                break
            confirmed, taken = seq, taken + 1
        if taken < PAGE:
            break
    if not confirmed:
        return 0, None
    result_id = connection.execute(
        select(results.c.id).where(*numbering, results.c.seq == confirmed)
    ).scalar_one()
    return confirmed, Confirmation(site, device, confirmed, result_id, epoch)


def _numbering(site: str, device: str, epoch: int) -> tuple[Any, ...]:
    """The WHERE clauses of the device's results in one epoch."""
    return (results.c.site == site, results.c.device == device, results.c.epoch == epoch)


def announced_last_seq(health: dict[str, Any]) -> int | None:
    """The box's own newest ``seq`` in its health (``journal.last_seq``), if it says."""
    journal = health.get("journal")
    value = journal.get("last_seq") if isinstance(journal, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None
