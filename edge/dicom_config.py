"""The ``dicom`` section of the configuration: the CAD SR and where it is sent.

In its own module beside :mod:`edge.config`, which includes it as ``Config.dicom``;
documented in docs/dicom.md and systemd/config.example.yaml.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator, model_validator

from edge.common.model import StrictModel, topic_segment

_AE_TITLE = re.compile(r"^[ -\[\]-~]{1,16}$")  # PS3.5 AE VR: 16 printable characters, no '\\'


def _ae_title(value: str) -> str:
    if not _AE_TITLE.match(value) or not value.strip():
        raise ValueError("must be 1-16 printable characters without '\\' (a DICOM AE title)")
    return value


class DicomTlsConfig(StrictModel):
    ca_file: Path = Field(description="CA bundle that signed the destination's certificate.")
    cert_file: Path | None = Field(None, description="This box's certificate, if asked for.")
    key_file: Path | None = Field(None, description="This box's key (PEM).")
    server_name: str | None = Field(
        None, description="Host name the destination's certificate must name; none: not checked."
    )


class DicomDestination(StrictModel):
    name: str = Field(description="Name in health, events and edge status; a topic segment.")
    ae_title: str = Field(description="The destination's (called) AE title.")
    host: str = Field(description="Host name or address of the PACS.")
    port: Annotated[int, Field(ge=1, le=65535)] = Field(description="Its DICOM port.")
    tls: DicomTlsConfig | None = Field(None, description="DICOM TLS; none: plain TCP.")
    timeout_s: Annotated[float, Field(gt=0, le=600)] = Field(
        30.0, description="Connect, association and C-STORE response timeout."
    )

    _check_name = field_validator("name")(topic_segment)
    _check_ae = field_validator("ae_title")(_ae_title)


class SrConfig(StrictModel):
    enabled: bool = Field(True, description="Build a Mammography CAD SR for every study result.")
    folder: Path | None = Field(
        None, description="Also write each SR into this folder, for a PACS that imports one."
    )


class DicomConfig(StrictModel):
    ae_title: str = Field("EDGE", description="This box's calling AE title.")
    sr: SrConfig = SrConfig()
    destinations: tuple[DicomDestination, ...] = Field(
        (), description="Where each SR is sent by C-STORE, each with its own queue."
    )
    retry_min_s: Annotated[float, Field(gt=0, le=3600)] = Field(
        1.0, description="First retry delay of a failed send; doubles per failure, with jitter."
    )
    retry_max_s: Annotated[float, Field(gt=0, le=86400)] = Field(
        300.0, description="Cap of the retry delay."
    )

    _check_ae = field_validator("ae_title")(_ae_title)

    @model_validator(mode="after")
    def _distinct(self) -> DicomConfig:
        names = [d.name for d in self.destinations]
        if len(names) != len(set(names)):
            raise ValueError("dicom.destinations: every destination needs its own name")
        if self.retry_max_s < self.retry_min_s:
            raise ValueError("dicom.retry_max_s must not be below dicom.retry_min_s")
        return self

    @property
    def active(self) -> bool:
        """An SR is built only when it goes somewhere."""
        return self.sr.enabled and bool(self.destinations or self.sr.folder)

    def resolved(self, resolve: Callable[[Path], Path]) -> DicomConfig:
        """The section with its paths made absolute by ``resolve``."""
        folder = None if self.sr.folder is None else resolve(self.sr.folder)
        return self.model_copy(
            update={
                "sr": self.sr.model_copy(update={"folder": folder}),
                "destinations": tuple(_resolved(d, resolve) for d in self.destinations),
            }
        )


def _resolved(destination: DicomDestination, resolve: Callable[[Path], Path]) -> DicomDestination:
    tls = destination.tls
    if tls is None:
        return destination
    files = {
        name: resolve(getattr(tls, name))
        for name in ("ca_file", "cert_file", "key_file")
        if getattr(tls, name) is not None
    }
    return destination.model_copy(update={"tls": tls.model_copy(update=files)})
