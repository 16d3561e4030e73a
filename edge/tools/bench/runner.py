"""``edge bench``: its options, the order of its phases, and what it writes.

1. templates: the sample studies in each encoding (cached);
2. isolated compute of the template files, in-process, before any daemon runs;
3. the phases on a running pipeline (:mod:`edge.tools.bench.session`): latency, burst,
   footprint, and the naive baseline;
4. the report: the table on standard output, the JSON, the chart.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import edge
from edge import __version__
from edge.config import Config, load_config
from edge.engines.engine import Engine
from edge.engines.serving import choose_serving
from edge.engines.store import EngineStore
from edge.runtimes import registry
from edge.tools.bench import BenchError, chart, cstore, isolated, phases, repair, report, table
from edge.tools.bench.corpus import ENCODINGS, Case, default_cache_dir, templates
from edge.tools.bench.session import BenchSession, FootprintFigures, LatencyFigures
from edge.tools.samples import VIEW_ORDER

#: the view a study's result waits for: the last one written
LAST_VIEW = VIEW_ORDER[-1]


@dataclass(frozen=True)
class Plan:
    """How much of each phase to run; ``--quick`` gives a smaller plan."""

    cases: int
    repeats: int
    burst_studies: int
    idle_s: float
    soak_images: int
    baseline_repeats: int
    baseline_poll_s: float
    isolated_repeats: int
    #: every view in isolation, or only each case's last view (quick)
    isolated_all_views: bool
    warm_up_images: int
    #: confirmed studies, and lost results repaired, in the repair phase
    repair_samples: int
    #: studies of the CAD SR phase (result -> PACS C-STORE response)
    sr_studies: int = 30

    @classmethod
    def default(cls, quick: bool) -> Plan:
        if quick:
            return cls(
                cases=1,
                repeats=1,
                burst_studies=2,
                idle_s=3.0,
                soak_images=40,
                baseline_repeats=1,
                baseline_poll_s=1.0,
                isolated_repeats=1,
                isolated_all_views=False,
                warm_up_images=24,
                repair_samples=2,
                sr_studies=5,
            )
        return cls(
            cases=2,
            repeats=10,
            burst_studies=50,
            idle_s=30.0,
            soak_images=2000,
            baseline_repeats=3,
            baseline_poll_s=1.0,
            isolated_repeats=3,
            isolated_all_views=True,
            warm_up_images=200,
            repair_samples=10,
        )


@dataclass(frozen=True)
class BenchOptions:
    config: Path | None
    json_path: Path | None
    chart_path: Path | None
    quick: bool
    plan: Plan
    encodings: tuple[str, ...]
    soak_encodings: tuple[str, ...]
    cache_dir: Path
    keep: bool
    #: only the C-STORE phase (with its templates), nothing else
    cstore_only: bool = False
    #: only the serving latency with and without a shadow engine (edge.tools.bench.shadow)
    shadow: bool = False


def options_from_args(args: argparse.Namespace) -> BenchOptions:
    """The options of ``edge bench``'s command line; unset sizes come from the plan."""
    plan = Plan.default(args.quick)
    overrides = {
        "repeats": args.repeats,
        "burst_studies": args.burst_studies,
        "soak_images": args.soak_images,
        "idle_s": args.idle_s,
    }
    for key, value in overrides.items():
        if value is not None and value <= 0:
            raise BenchError(f"--{key.replace('_', '-')} must be positive, not {value}")
    plan = replace(plan, **{k: v for k, v in overrides.items() if v is not None})
    return BenchOptions(
        config=args.config,
        json_path=args.json_path,
        chart_path=args.chart_path,
        quick=args.quick,
        plan=plan,
        encodings=_encodings(args.encodings, "--encodings"),
        soak_encodings=_encodings(args.soak_encodings, "--soak-encodings"),
        cache_dir=args.cache_dir or default_cache_dir(),
        keep=args.keep,
        cstore_only=args.cstore_only,
        shadow=args.shadow,
    )


