"""The explicit registry of inference backends, with an ``auto`` choice.

Each backend module is imported only when it is asked for, so a machine without
TensorRT never imports it; its ``is_available()`` says why it cannot serve.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import cast

from edge.bundle.manifest import Bundle
from edge.errors import EngineError
from edge.runtimes.base import Backend, BackendFactory

log = logging.getLogger(__name__)

#: name -> (module, class)
BACKENDS: dict[str, tuple[str, str]] = {
    "tensorrt": ("edge.runtimes.tensorrt", "TensorRTBackend"),
    "onnxruntime": ("edge.runtimes.onnxruntime", "OnnxRuntimeBackend"),
}
#: the order ``auto`` tries them in
AUTO_ORDER = ("tensorrt", "onnxruntime")


def availability(name: str) -> tuple[bool, str]:
    """Whether backend ``name`` can serve on this machine, and why (not)."""
    module_name, _ = BACKENDS[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        return False, f"cannot import {module_name}: {exc}"
    check = cast(Callable[[], tuple[bool, str]], module.is_available)
    return check()


def choose(requested: str) -> str:
    """Resolve ``auto`` to a concrete backend name; check an explicit one is usable."""
    if requested != "auto":
        if requested not in BACKENDS:
            raise EngineError(f"unknown backend {requested!r}; known: {', '.join(BACKENDS)}")
        ok, why = availability(requested)
        if not ok:
            raise EngineError(f"backend {requested} is not available: {why}")
        return requested
    reasons = []
    for name in AUTO_ORDER:
        ok, why = availability(name)
        if ok:
            log.info("backend auto: %s (%s)", name, why)
            return name
        reasons.append(f"{name}: {why}")
        log.info("backend auto: %s not available: %s", name, why)
    raise EngineError("no inference backend is available: " + "; ".join(reasons))


def create(name: str, bundle: Bundle, *, threads: int, plan_cache: Path | None = None) -> Backend:
    module_name, class_name = BACKENDS[name]
    factory = cast(BackendFactory, getattr(importlib.import_module(module_name), class_name))
    return factory(bundle, threads=threads, plan_cache=plan_cache)
