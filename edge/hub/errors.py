"""The hub's own failures."""

from __future__ import annotations

from edge.errors import EdgeError


class HubError(EdgeError):
    """The collector cannot do its job (broker refused a subscription, database unusable)."""
