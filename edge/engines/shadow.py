"""A candidate engine scoring in shadow beside the serving one, and its budget.

``edge engines shadow VERSION`` checks and self-tests an installed engine as an
activation does, then names it in the store's ``shadow`` pointer; the daemon loads
it beside the serving engine as a hot swap would (:mod:`edge.engines.switch`). The
inference worker then scores each image with it after the serving engine, on the
same model input: its scores travel in the result's ``shadow`` object and never
change the serving score or ``suspicious``. Activating the shadow engine makes the
daemon serve the loaded, warm engine (no reload) and stops the shadowing.

On a box without a GPU the two engines share the same cores, so the shadow has a
budget (``engine.shadow``): only while no other image waits for the serving engine,
and at most ``max_share`` of the worker's recent inference time. What it skips is
counted, and each study says how many of its images went unscored.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict, deque
from dataclasses import dataclass

from edge.bundle.files import write_atomically
from edge.bundle.manifest import Bundle
from edge.config import ShadowConfig
from edge.engines.engine import Engine
from edge.engines.store import EngineRef, EngineStore, SelfTest, StepReport, TrustPolicy
from edge.errors import EngineError

log = logging.getLogger(__name__)

#: the store's pointer file naming the engine that scores in shadow
SHADOW = "shadow"
#: batches over which the shadow's share of inference time is measured
SHARE_WINDOW = 64
#: studies whose admission is remembered (far more than are ever open at once)
STUDIES_REMEMBERED = 1000


# -- the store's ``shadow`` pointer -----------------------------------------------------------


def shadow_ref(store: EngineStore) -> EngineRef | None:
    """The engine named to score in shadow, if any."""
    text = shadow_text(store)
    return None if not text or not text.strip() else EngineRef.parse(text.strip())


def shadow_text(store: EngineStore) -> str | None:
    """The raw pointer, for the daemon's cheap change check."""
    try:
        return (store.root / SHADOW).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def set_shadow(
    store: EngineStore, ref: EngineRef, trust: TrustPolicy, selftest: SelfTest, report: StepReport
) -> None:
    """Check and self-test ``ref`` as an activation does, then name it the shadow engine.

    Raises
    ------
    EngineError
        When ``ref`` is the current engine, or a check fails (``StepFailed``).
    """
    with store.locked():
        if store.current() == ref:
            raise EngineError(f"{ref} is the current engine; shadow a candidate beside it")
        bundle = store.load(ref, trust)
        report("sha256", f"{len(bundle.manifest.files)} files match")
        result = selftest(bundle)
        report("self-test", f"max |difference| {result.max_abs_diff:.3g} <= {result.tolerance:g}")
        write_atomically(store.root / SHADOW, f"{ref}\n")
    log.info("engine %s named to score in shadow", ref)


def clear_shadow(store: EngineStore) -> EngineRef | None:
    """Stop shadowing; return the engine that was named."""
    with store.locked():
        ref = shadow_ref(store)
        (store.root / SHADOW).unlink(missing_ok=True)
    return ref


def check_same_input(serving: Bundle | Engine, shadow: Bundle) -> None:
    """A shadow engine scores the serving engine's model input, so both must ask for
    the same preprocessing (size, windowing...)."""
    expected = (
        serving.preprocessing if isinstance(serving, Engine) else serving.manifest.preprocessing
    )
    if shadow.manifest.preprocessing != expected:
        raise EngineError(
            f"engine {shadow.manifest.version} cannot score in shadow: its preprocessing "
            "differs from the serving engine's (the shadow scores the same model input)"
        )


# -- the budget ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Admission:
    """Whether a batch is scored in shadow, and if not, why (a counter's suffix)."""

    admitted: bool
    reason: str = ""


class ShadowBudget:
    """Admits studies to the shadow within ``engine.shadow``: idle only, and a time share.

    The decision is taken at a study's first image scored and kept for the rest of it,
    so that a study is shadowed whole or not at all: a partly shadowed study cannot be
    compared with its serving result. An admitted study's few remaining images are
    scored in shadow whatever waits (at most a study's worth of shadow work).
    """

    def __init__(self, config: ShadowConfig) -> None:
        self._config = config
        #: (serving ms, shadow ms) of the last batches; 0 shadow ms when not shadowed
        self._window: deque[tuple[float, float]] = deque(maxlen=SHARE_WINDOW)
        self._decided: OrderedDict[str, bool] = OrderedDict()
        self._lock = threading.Lock()

    def admit_study(self, study_uid: str, waiting: int) -> bool:
        """Whether the study's images are scored in shadow (decided at its first image)."""
        with self._lock:
            known = self._decided.get(study_uid)
        if known is not None:
            return known
        admitted = self.admit(waiting).admitted
        with self._lock:
            self._decided[study_uid] = admitted
            while len(self._decided) > STUDIES_REMEMBERED:
                self._decided.popitem(last=False)
        return admitted

    def admit(self, waiting: int) -> Admission:
        """``waiting``: images queued for the serving engine right now."""
        if self._config.when_idle and waiting > 0:
            return Admission(False, "busy")
        with self._lock:
            shadow = sum(ms for _, ms in self._window)
            total = shadow + sum(ms for ms, _ in self._window)
        if total > 0 and shadow / total > self._config.max_share:
            return Admission(False, "share")
        return Admission(True)

    def record(self, serving_ms: float, shadow_ms: float) -> None:
        """One batch's inference time on each engine (0: not scored in shadow)."""
        with self._lock:
            self._window.append((serving_ms, shadow_ms))