def _encodings(text: str, option: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    unknown = [name for name in names if name not in ENCODINGS]
    if unknown or not names:
        raise BenchError(f"{option}: choose among {', '.join(ENCODINGS)} (got {text!r})")
    return names


def run_bench(options: BenchOptions) -> dict[str, Any]:
    """Run every phase, print the table, write the JSON and the chart; return the JSON."""
    if options.shadow:
        from edge.tools.bench.shadow import run_shadow_bench  # it builds on this module

        return run_shadow_bench(options)
    load_start = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="edge-bench-"))
    print(f"bench: working in {work}; load average {load_start[0]:.2f}")
    try:
        config = base_config(options.config, work)
        if options.cstore_only:
            return _cstore_only(options, config, work, load_start)
        measured, engine_info, sr = _measure(options, config, work)
    finally:
        if options.keep:
            print(f"bench: kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    header = {
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "edge_version": __version__,
        "quick": options.quick,
        "notes": _notes(options),
        "machine": machine(config, load_start),
        "engine": engine_info,
        "encodings": list(options.encodings),
    }
    document = report.build(measured, header)
    document["cad_sr"] = sr
    print()
    print(table.render(document))
    _write_outputs(document, options)
    return document


def _measure(
    options: BenchOptions, config: Config, work: Path
) -> tuple[report.Measured, Any, dict[str, Any]]:
    plan = options.plan
    cores = os.cpu_count() or 1
    wanted = tuple(dict.fromkeys(options.encodings + options.soak_encodings))
    cases = templates(options.cache_dir, wanted, cases=plan.cases, workers=cores)
    print("bench: isolated compute, in-process, one image at a time", flush=True)
    engine = isolated.load_engine(config)
    max_pixels = config.decode.max_pixels
    try:
        alone = isolated.measure_corpus(
            engine,
            {encoding: cases[encoding] for encoding in options.encodings},
            max_pixels=max_pixels,
            views=VIEW_ORDER if plan.isolated_all_views else (LAST_VIEW,),
            last_view=LAST_VIEW,
            repeats=plan.isolated_repeats,
        )
        effects = _level_effects(engine, {e: cases[e] for e in options.encodings}, config)
        latency, footprint, baseline, by_cstore, repaired, sr = _pipeline_phases(
            options, config, work, cases, engine
        )
    finally:
        engine.close()
    measured = report.Measured(
        isolated=alone.costs,
        isolated_last=alone.last_view,
        infer_images_per_s=alone.infer_images_per_s,
        e2e=latency.e2e,
        e2e_burst=latency.e2e_burst,
        publish_ms=latency.publish_ms,
        burst=latency.burst,
        idle_cpu_percent=footprint.idle_cpu_percent,
        idle_s=plan.idle_s,
        rss_mb=footprint.rss_mb,
        soak_images=footprint.soak_images,
        baseline=baseline,
        baseline_poll_s=plan.baseline_poll_s,
        cores=cores,
        cstore=cstore.section(by_cstore, options.encodings),
        repair=repaired,
        level_effect=effects,
    )
    return measured, alone.engine, sr


def _level_effects(
    engine: Engine, cases: dict[str, list[Case]], config: Config
) -> dict[str, isolated.LevelEffect]:
    """Per JPEG 2000 or HTJ2K encoding, what its chosen resolution level does to the score."""
    effects = {}
    for encoding, encoded in cases.items():
        effect = isolated.level_effect(
            engine,
            [path for case in encoded for path in case.values()],
            max_pixels=config.decode.max_pixels,
            tolerance=config.decode.score_tolerance,
        )
        if effect is not None:
            effects[encoding] = effect
    return effects


def _pipeline_phases(
    options: BenchOptions,
    config: Config,
    work: Path,
    cases: dict[str, list[Case]],
    engine: Engine,
) -> tuple[
    LatencyFigures,
    FootprintFigures,
    list[phases.StudySample],
    cstore.CstoreFigures,
    repair.RepairFigures | None,
    dict[str, Any],
]:
    """Latency, footprint, baseline, C-STORE, repair and the CAD SR, measured on running daemons."""
    plan = options.plan
    max_pixels = config.decode.max_pixels
    with BenchSession(config, work, cases) as session:
        latency = session.latency(
            options.encodings,
            plan.repeats,
            plan.burst_studies,
            lambda path: isolated.compute_ms(engine, path, max_pixels=max_pixels),
        )
        footprint = session.footprint(
            options.soak_encodings,
            idle_s=plan.idle_s,
            warm_up=plan.warm_up_images,
            soak=plan.soak_images,
        )
        baseline = session.baseline(options.encodings, plan.baseline_repeats, plan.baseline_poll_s)
        by_cstore = session.cstore(options.encodings, plan.repeats)
        repaired = (
            session.repair(options.encodings[0], plan.repair_samples) if _hub_installed() else None
        )
        sr = session.sr_delivery(options.encodings, plan.sr_studies)
    return latency, footprint, baseline, by_cstore, repaired, sr


