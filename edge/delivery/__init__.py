"""Delivery to the hub: the confirmation protocol and the result stream behind the outbox."""
