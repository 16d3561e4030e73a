"""The one strict base for configuration models, and the checks every config shares.

Every section of the appliance's, the hub's and an engine bundle's configuration is
frozen and refuses unknown keys: a misspelt key fails at load with its path, rather
than being ignored and replaced by a default.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

_TOPIC_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class StrictModel(BaseModel):
    """A frozen pydantic model that refuses keys it does not declare."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def topic_segment(value: str) -> str:
    """Check that ``value`` can stand as one MQTT topic segment (a pydantic validator)."""
    if not _TOPIC_SEGMENT.match(value):
        raise ValueError(
            "must be 1-64 characters of letters, digits, '_', '.' or '-' "
            "(it is an MQTT topic segment: no '/', '+', '#' or spaces)"
        )
    return value


class TlsConfig(StrictModel):
    ca_file: Path | None = Field(None, description="CA bundle that signed the broker.")
    cert_file: Path | None = Field(None, description="Client certificate (PEM).")
    key_file: Path | None = Field(None, description="Client key (PEM).")
