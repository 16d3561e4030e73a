"""Asking the boxes for what the hub misses: ``edge.resend/1`` for each open gap.

A gap is often only a result on its way (collectors of one group commit in
any order, a box replays after a reconnect), so a gap is asked for only once it
has been open ``mqtt.resend_after_s``, and then again, at doubling intervals up
to :data:`MAX_INTERVAL_S`, while it stays open. Only gaps of a device's current
epoch are asked for: an older epoch's results went with the box's old journal.
The box answers by sending them again, byte for byte; the store counts them in.

A stored result that said ``shadow_follows`` and whose companion (``edge.shadow/1``)
is not stored after the same wait is asked for the same way, for its own ``seq``:
the box sends the result again (counted as a re-delivery) and its companion.
"""

from __future__ import annotations

import logging
import time

from sqlalchemy import Connection, func, or_, select

from edge.delivery.protocol import ResendRequest, encode, resend_message
from edge.hub.database import utc_now
from edge.hub.link import SessionLink
from edge.hub.queries import Gap, find_gaps, missing_companions
from edge.hub.tables import devices

log = logging.getLogger(__name__)

#: how often the gaps are looked at
CHECK_EVERY_S = 2.0
#: the longest wait between two requests for the same gap
MAX_INTERVAL_S = 600.0
#: how far back results are searched for a missing companion (a day)
COMPANION_WINDOW_S = 86_400.0

GapKey = tuple[str, str, int, int, int, str]


class GapRepair:
    """The collector's re-send requests; :meth:`step` runs on its main thread."""

    def __init__(self, link: SessionLink, prefix: str, resend_after_s: float) -> None:
        self._link = link
        self._prefix = prefix
        self._after_s = resend_after_s
        self._next_check = 0.0
        #: results whose companion is missing, as last read, and when to read them again
        self._companions: list[Gap] = []
        self._next_companion_check = 0.0
        #: gap -> (when to ask next, the interval after that)
        self._asked: dict[GapKey, tuple[float, float]] = {}

    def due(self) -> bool:
        return time.monotonic() >= self._next_check

    def step(self, connection: Connection) -> int:
        """Ask for every current gap that is due; how many requests went out."""
        self._next_check = time.monotonic() + CHECK_EVERY_S
        gaps = [
            gap
            for site, device, epoch in devices_to_search(connection)
            for gap in find_gaps(connection, site=site, device=device)
            if gap.epoch == epoch
        ]
        gaps += self._missing_companions(connection)
        open_keys = {_key(gap) for gap in gaps}
        self._asked = {key: value for key, value in self._asked.items() if key in open_keys}
        return sum(self._ask(gap) for gap in gaps if self._is_due(gap))

    def _missing_companions(self, connection: Connection) -> list[Gap]:
        """The results missing their companion, read again every ``resend_after_s`` (at
        least :data:`CHECK_EVERY_S`): it reads a day of results, which a missing result
        range does not need, and nothing about a companion is asked sooner anyway."""
        if time.monotonic() >= self._next_companion_check:
            self._next_companion_check = time.monotonic() + max(CHECK_EVERY_S, self._after_s)
            self._companions = missing_companions(
                connection, now=utc_now(), window_s=COMPANION_WINDOW_S
            )
        return self._companions

    def _is_due(self, gap: Gap) -> bool:
        asked = self._asked.get(_key(gap))
        if asked is not None:
            return time.monotonic() >= asked[0]
        if gap.since is None:
            return True
        age = (utc_now() - gap.since).total_seconds()
        return age >= self._after_s

    def _ask(self, gap: Gap) -> bool:
        request = ResendRequest(gap.site, gap.device, gap.first, gap.last, "gap")
        topic = f"{self._prefix}/{gap.site}/{gap.device}/resend"
        if not self._link.publish(topic, encode(resend_message(request))):
            return False
        previous = self._asked.get(_key(gap))
        interval = self._after_s if previous is None else min(previous[1] * 2, MAX_INTERVAL_S)
        self._asked[_key(gap)] = (time.monotonic() + interval, interval)
        log.info("%s/%s: asked for seq %d..%d again (epoch %d%s)",
                 gap.site, gap.device, gap.first, gap.last, gap.epoch,
                 ", its companion" if gap.what == "shadow" else "")  # fmt: skip
        return True


def devices_to_search(connection: Connection) -> list[tuple[str, str, int]]:
    """The devices whose current epoch may have a gap, with that epoch.

    Only those are searched (each through its own index range): every seq up to
    ``confirmed_seq`` is stored, so a device confirmed up to its ``max_seq`` and not
    announcing a newer seq has none. Searching every result instead would scan the
    whole table every :data:`CHECK_EVERY_S`, a second's work at a million results.
    """
    confirmed = func.coalesce(devices.c.confirmed_seq, 0)
    query = select(devices.c.site, devices.c.device, devices.c.epoch).where(
        or_(confirmed < devices.c.max_seq, devices.c.device_last_seq > devices.c.max_seq)
    )
    return [(row.site, row.device, row.epoch) for row in connection.execute(query)]


def _key(gap: Gap) -> GapKey:
    return (gap.site, gap.device, gap.epoch, gap.first, gap.last, gap.what)
