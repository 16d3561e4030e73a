"""The engine the daemon would load: present, verified, and passing its self-test."""

from __future__ import annotations

from edge.config import Config
from edge.doctor.check import Check
from edge.engines.bundle import load_bundle
from edge.engines.selftest import run_selftest
from edge.errors import EngineError
from edge.runtimes import registry


def check_engine(config: Config) -> Check:
    """Every file of the bundle against the sha256 its manifest gives."""
    folder = config.engine.bundle
    try:
        bundle = load_bundle(folder)
    except EngineError as exc:
        return Check(
            "engine",
            False,
            str(exc),
            "copy the engine bundle again from its release: its files must match manifest.yaml",
        )
    manifest = bundle.manifest
    return Check(
        "engine",
        True,
        f"{manifest.name} {manifest.version} in {folder}: every file matches its sha256",
    )


def check_selftest(config: Config) -> Check:
    """Run the bundle's self-test set on the backend the daemon would choose."""
    fix = "reinstall the engine; if it fails again, report the line above to the vendor"
    try:
        bundle = load_bundle(config.engine.bundle)
        name = registry.choose(config.engine.backend)
        backend = registry.create(name, bundle, threads=config.engine.threads)
    except EngineError as exc:
        return Check("selftest", False, str(exc), fix)
    try:
        result = run_selftest(bundle, backend)
    except EngineError as exc:
        return Check("selftest", False, str(exc), fix)
    finally:
        backend.close()
    return Check(
        "selftest",
        True,
        f"{result.count} self-test inputs on {result.backend}: largest difference "
        f"{result.max_abs_diff:.2g}, tolerance {result.tolerance:g}",
    )
