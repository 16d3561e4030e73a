"""Real DICOM senders for the receiver's tests: dcmtk's storescu and a pynetdicom SCU.

- :func:`storescu`: dcmtk's command-line sender, as a modality's export would run it.
- :class:`Sender`: one association of a pynetdicom SCU that records the status of
  every C-STORE, as a PACS router does to decide what to send again.
- :func:`receiver_settings`: the ``receiver:`` section, the test's sender registered.
"""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless
from pynetdicom import AE
from pynetdicom.association import Association

from edge.dicom.contexts import STORAGE_SOP_CLASSES, VERIFICATION

CALLING = "MAMMO1"
CALLED = "EDGE_AI"


def dcmtk(tool: str) -> str | None:
    """The path of dcmtk's ``tool``, not pynetdicom's console script of the same name.

    pynetdicom installs ``storescu``, ``storescp``, ``echoscu``... into the virtual
    environment's ``bin``, which ``scripts/test`` puts first on PATH.
    """
    venv_bin = Path(sys.prefix) / "bin"
    folders = [f for f in os.environ.get("PATH", "").split(os.pathsep) if Path(f) != venv_bin]
    return shutil.which(tool, path=os.pathsep.join(folders))


needs_dcmtk = pytest.mark.skipif(
    dcmtk("storescu") is None or dcmtk("echoscu") is None,
    reason="dcmtk's storescu and echoscu not installed (scripts/bootstrap installs dcmtk)",
)


def receiver_settings(port: int, **overrides: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "ae_title": CALLED,
        "port": port,
        "bind": "127.0.0.1",
        "allowed": [
            {"ae_title": CALLING, "host": "127.0.0.1"},
            {"ae_title": "MAMMO2", "host": "10.0.0.22"},
        ],
        "max_associations": 4,
    }
    return {**settings, **overrides}


def storescu(
    port: int, files: list[Path], *, calling: str = CALLING, called: str = CALLED
) -> subprocess.CompletedProcess[str]:
    """Send ``files`` in one association, proposing RLE (as the sample files are)."""
    return subprocess.run(
        [str(dcmtk("storescu")), "-aet", calling, "-aec", called, "-xr", "127.0.0.1", str(port)]
        + [str(path) for path in files],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


class Sender:
    """One association from a pynetdicom SCU; ``statuses`` maps SOP Instance UID -> status."""

    def __init__(
        self,
        port: int,
        *,
        calling: str = CALLING,
        called: str = CALLED,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        ae = AE(ae_title=calling)
        for sop_class in STORAGE_SOP_CLASSES.values():
            # One context per compressed syntax: the receiver accepts one syntax a context.
            ae.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
            ae.add_requested_context(sop_class, RLELossless)
        ae.add_requested_context(VERIFICATION)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
        self.statuses: dict[str, int | None] = {}
        self.assoc: Association = ae.associate(
            "127.0.0.1", port, ae_title=called, tls_args=None if tls is None else (tls, "localhost")
        )
        # pynetdicom drops its socket unclosed when the peer vanished (its shutdown()
        # raises first); held here, it is closed by close().
        transport = self.assoc.dul.socket
        self._raw = None if transport is None else transport.socket

    @property
    def established(self) -> bool:
        return bool(self.assoc.is_established)

    def send(self, path: Path) -> int | None:
        """C-STORE one file; its status, or None when no response came."""
        dataset = pydicom.dcmread(path)
        try:
            answer = self.assoc.send_c_store(dataset)
        except (RuntimeError, ValueError):  # the association went away meanwhile
            answer = None
        status = int(answer.Status) if answer is not None and "Status" in answer else None
        self.statuses[str(dataset.SOPInstanceUID)] = status
        return status

    def echo(self) -> int | None:
        answer = self.assoc.send_c_echo()
        return int(answer.Status) if "Status" in answer else None

    def close(self) -> None:
        """Release the association; after a rejection or an abort, close its socket."""
        if self.assoc.is_established:
            self.assoc.release()
        if self._raw is not None:
            self._raw.close()


def sop_uids(files: list[Path]) -> set[str]:
    return {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in files}
