"""What ``edge engines ...`` does; :mod:`edge.cli` only parses arguments and prints.

Each command takes the loaded configuration and an ``out`` callable for the lines
a technician reads. Failures raise :class:`~edge.errors.EngineError` (a
:class:`~edge.engines.store.StepFailed` names the step), which the CLI prints.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from edge.bundle.manifest import Bundle
from edge.config import Config
from edge.engines.selftest import SelfTestResult, run_selftest
from edge.engines.shadow import clear_shadow, set_shadow, shadow_ref
from edge.engines.signing import NotTrusted, load_public_key
from edge.engines.store import PLANS, EngineRef, EngineStore, StepFailed, TrustPolicy
from edge.errors import EngineError
from edge.runtimes import registry
from edge.runtimes.plans import PlanCache

Out = Callable[[str], None]


def store_of(config: Config) -> EngineStore:
    return EngineStore(config.engine_store_dir)


def trust_of(config: Config, *, allow_unsigned: bool = False) -> TrustPolicy:
    keys = [load_public_key(path) for path in config.engine.trusted_keys]
    return TrustPolicy(keys, allow_unsigned=allow_unsigned)


def selftest_on_serving_backend(config: Config) -> Callable[[Bundle], SelfTestResult]:
    """A self-test that loads the bundle on the backend the daemon would serve it with."""
    name = registry.choose(config.engine.backend)

    def check(bundle: Bundle) -> SelfTestResult:
        backend = registry.create(
            name,
            bundle,
            threads=config.engine.threads,
            plan_cache=config.engine_store_dir / PLANS,
        )
        try:
            return run_selftest(bundle, backend)
        finally:
            backend.close()

    return check


def _step_printer(out: Out) -> Callable[[str, str], None]:
    return lambda step, detail: out(f"  {step:<10} ok  {detail}")


def list_engines(config: Config, out: Out) -> None:
    store = store_of(config)
    current, previous, shadow = store.current(), store.previous(), shadow_ref(store)
    engines = store.installed()
    if not engines:
        out(f"no engines installed in {store.root}")
    marks = {previous: "previous", shadow: "shadow", current: "current"}
    for engine in engines:
        mark = marks.get(engine.ref, "")
        signed = f"signed by {engine.signed_by}" if engine.signed_by else "UNSIGNED"
        out(f"{mark:<8} {engine.ref}  {signed}  installed {engine.installed_at}")
    ok, why = _backend_line(config.engine.backend)
    out(f"backend: {config.engine.backend} -> {ok} ({why})")
    plans = PlanCache(store.root / PLANS).entries()
    out(f"plan cache: {len(plans)} plan(s) in {store.root / PLANS}")
    for plan in plans:
        key = plan.key
        out(
            f"  {plan.path.name}  {plan.onnx_name} (sha256 {key.onnx_sha256[:12]}…) "
            f"TensorRT {key.tensorrt_version} on {key.device_name} sm_{key.compute_capability} "
            f"batch <= {key.max_batch}, built {plan.built_at}"
        )


def _backend_line(requested: str) -> tuple[str, str]:
    try:
        name = registry.choose(requested)
    except EngineError as exc:
        return "none", str(exc)
    return name, registry.availability(name)[1]


def install(
    config: Config,
    source: Path,
    out: Out,
    *,
    allow_unsigned: bool,
    activate: bool,
    config_option: str = "",
) -> EngineRef:
    """Install ``source``; ``config_option`` (`` --config FILE``) goes into the hints printed."""
    store = store_of(config)
    trust = trust_of(config, allow_unsigned=allow_unsigned)
    selftest = selftest_on_serving_backend(config)
    out(f"installing {source}")
    try:
        engine = store.install(source, trust, selftest, _step_printer(out))
    except StepFailed as exc:
        raise _with_unsigned_hint(exc) from exc
    out(f"installed {engine.ref} in {engine.path}")
    if engine.signed_by is None:
        out(
            f"WARNING: {engine.ref} is installed WITHOUT a verified signature "
            "(--allow-unsigned): nothing proves who made it or that it is unaltered. "
            "Serve it on a test box only."
        )
    if activate:
        _activate(store, engine.ref, trust, selftest, out)
    else:
        out(f"activate it with: edge engines activate {engine.ref.version}{config_option}")
    return engine.ref


def _with_unsigned_hint(exc: StepFailed) -> StepFailed:
    """A refused signature, with the way a test box may install the bundle anyway."""
    if exc.step != "signature" or not isinstance(exc.__cause__, NotTrusted):
        return exc
    hint = "or, on a test box only, install it unverified with --allow-unsigned"
    return StepFailed(exc.step, exc.reason, f"{exc.fix}; {hint}" if exc.fix else hint)


def verify(config: Config, version: str | None, out: Out) -> None:
    """Check every file, the signature and the self-test of one or all installed engines."""
    store = store_of(config)
    trust = trust_of(config)
    selftest = selftest_on_serving_backend(config)
    refs = [store.resolve(version)] if version else [e.ref for e in store.installed()]
    if not refs:
        raise EngineError(f"no engines installed in {store.root}")
    failures = []
    for ref in refs:
        out(f"verifying {ref}")
        try:
            bundle = store.load(ref, trust)
            out(f"  sha256     ok  {len(bundle.manifest.files)} files match")
            result = selftest(bundle)
            out(f"  self-test  ok  max |difference| {result.max_abs_diff:.3g}")
        except EngineError as exc:
            out(f"  FAILED: {exc}")
            failures.append(str(ref))
    if failures:
        raise EngineError(f"verification failed for {', '.join(failures)}")


def activate(config: Config, version: str, out: Out) -> None:
    store = store_of(config)
    ref = store.resolve(version)
    _activate(store, ref, trust_of(config), selftest_on_serving_backend(config), out)


def _activate(
    store: EngineStore,
    ref: EngineRef,
    trust: TrustPolicy,
    selftest: Callable[[Bundle], SelfTestResult],
    out: Out,
) -> None:
    out(f"activating {ref}")
    before = store.current()
    store.activate(ref, trust, selftest, _step_printer(out))
    if before == ref:
        out(f"{ref} was already current (to reload a daemon anyway: systemctl reload edge)")
    else:
        out(f"{ref} is now current (was {before or 'none'}); a running daemon switches to it")
    if shadow_ref(store) == ref:
        # After ``current``: the daemon keeps the loaded shadow engine and serves it.
        clear_shadow(store)
        out(f"{ref} no longer scores in shadow: the daemon serves it, already loaded and warm")


def rollback(config: Config, out: Out) -> None:
    store = store_of(config)
    current = store.current()
    target = store.rollback(
        trust_of(config), selftest_on_serving_backend(config), _step_printer(out)
    )
    out(f"rolled back from {current} to {target}")


def shadow(config: Config, version: str | None, out: Out, *, off: bool = False) -> None:
    """Name an installed engine to score in shadow (checked and self-tested as for an
    activation), or stop shadowing (``off``); a running daemon follows."""
    if (version is None) == (not off):
        raise EngineError("give the VERSION to score in shadow, or --off to stop shadowing")
    store = store_of(config)
    if version is None:
        stopped = clear_shadow(store)
        out(f"{stopped} no longer scores in shadow" if stopped else "no engine scored in shadow")
        return
    ref = store.resolve(version)
    out(f"checking {ref} to score in shadow")
    set_shadow(
        store, ref, trust_of(config), selftest_on_serving_backend(config), _step_printer(out)
    )
    serving = store.current() or "engine.bundle"
    out(f"{ref} scores in shadow beside {serving}; a running daemon loads it")
    out(f"compare at the hub: edge hub compare --site SITE --engine VERSION --with {ref.version}")


def remove(config: Config, version: str, out: Out) -> None:
    store = store_of(config)
    ref = store.resolve(version)
    if shadow_ref(store) == ref:
        raise EngineError(f"{ref} scores in shadow; stop it first: edge engines shadow --off")
    store.remove(ref)
    out(f"removed {ref}")
