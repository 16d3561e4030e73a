"""The engine the daemon would serve: present, verified, and passing its self-test.

The choice is the daemon's own (:func:`~edge.engines.serving.choose_serving`): the
engine store's current engine, else ``engine.bundle``; its files are checked
against their sha256 and, where keys are trusted, its signature.
"""

from __future__ import annotations

from edge.bundle.manifest import Bundle
from edge.config import Config
from edge.engines.commands import selftest_on_serving_backend, store_of
from edge.engines.serving import choose_serving
from edge.engines.store import EngineStore
from edge.errors import EngineError
from edge.tools.doctor.check import Check

REINSTALL = (
    "install the engine again (edge engines install BUNDLE --activate), or copy the "
    "engine.bundle folder again from its release"
)


def check_engine(config: Config) -> tuple[Check, Bundle | None]:
    """The check, and the verified bundle for the self-test when it passed."""
    store = store_of(config)
    try:
        choice = choose_serving(config, store)
        signature = _signature(store) if choice.origin == "store" else None
    except EngineError as exc:
        return Check("engine", False, str(exc), exc.fix or REINSTALL), None
    except OSError as exc:
        return Check(
            "engine",
            False,
            f"cannot read the engine: {exc}",
            f"let the service user read {config.engine_store_dir} and engine.bundle",
        ), None
    manifest = choice.bundle.manifest
    if signature is None:
        where = f"engine.bundle {choice.bundle.path}"
        signature = (
            "signature verified"
            if config.engine.trusted_keys
            else "no signature check (no engine.trusted_keys)"
        )
    else:
        where = f"the engine store's current engine ({store.root})"
    detail = f"{manifest.name} {manifest.version}, {where}: files match their sha256; {signature}"
    return Check("engine", True, detail), choice.bundle


def _signature(store: EngineStore) -> str:
    current = store.current()
    signer = store.describe(current).signed_by if current is not None else None
    return f"signed by {signer}" if signer else "installed unsigned (--allow-unsigned)"


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
