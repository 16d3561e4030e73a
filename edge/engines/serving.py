"""Which engine the daemon serves, and loading it.

The store's ``current`` engine serves when there is one. Until a first engine is
activated, ``engine.bundle`` from the configuration serves (how a fresh box or a
developer starts); it is signature-checked too when trusted keys are configured.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from edge.bundle.manifest import Bundle, load_bundle
from edge.config import Config
from edge.engines.engine import Engine
from edge.engines.signing import load_public_key, verify_bundle
from edge.engines.store import PLANS, EngineStore, TrustPolicy
from edge.errors import EngineError
from edge.types import EngineInfo

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServingChoice:
    bundle: Bundle
    #: where it comes from, for the log and health: ``store`` or ``bundle``
    origin: str


def choose_serving(config: Config, store: EngineStore) -> ServingChoice:
    """The bundle that should serve now, with its files (and signature) checked."""
    trusted = [load_public_key(path) for path in config.engine.trusted_keys]
    current = store.current()
    if current is not None:
        return ServingChoice(store.load(current, TrustPolicy(trusted)), "store")
    folder = config.engine.bundle
    if folder is None:
        raise EngineError(
            f"no engine to serve: the store {store.root} has no current engine and "
            "engine.bundle is not set (install one: edge engines install BUNDLE --activate)"
        )
    bundle = load_bundle(folder)
    if trusted:
        verify_bundle(folder, trusted)
    else:
        log.warning("engine.bundle %s is not signature-checked: no engine.trusted_keys", folder)
    return ServingChoice(bundle, "bundle")


def load_engine(config: Config, store: EngineStore, bundle: Bundle) -> Engine:
    """Load, warm up and self-test ``bundle`` on the configured backend."""
    return Engine.load(
        bundle,
        backend=config.engine.backend,
        threads=config.engine.threads,
        plan_cache=store.root / PLANS,
    )


def same_model(bundle: Bundle, info: EngineInfo) -> bool:
    manifest = bundle.manifest
    return (manifest.name, manifest.version, bundle.model_sha256) == (
        info.name,
        info.version,
        info.sha256,
    )
