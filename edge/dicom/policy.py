"""Who may open an association with the receiver, and the standard answer to those who may not.

The answers are the A-ASSOCIATE-RJ result, source and reason of PS3.8 9.3.4: a
sender that is not registered (its calling AE title, from its address) or that
calls another AE title is refused permanently, so that it does not retry in a
loop; one more association than ``max_associations`` is refused transiently
(local limit exceeded), so that it tries again later.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from edge.receiver_config import AllowedSender

#: (result, source, reason): rejected-permanent, by the DUL service user
CALLING_AE_TITLE_NOT_RECOGNIZED = (0x01, 0x01, 0x03)
CALLED_AE_TITLE_NOT_RECOGNIZED = (0x01, 0x01, 0x07)
#: rejected-transient, by the DUL service provider (presentation related)
LOCAL_LIMIT_EXCEEDED = (0x02, 0x03, 0x02)


@dataclass(frozen=True)
class Refusal:
    """Why an association is refused: a counted reason and the standard rejection."""

    reason: str
    result: int
    source: int
    diagnostic: int


@dataclass(frozen=True)
class Request:
    """What a sender's A-ASSOCIATE-RQ says about it."""

    called_ae_title: str
    calling_ae_title: str
    address: str
    #: associations the receiver serves now, this one included
    active: int


class SenderPolicy:
    """The receiver's AE title, the registered senders and the association limit."""

    def __init__(
        self, ae_title: str, allowed: Iterable[AllowedSender], max_associations: int
    ) -> None:
        self.ae_title = ae_title.strip()
        self._allowed = {(sender.ae_title.strip(), _address(sender.host)) for sender in allowed}
        self._titles = {title for title, _host in self._allowed}
        self.max_associations = max_associations

    def judge(self, request: Request) -> Refusal | None:
        """None when the association may go on, else the refusal to send."""
        calling = request.calling_ae_title.strip()
        if request.called_ae_title.strip() != self.ae_title:
            return Refusal("called_ae_title", *CALLED_AE_TITLE_NOT_RECOGNIZED)
        if (calling, _address(request.address)) not in self._allowed:
            reason = "host_not_allowed" if calling in self._titles else "calling_ae_title"
            return Refusal(reason, *CALLING_AE_TITLE_NOT_RECOGNIZED)
        if request.active > self.max_associations:
            return Refusal("too_many_associations", *LOCAL_LIMIT_EXCEEDED)
        return None


def _address(text: str) -> str:
    """An address in one spelling: an IPv4 peer seen through an IPv6 socket as itself."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return text
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)
