"""``edge bench --shadow``: the serving latency with and without a shadow engine.

Three daemons in turn, on the same studies (views ``MODALITY_GAP_S`` apart, as a
modality sends them), in :data:`ROUNDS` rounds in rotating order so that the load's
drift over the minutes of a run falls on all three alike: no shadow; a shadow engine
under the configuration's budget (``engine.shadow``); and a shadow engine without a
budget (every image, whatever waits). The candidate is a copy of the serving bundle
under another version: a retrained model of the same architecture costs what it
costs. The figure that matters is the serving p50's change with the budget; what the
shadow scored and skipped comes from each daemon's health.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from edge.bundle.manifest import SIGNATURE
from edge.config import Config, ShadowConfig
from edge.engines.commands import selftest_on_serving_backend
from edge.engines.shadow import clear_shadow, set_shadow
from edge.engines.store import EngineRef, EngineStore, SelfTest, StepReport, TrustPolicy
from edge.tools.bench import BenchError
from edge.tools.bench.corpus import templates
from edge.tools.bench.report import summary
from edge.tools.bench.runner import BenchOptions, base_config, machine
from edge.tools.bench.session import MODALITY_GAP_S, BenchSession

#: rounds of the three runs, each round in another order; ``--repeats`` split over them
ROUNDS = 3
#: the health counters the runs report, summed over the rounds
SHADOW_COUNTERS = ("shadow_scored", "shadow_skipped")
#: the budget-free shadow: every image, even while others wait
UNBUDGETED = ShadowConfig(when_idle=False, max_share=1.0)


def run_shadow_bench(options: BenchOptions) -> dict[str, Any]:
    """Measure, print and (``--json``) write the three runs; return the document."""
    load_start = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="edge-bench-shadow-"))
    try:
        config = base_config(options.config, work)
        runs = _runs(options, config, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    plain = runs["no_shadow"]["e2e"]["p50_ms"]
    document = {
        "schema": "edge.bench.shadow/1",
        "machine": machine(config, load_start),
        "budget": config.engine.shadow.model_dump(),
        "gap_s": MODALITY_GAP_S,
        "runs": runs,
        "p50_change_percent": {
            name: round(100 * (run["e2e"]["p50_ms"] - plain) / plain, 1)
            for name, run in runs.items()
        },
    }
    print(render(document))
    if options.json_path is not None:
        options.json_path.write_text(json.dumps(document, indent=2) + "\n")
    return document


def _runs(options: BenchOptions, config: Config, work: Path) -> dict[str, Any]:
    plan = options.plan
    cases = templates(
        options.cache_dir, options.encodings, cases=plan.cases, workers=os.cpu_count() or 1
    )
    store = EngineStore(config.engine_store_dir)
    candidate = _install_candidate(config, store, work)
    budgeted = config
    free = config.model_copy(
        update={"engine": config.engine.model_copy(update={"shadow": UNBUDGETED})}
    )
    variants = [
        ("no_shadow", config, False),
        ("shadow_budgeted", budgeted, True),
        ("shadow_unbudgeted", free, True),
    ]
    pooled: dict[str, tuple[list[Any], Counter[str]]] = {
        name: ([], Counter()) for name, _, _ in variants
    }
    per_round = max(1, math.ceil(plan.repeats / ROUNDS))
    with BenchSession(config, work, cases) as session:
        for round_ in range(ROUNDS):
            # Each round in another order: the box's load drifts over minutes, and no
            # variant may always run first or last.
            for name, variant, shadowed in variants[round_:] + variants[:round_]:
                clear_shadow(store)
                if shadowed:
                    set_shadow(store, candidate, *_checks(config))
                session.config = variant
                samples, health = session.serving_latency(
                    f"daemon-{name}-{round_ + 1}", options.encodings, per_round
                )
                pooled[name][0].extend(samples)
                counters = health.get("counters", {})
                pooled[name][1].update({key: counters.get(key, 0) for key in SHADOW_COUNTERS})
    return {name: _figures(samples, counters) for name, (samples, counters) in pooled.items()}


def _install_candidate(config: Config, store: EngineStore, work: Path) -> EngineRef:
    """A copy of the serving bundle under version ``<version>-shadow``, installed."""
    source = config.engine.bundle
    if source is None:
        raise BenchError("the bench's configuration names no engine bundle")
    folder = work / "candidate"
    shutil.copytree(source, folder)
    (folder / SIGNATURE).unlink(missing_ok=True)
    manifest_path = folder / "manifest.yaml"
    manifest = yaml.safe_load(manifest_path.read_text())
    manifest["version"] = f"{manifest['version']}-shadow"
    manifest_path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    installed = store.install(folder, *_checks(config))
    return installed.ref


def _checks(config: Config) -> tuple[TrustPolicy, SelfTest, StepReport]:
    """The bench's own unsigned copy is accepted; its self-test runs as for any engine."""

    def quiet(step: str, line: str) -> None:
        """The steps' lines are not the bench's output."""

    return TrustPolicy([], allow_unsigned=True), selftest_on_serving_backend(config), quiet


def _figures(samples: list[Any], counters: Counter[str]) -> dict[str, Any]:
    return {
        "e2e": summary(sample.e2e_ms for sample in samples),
        "infer": summary(sample.timings_ms.get("infer", 0.0) for sample in samples),
        "shadow_scored": counters.get("shadow_scored", 0),
        "shadow_skipped": counters.get("shadow_skipped", 0),
    }


def render(document: dict[str, Any]) -> str:
    """The three runs as a small table."""
    lines = [
        f"serving latency with and without a shadow engine, views {document['gap_s']:g} s apart"
        f" (budget: {document['budget']})",
        f"{'run':<20}{'p50 ms':>10}{'p95 ms':>10}{'n':>5}{'change':>9}"
        f"{'shadowed':>10}{'skipped':>9}",
    ]
    for name, run in document["runs"].items():
        e2e = run["e2e"]
        change = document["p50_change_percent"][name]
        lines.append(
            f"{name:<20}{e2e['p50_ms']:>10.1f}{e2e['p95_ms']:>10.1f}{e2e['n']:>5}"
            f"{change:>+8.1f}%{run['shadow_scored']:>10}{run['shadow_skipped']:>9}"
        )
    load = document["machine"]["load_average"]
    lines.append(f"load average {load['start'][0]:.2f} at start, {load['end'][0]:.2f} at end")
    return "\n".join(lines)
