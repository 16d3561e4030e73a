"""The broker's ACL for a fleet: only a box publishes as that box; only the hub confirms.

mosquitto's ``acl_file`` grants per user name; each box has its own user (and
password, in the broker's ``password_file``), and the collectors share one. The
stanzas are written here, printed by ``edge hub acl``, and are the template in
docs/hub.md, so the documented ACL is the one the tests run a real broker with.
"""

from __future__ import annotations

#: what a box publishes, and what it reads (docs/messages.md)
BOX_WRITES = ("results", "shadow", "status", "health", "events", "hello")
BOX_READS = ("health/get", "confirm", "resend")
#: what the collector reads from every box, and what it sends them
HUB_READS = ("results", "shadow", "events", "hello", "health", "status")
HUB_WRITES = ("confirm", "resend", "health/get")


def box_acl(prefix: str, site: str, device: str, user: str) -> str:
    """The ``acl_file`` stanza of one box's broker user."""
    base = f"{prefix}/{site}/{device}"
    lines = [f"user {user}"]
    lines += [f"topic write {base}/{leaf}" for leaf in BOX_WRITES]
    lines += [f"topic read {base}/{leaf}" for leaf in BOX_READS]
    return "\n".join(lines) + "\n"


def hub_acl(prefix: str, user: str) -> str:
    """The ``acl_file`` stanza of the collectors' broker user."""
    lines = [f"user {user}"]
    lines += [f"topic read {prefix}/+/+/{leaf}" for leaf in HUB_READS]
    lines += [f"topic write {prefix}/+/+/{leaf}" for leaf in HUB_WRITES]
    return "\n".join(lines) + "\n"
