"""The engine the daemon would serve: present, verified, and passing its self-test.

The choice is the daemon's own (:func:`~edge.engines.serving.choose_serving`): the
engine store's current engine, else ``engine.bundle``; its files are checked
against their sha256 and, where keys are trusted, its signature.
"""

from __future__ import annotations

from edge.config import Config
from edge.doctor.check import Check
from edge.engines.bundle import Bundle
from edge.engines.commands import selftest_on_serving_backend, store_of
from edge.engines.serving import choose_serving
from edge.errors import EngineError

REINSTALL = (
    "install the engine again (edge engines install BUNDLE --activate), or copy the "
    "engine.bundle folder again from its release"
)


def check_engine(config: Config) -> tuple[Check, Bundle | None]:
    """The check, and the verified bundle for the self-test when it passed."""
    try:
        choice = choose_serving(config, store_of(config))
    except EngineError as exc:
        return Check("engine", False, str(exc), REINSTALL), None
    manifest = choice.bundle.manifest
    where = (
        f"the engine store's current engine ({config.engine_store_dir})"
        if choice.origin == "store"
        else f"engine.bundle {choice.bundle.path}"
    )
    detail = f"{manifest.name} {manifest.version}, {where}: every file matches its sha256"
    return Check("engine", True, detail), choice.bundle


def check_selftest(config: Config, bundle: Bundle) -> Check:
    """Run the bundle's self-test set on the backend the daemon would choose."""
    try:
        result = selftest_on_serving_backend(config)(bundle)
    except EngineError as exc:
        return Check(
            "selftest",
            False,
            str(exc),
            "install the engine again; if it fails again, send the line above to the vendor",
        )
    return Check(
        "selftest",
        True,
        f"{result.count} self-test inputs on {result.backend}: largest difference "
        f"{result.max_abs_diff:.2g}, tolerance {result.tolerance:g}",
    )
