"""Which engine serves, and the switch to a new one that never stops the serving one.

A switch is asked for by ``systemctl reload`` (SIGHUP) or by a change of the
engine store's ``current`` pointer (``edge engines activate`` or ``rollback``).
The engine that should serve then loads, warms up and passes its self-test on a
thread of its own, beside the serving engine, which keeps scoring. Once it is
ready, new studies are bound to it and it becomes current; the previous engine
finishes the studies it started and closes (:class:`~edge.pipeline.infer.
InferenceWorker`). A failed load leaves the serving engine serving, and is
logged, counted and reported in health's ``engine.last_activation``.

The same loader keeps the shadow engine (:mod:`edge.engines.shadow`) as the store's
``shadow`` pointer names it, after the serving engine: an activation of the engine
that scores in shadow takes it, loaded and warm, instead of loading it again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from edge.common.clock import now_iso
from edge.config import Config
from edge.engines.engine import Engine
from edge.engines.serving import ServingChoice, choose_serving, load_engine, same_model
from edge.engines.shadow import ShadowBudget, check_same_input, shadow_ref, shadow_text
from edge.engines.signing import load_public_key
from edge.engines.store import EngineRef, EngineStore, TrustPolicy
from edge.errors import EngineError
from edge.health.metrics import Metrics
from edge.types import EngineInfo

log = logging.getLogger(__name__)

#: how often the store's ``current`` pointer is read for a change
POINTER_CHECK_S = 1.0


class EngineHolder(Protocol):
    """What the switch needs of the inference worker (:class:`edge.pipeline.infer.
    InferenceWorker`): described here so that the engine package does not import the
    pipeline that imports it."""

    @property
    def engine(self) -> Engine: ...

    def add(self, engine: Engine) -> Engine: ...

    def make_current(self, info: EngineInfo) -> None: ...

    @property
    def shadow(self) -> Engine | None: ...

    def set_shadow(self, engine: Engine | None) -> None: ...

    def take_shadow(self, info: EngineInfo) -> Engine | None: ...

    def use_budget(self, budget: ShadowBudget, count: Callable[[str, int], None]) -> None: ...


class StudyBinder(Protocol):
    """What the switch needs of the study assembler (:class:`edge.pipeline.study.
    StudyAssembler`): binding the studies that start from now on to an engine."""

    def serve(self, engine: EngineInfo) -> None: ...


class EngineSwitch:
    """The thresholds of the engines that served, and switches to the store's current
    engine (the inference worker holds which one serves)."""

    def __init__(
        self, config: Config, store: EngineStore, metrics: Metrics, stopping: threading.Event
    ) -> None:
        self._config = config
        self._store = store
        self._metrics = metrics
        self._stopping = stopping
        #: where the serving engine came from (the store or ``engine.bundle``)
        self.origin = ""
        #: the last switch: when, to which version, and whether it worked (health)
        self.activation: dict[str, Any] | None = None
        self._thresholds: dict[EngineInfo, float] = {}
        self._requested = threading.Event()
        self._loader: threading.Thread | None = None
        self._pointer_seen: str | None = None
        self._shadow_seen: str | None = None
        #: the last change of the shadow engine: when, which, whether it worked (health)
        self.shadow_activation: dict[str, Any] | None = None
        self._next_pointer_check = 0.0
        self._infer: EngineHolder | None = None
        self._assembler: StudyBinder | None = None

    def load_first(self) -> Engine:
        """Load the engine that serves at start (raises EngineError when none can)."""
        self._pointer_seen = self._store.pointer_text()
        choice = choose_serving(self._config, self._store)
        engine = load_engine(self._config, self._store, choice.bundle)
        self.origin = choice.origin
        self._thresholds[engine.info] = engine.threshold
        return engine

    def attach(self, infer: EngineHolder, assembler: StudyBinder) -> None:
        """The stages a switch acts on, once the daemon has built them (a shadow engine
        named in the store loads at the first tick, beside the serving one, within the
        budget given to the worker here)."""
        self._infer, self._assembler = infer, assembler
        infer.use_budget(ShadowBudget(self._config.engine.shadow), self._metrics.count)

    def shadow_state(self) -> dict[str, Any]:
        """The shadow engine for health: ``version`` (None: none) and ``last_change``."""
        shadow = None if self._infer is None else self._infer.shadow
        return {
            "version": None if shadow is None else shadow.info.version,
            "last_change": self.shadow_activation,
        }

    def threshold_of(self, info: EngineInfo) -> float:
        """The suspicion threshold of an engine that served or serves."""
        return self._thresholds[info]

    def request(self) -> None:
        """Ask for a switch to the store's current engine (the SIGHUP handler)."""
        self._requested.set()

    def poll(self) -> None:
        """From the daemon's tick: notice a changed pointer, start a requested load."""
        now = time.monotonic()
        if now >= self._next_pointer_check:
            self._next_pointer_check = now + POINTER_CHECK_S
            text = self._store.pointer_text()
            if text != self._pointer_seen:
                self._pointer_seen = text
                log.info("engine store: current pointer changed to %s", (text or "none").strip())
                self._requested.set()
            shadow = shadow_text(self._store)
            if shadow != self._shadow_seen:
                self._shadow_seen = shadow
                log.info("engine store: shadow pointer is %s", (shadow or "none").strip())
                self._requested.set()
        if self._requested.is_set():
            self._start_load()

    @property
    def loading(self) -> bool:
        """An engine is being loaded beside the serving one."""
        return self._loader is not None and self._loader.is_alive()

    def join(self, timeout: float) -> None:
        """Wait for a load in progress (at shutdown)."""
        if self._loader is not None:
            self._loader.join(timeout=timeout)

    def _start_load(self) -> None:
        # One load at a time; a request arriving meanwhile stays set and runs after it.
        if self._loader is not None and self._loader.is_alive():
            return
        self._requested.clear()
        self._loader = threading.Thread(target=self._load, name="engine-load", daemon=True)
        self._loader.start()

    def _load(self) -> None:
        """Bring the serving engine, then the shadow engine, to what the store names."""
        self._load_serving()
        self._load_shadow()

    def _load_serving(self) -> None:
        """Load the engine that should serve beside the serving one, then switch to it."""
        assert self._infer is not None, "attach the stages first"
        serving = self._infer.engine
        try:
            choice = choose_serving(self._config, self._store)
            if same_model(choice.bundle, serving.info):
                log.info("engine %s already serving; nothing to switch", serving.info.version)
                return
            manifest = choice.bundle.manifest
            engine = self._take_shadow(choice.bundle.manifest.version, choice)
            if engine is None:
                log.info(
                    "loading engine %s %s beside %s",
                    manifest.name,
                    manifest.version,
                    serving.info.version,
                )
                engine = load_engine(self._config, self._store, choice.bundle)
        except EngineError as exc:
            self._failed(serving, f"{exc}; fix: {exc.fix}" if exc.fix else str(exc))
            return
        except Exception as exc:  # a failed activation must never stop the serving engine
            log.exception("engine activation failed unexpectedly")
            self._failed(serving, f"{type(exc).__name__}: {exc}")
            return
        if self._stopping.is_set():
            engine.close()
            return
        self._switch_to(engine, choice.origin)

    def _take_shadow(self, version: str, choice: ServingChoice) -> Engine | None:
        """The shadow engine, loaded and warm, when it is the engine that should serve."""
        assert self._infer is not None
        shadow = self._infer.shadow
        if shadow is None or not same_model(choice.bundle, shadow.info):
            return None
        log.info("engine %s scores in shadow: it serves now, with no reload", version)
        return self._infer.take_shadow(shadow.info)

    def _load_shadow(self) -> None:
        """Load the store's shadow engine beside the serving one, or stop shadowing."""
        assert self._infer is not None
        wanted, loaded = shadow_ref(self._store), self._infer.shadow
        current = self._store.current()
        if wanted is None or wanted == current:
            # Keep a shadow that is about to be activated (the pointers change in turn).
            if loaded is not None and not (current is not None and _is(loaded, current)):
                log.info("engine %s stops scoring in shadow", loaded.info.version)
                self._infer.set_shadow(None)
            return
        if loaded is not None and _is(loaded, wanted):
            return
        try:
            engine = self._shadow_engine(wanted)
        except Exception as exc:  # a candidate that fails to load never touches serving
            log.exception("shadow engine %s not loaded; serving goes on", wanted)
            self._metrics.count("errors")
            self._metrics.error("engine", f"shadow {wanted}: {exc}")
            self.shadow_activation = {"at": now_iso(), "ok": False, "error": str(exc)}
            return
        self._thresholds[engine.info] = engine.threshold
        self._infer.set_shadow(engine)
        log.info("engine %s %s now scores in shadow", engine.info.name, engine.info.version)
        self.shadow_activation = {"at": now_iso(), "version": engine.info.version, "ok": True}

    def _shadow_engine(self, ref: EngineRef) -> Engine:
        """Check, load, warm up and self-test ``ref`` as an activation does."""
        assert self._infer is not None
        trust = TrustPolicy([load_public_key(path) for path in self._config.engine.trusted_keys])
        bundle = self._store.load(ref, trust)
        check_same_input(self._infer.engine, bundle)
        if self._stopping.is_set():
            raise EngineError("stopping")
        return load_engine(self._config, self._store, bundle)

    def _switch_to(self, engine: Engine, origin: str) -> None:
        assert self._infer is not None and self._assembler is not None
        self._thresholds[engine.info] = engine.threshold
        kept = self._infer.add(engine)
        # Bind new studies first, then make it current: from here on no new study is
        # bound to the old engine, which closes once its open studies are published.
        previous = self._infer.engine
        self._assembler.serve(kept.info)
        self._infer.make_current(kept.info)
        self.origin = origin
        log.info(
            "engine %s %s now scores new studies; %s finishes the studies it started",
            kept.info.name,
            kept.info.version,
            previous.info.version,
        )
        self.activation = {"at": now_iso(), "version": kept.info.version, "ok": True}

    def _failed(self, serving: Engine, reason: str) -> None:
        log.error(
            "engine activation failed: %s; still serving %s %s",
            reason,
            serving.info.name,
            serving.info.version,
        )
        self._metrics.count("errors")
        self._metrics.error("engine", reason)
        self.activation = {"at": now_iso(), "ok": False, "error": reason}


def _is(engine: Engine, ref: EngineRef) -> bool:
    return (engine.info.name, engine.info.version) == (ref.name, ref.version)
