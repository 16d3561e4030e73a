"""The TensorRT plan cache: which compiled plan fits this box, and building one if none does.

A plan runs only on the TensorRT version and the GPU that built it (a driver or
JetPack upgrade breaks it: NVIDIA/TensorRT #2176, #3130). So a plan is stored
under a key made of exactly what it depends on: TensorRT version, compute
capability, device name, the sha256 of the ONNX it was built from, the largest
batch of its optimisation profile, and :data:`RECIPE`, the version of the build
settings below. Anything else is rebuilt.

The build runs in a child process (``python -m edge engines build-plan``): a
build that fails or crashes cannot leak GPU memory into the daemon, and its
progress display goes to the terminal while TensorRT's own error messages come
back in a report file. This module imports neither TensorRT nor CUDA.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edge.bundle.files import write_atomically
from edge.errors import EngineError

log = logging.getLogger(__name__)

#: bump when the build settings change (profile, flags), so old plans are not reused
RECIPE = "edge-plan/1"
#: a build that takes longer than this is considered hung
BUILD_TIMEOUT_S = 3600.0


@dataclass(frozen=True)
class PlanKey:
    """Everything a serialized plan depends on."""

    tensorrt_version: str
    compute_capability: str
    device_name: str
    onnx_sha256: str
    max_batch: int
    recipe: str = RECIPE

    def digest(self) -> str:
        """A stable file name: sha256 of the canonical JSON of every field, 32 hex digits."""
        canonical = json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:32]

    def device_digest(self) -> str:
        """Names the timing cache, which depends on TensorRT and the GPU but not the model."""
        text = f"{self.tensorrt_version}|{self.compute_capability}|{self.device_name}"
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class BuildRequest:
    """What the build child is asked to do (written as JSON, read by the child)."""

    onnx: str
    plan: str
    timing_cache: str
    report: str
    input_name: str
    sample_shape: tuple[int, ...]
    max_batch: int

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self)), encoding="utf-8")

    @classmethod
    def read(cls, path: Path) -> BuildRequest:
        data = json.loads(path.read_text(encoding="utf-8"))
        data["sample_shape"] = tuple(data["sample_shape"])
        return cls(**data)


@dataclass(frozen=True)
class PlanEntry:
    path: Path
    key: PlanKey
    onnx_name: str
    built_at: str
    size: int


class PlanCache:
    def __init__(self, root: Path) -> None:
        self.root = root

    def plan_path(self, key: PlanKey) -> Path:
        return self.root / f"{key.digest()}.plan"

    def timing_cache_path(self, key: PlanKey) -> Path:
        return self.root / f"timing-{key.device_digest()}.cache"

    def lookup(self, key: PlanKey) -> Path | None:
        """The cached plan for exactly ``key``, or None."""
        plan = self.plan_path(key)
        meta = _read_meta(plan.with_suffix(".json"))
        if plan.is_file() and meta is not None and meta.get("key") == asdict(key):
            return plan
        return None

    def discard(self, plan: Path) -> None:
        """Forget a cached plan (its metadata first, so a half-removed one is never used)."""
        plan.with_suffix(".json").unlink(missing_ok=True)
        plan.unlink(missing_ok=True)

    def entries(self) -> list[PlanEntry]:
        found = []
        for meta_path in sorted(self.root.glob("*.json")) if self.root.is_dir() else []:
            meta = _read_meta(meta_path)
            plan = meta_path.with_suffix(".plan")
            if meta is None or not plan.is_file():
                continue
            try:
                key = PlanKey(**meta["key"])
            except (KeyError, TypeError):
                continue
            found.append(
                PlanEntry(
                    plan,
                    key,
                    str(meta.get("onnx", "")),
                    str(meta.get("built_at", "")),
                    plan.stat().st_size,
                )
            )
        return found

    def build(
        self, key: PlanKey, onnx: Path, *, input_name: str, sample_shape: tuple[int, ...]
    ) -> Path:
        """Build the plan for ``key`` in a child process; return its path in the cache.

        Raises
        ------
        EngineError
            With TensorRT's own error messages when the build fails, or the child's
            exit status when it died before it could report.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="build-", dir=self.root) as scratch:
            work = Path(scratch)
            request = BuildRequest(
                onnx=str(onnx),
                plan=str(work / "plan"),
                timing_cache=str(self.timing_cache_path(key)),
                report=str(work / "report.json"),
                input_name=input_name,
                sample_shape=sample_shape,
                max_batch=key.max_batch,
            )
            request.write(work / "request.json")
            log.info("building a TensorRT plan for %s (%s); this takes minutes", onnx.name, key)
            code = _run_child(work / "request.json")
            _raise_on_failure(Path(request.report), code, onnx)
            target = self.plan_path(key)
            meta = {"key": asdict(key), "onnx": onnx.name, "built_at": _now()}
            write_atomically(target.with_suffix(".json"), json.dumps(meta, indent=1) + "\n")
            os.replace(request.plan, target)
        return target


def _run_child(request: Path) -> int:
    command = [sys.executable, "-m", "edge", "engines", "build-plan", "--request", str(request)]
    try:
        # stdout and stderr are inherited: the progress display reaches the terminal
        # (or the journal under systemd) as it happens.
        return subprocess.run(command, check=False, timeout=BUILD_TIMEOUT_S).returncode
    except subprocess.TimeoutExpired:
        raise EngineError(
            f"TensorRT plan build did not finish in {BUILD_TIMEOUT_S:.0f} s"
        ) from None


def _raise_on_failure(report_path: Path, code: int, onnx: Path) -> None:
    report = _read_meta(report_path)
    if report is not None and report.get("ok") and code == 0:
        return
    if report is None:
        how = f"signal {-code}" if code < 0 else f"exit code {code}"
        raise EngineError(f"TensorRT plan build for {onnx.name} died ({how}) before reporting")
    errors = [str(e) for e in report.get("errors", [])] or ["no error message from TensorRT"]
    raise EngineError(
        f"TensorRT plan build for {onnx.name} failed at {report.get('phase', '?')}: "
        + " | ".join(errors[-10:])
    )


def _read_meta(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
