"""The configuration of the DICOM receiver (``receiver:``), beside :mod:`edge.config`.

Validated like every section: an AE title as DICOM defines it, IP addresses that
are addresses (a host name is refused rather than resolved at some later moment),
at least one registered sender, and TLS with a certificate and its key.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator

from edge.common.model import StrictModel

#: an AE title (PS3.5 6.2, VR AE): 1-16 characters of printable ASCII but the backslash,
#: not only spaces
_AE_TITLE = re.compile(r"^(?=.*[^ ])[\x20-\x5b\x5d-\x7e]{1,16}$")


def _ae_title(value: str) -> str:
    if not _AE_TITLE.match(value):
        raise ValueError(
            "an AE title is 1-16 characters of printable ASCII, no backslash, not all spaces"
        )
    return value.strip()


def _ip_address(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError(
            "must be an IP address (the address the sender connects from, as "
            "10.0.0.21 or fd00::21); a host name is not resolved"
        ) from None


class AllowedSender(StrictModel):
    ae_title: str = Field(description="The sender's calling AE title.")
    host: str = Field(description="The IP address the sender connects from.")

    _check_ae = field_validator("ae_title")(_ae_title)
    _check_host = field_validator("host")(_ip_address)


class ReceiverTlsConfig(StrictModel):
    cert_file: Path = Field(description="The receiver's certificate (PEM), with its chain.")
    key_file: Path = Field(description="The receiver's private key (PEM).")
    ca_file: Path | None = Field(
        None,
        description="CA bundle that signed the senders' certificates: when set, a sender "
        "must present a certificate it signed (mutual TLS).",
    )


class ReceiverConfig(StrictModel):
    ae_title: str = Field(
        "EDGE_AI", description="The called AE title senders must address; others are refused."
    )
    port: Annotated[int, Field(ge=1, le=65535)] = Field(
        11112,
        description="TCP port of the storage SCP. Below 1024 (104) the service needs "
        "CAP_NET_BIND_SERVICE (docs/receiver.md).",
    )
    bind: str = Field("0.0.0.0", description="Address to listen on (:: for IPv6).")
    allowed: Annotated[tuple[AllowedSender, ...], Field(min_length=1)] = Field(
        description="Calling AE title and source address of every sender; others are refused."
    )
    max_associations: Annotated[int, Field(ge=1, le=64)] = Field(
        4, description="Associations served at once; more are refused (local limit exceeded)."
    )
    timeout_s: Annotated[float, Field(gt=0, le=3600)] = Field(
        60.0,
        description="An association silent this long (ACSE, DIMSE and network) is aborted.",
    )
    tls: ReceiverTlsConfig | None = None

    _check_ae = field_validator("ae_title")(_ae_title)
    _check_bind = field_validator("bind")(_ip_address)
