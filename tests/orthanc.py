"""Orthanc as the PACS: the Debian ``orthanc`` package on free DICOM and HTTP ports.

Each instance has its own configuration and storage folder, keeps them across a
stop and a start (a PACS outage), and is checked through its REST API.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from support import free_port, wait_for_port

BINARY = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
AE_TITLE = "ORTHANC"


@dataclass
class Orthanc:
    folder: Path
    dicom_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        config = self.folder / "orthanc.json"
        config.write_text(json.dumps({
            "Name": "edge-test-pacs",
            "StorageDirectory": str(self.folder / "storage"),
            "IndexDirectory": str(self.folder / "storage"),
            "DicomAet": AE_TITLE,
            "DicomPort": self.dicom_port,
            "HttpPort": self.http_port,
            "HttpBindAddress": "127.0.0.1",
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomCheckCalledAet": True,
            "Plugins": [],
        }))  # fmt: skip
        with (self.folder / "orthanc.log").open("ab") as log:
            self.process = subprocess.Popen([BINARY, str(config)], stdout=log, stderr=log)
        wait_for_port(self.http_port, timeout=30)
        wait_for_port(self.dicom_port, timeout=30)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=30)
            self.process = None

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=30) as r:
            body = r.read()
        return json.loads(body) if body[:1] in (b"{", b"[") else body

    def instances(self) -> list[dict[str, Any]]:
        """Every instance stored, with its DICOM tags (simplified, by keyword)."""
        return [
            {**self.get(f"/instances/{oid}/simplified-tags"), "_id": oid}
            for oid in self.get("/instances")
        ]

    def sr_instances(self) -> list[dict[str, Any]]:
        return [i for i in self.instances() if i.get("Modality") == "SR"]

    def file(self, orthanc_id: str) -> bytes:
        body = self.get(f"/instances/{orthanc_id}/file")
        assert isinstance(body, bytes)
        return body

    def wait_srs(self, count: int, timeout: float) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.sr_instances()
            if len(found) >= count:
                return found
            time.sleep(0.2)
        raise AssertionError(f"{count} SRs not in Orthanc within {timeout}s: {self.sr_instances()}")

    def destination(self, name: str = "pacs") -> dict[str, Any]:
        """Its entry in ``dicom.destinations``."""
        return {"name": name, "ae_title": AE_TITLE, "host": "127.0.0.1", "port": self.dicom_port}