def _cstore_only(
    options: BenchOptions, config: Config, work: Path, load_start: tuple[float, float, float]
) -> dict[str, Any]:
    """``--cstore-only``: the C-STORE phase alone, printed and written as its section."""
    cases = templates(
        options.cache_dir, options.encodings, cases=options.plan.cases, workers=os.cpu_count() or 1
    )
    with BenchSession(config, work, cases) as session:
        figures = session.cstore(options.encodings, options.plan.repeats)
    section = cstore.section(figures, options.encodings)
    document = {
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "edge_version": __version__,
        "machine": machine(config, load_start),
        "cstore": section,
    }
    print()
    print(cstore.render(section))
    _write_outputs(document, replace(options, chart_path=None))
    return document


def _hub_installed() -> bool:
    """The repair phase runs the hub's collector, which needs the hub extra."""
    try:
        import sqlalchemy  # noqa: F401
    except ImportError:
        print("bench: no repair phase: the hub extra is not installed (pip install 'edge[hub]')")
        return False
    return True


def base_config(path: Path | None, work: Path) -> Config:
    """The configuration the bench's daemons start from, in the bench's own folders.

    The engine the box serves now (the store's current one, else ``engine.bundle``)
    is pinned as ``engine.bundle``: the bench's daemons have a store of their own.
    """
    if path is None:
        config = _demo_config(work)
    else:
        config = load_config(path)
        choice = choose_serving(config, EngineStore(config.engine_store_dir))
        engine = config.engine.model_copy(update={"bundle": choice.bundle.path})
        config = config.model_copy(update={"engine": engine})
    watch = config.watch.model_copy(update={"dir": work / "export"})
    return config.model_copy(update={"state_dir": work / "state", "watch": watch})


def _demo_config(work: Path) -> Config:
    bundle = Path(edge.__file__).resolve().parents[1] / "engines" / "demo"
    if not (bundle / "manifest.yaml").exists():
        raise BenchError(f"no --config given and the demo engine bundle is missing at {bundle}")
    return Config.model_validate(
        {
            "site": "bench",
            "device": "bench",
            "state_dir": str(work / "state"),
            "watch": {"dir": str(work / "export")},
            "engine": {"bundle": str(bundle), "backend": "auto"},
        }
    )


def machine(config: Config, load_start: tuple[float, float, float]) -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count() or 1,
        "cpu_model": _cpu_model(),
        "backend": registry.choose(config.engine.backend),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_average": {"start": list(load_start), "end": list(os.getloadavg())},
    }


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    for line in text.splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _notes(options: BenchOptions) -> list[str]:
    plan = options.plan
    notes = []
    if options.quick:
        notes.append(
            f"quick run: {plan.cases} case(s), {plan.repeats} studies per encoding and "
            f"pattern, burst of {plan.burst_studies} studies, idle {plan.idle_s:g} s, soak of "
            f"{plan.soak_images} images: figures are indicative only"
        )
    notes.append(f"soak encodings: {', '.join(options.soak_encodings)}")
    return notes


def _write_outputs(document: dict[str, Any], options: BenchOptions) -> None:
    if options.json_path is not None:
        options.json_path.parent.mkdir(parents=True, exist_ok=True)
        options.json_path.write_text(json.dumps(document, indent=2) + "\n")
        print(f"bench: wrote {options.json_path}")
    if options.chart_path is not None:
        if chart.available():
            chart.write_chart(document, options.chart_path)
            print(f"bench: wrote {options.chart_path}")
        else:
            print("bench: no chart: matplotlib is not installed (pip install 'edge[bench]')")
