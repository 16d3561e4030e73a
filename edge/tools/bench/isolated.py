"""The unavoidable work, measured in isolation: the pipeline's own functions, in-process.

Each file is read, decoded, prepared and scored one at a time on an idle daemon-less
box with the same engine the daemon serves, so that the daemon's figures can be set
against the work they cannot avoid (the overhead ratio and the burst's ideal).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.bundle.manifest import load_bundle
from edge.config import Config
from edge.engines.engine import Engine
from edge.engines.store import PLANS
from edge.pipeline.decode import FAMILIES, decode, load_model_input
from edge.pipeline.ingest import read_header
from edge.pipeline.preprocess import prepare
from edge.types import IncomingFile

#: images per batch when measuring the engine's throughput
BATCH = 16


@dataclass(frozen=True)
class FileCost:
    """Median milliseconds of each stage for one file."""

    header: float
    decode: float
    preprocess: float
    infer: float
    #: CPU time of header, decode and preprocess over all threads: a decoder that
    #: runs on several cores (openjpeg) costs more CPU than its wall time shows
    cpu_ms: float

    @property
    def compute(self) -> float:
        """Decode, preprocess and infer: the sum the overhead ratio divides by."""
        return self.decode + self.preprocess + self.infer


@dataclass(frozen=True)
class IsolatedFigures:
    """Per encoding, the cost of each measured file, and of each case's last view."""

    costs: dict[str, list[FileCost]]
    last_view: dict[str, list[FileCost]]
    infer_images_per_s: float
    engine: dict[str, str]


def measure_corpus(
    engine: Engine,
    cases: dict[str, list[dict[str, Path]]],
    *,
    max_pixels: int,
    views: tuple[str, ...],
    last_view: str,
    repeats: int,
) -> IsolatedFigures:
    """Every case's ``views`` (which include ``last_view``) in every encoding of ``cases``."""
    first = next(iter(cases.values()))[0][last_view]
    run_once(engine, first, max_pixels)  # lazy imports, decoders' first-call set-up
    costs: dict[str, list[FileCost]] = {}
    last: dict[str, list[FileCost]] = {}
    for encoding, encoded in cases.items():
        per_case = [
            {
                v: measure_file(engine, case[v], max_pixels=max_pixels, repeats=repeats)
                for v in views
            }
            for case in encoded
        ]
        costs[encoding] = [cost for measured in per_case for cost in measured.values()]
        last[encoding] = [measured[last_view] for measured in per_case]
    info = engine.info
    return IsolatedFigures(
        costs,
        last,
        infer_images_per_s(engine),
        {
            "name": info.name,
            "version": info.version,
            "sha256": info.sha256,
            "backend": info.backend,
        },
    )


@dataclass(frozen=True)
class LevelEffect:
    """What decoding JPEG 2000 at reduced resolution did to the engine's scores on the
    bench's own files: the daemon's decode path against a full decode plus area resize."""

    #: how many times smaller per side the daemon's path decoded each file
    reductions: tuple[int, ...]
    #: |score - score of the full decode|, one per file
    deltas: tuple[float, ...]
    #: ``decode.score_tolerance``: the limit the level was chosen within
    tolerance: float

    def as_json(self) -> dict[str, object]:
        return {
            "reductions": sorted(set(self.reductions)),
            "images": len(self.deltas),
            "max_abs_delta_score": round(max(self.deltas), 4),
            "mean_abs_delta_score": round(statistics.mean(self.deltas), 4),
            "tolerance": self.tolerance,
        }


def level_effect(
    engine: Engine, paths: list[Path], *, max_pixels: int, tolerance: float
) -> LevelEffect | None:
    """Score each JPEG 2000 or HTJ2K file of ``paths`` decoded the daemon's way and in
    full; None when none of them is (other codings always decode in full)."""
    spec = engine.preprocessing
    target = (spec.height, spec.width)
    reductions, deltas = [], []
    for path in paths:
        stat = path.stat()
        incoming = IncomingFile(path, stat.st_size, stat.st_mtime_ns, time.monotonic(), "bench")
        header = read_header(incoming, max_pixels=max_pixels)
        if FAMILIES.get(header.transfer_syntax) != "j2k":
            continue
        chosen = decode(header, target=target, threads=0, tolerance=tolerance)
        full = decode(header, target=None, threads=0)
        scores = [
            engine.score(prepare(header, d.dataset, d.pixels, spec).tensor[np.newaxis])[0]
            for d in (chosen, full)
        ]
        reductions.append(chosen.reduction)
        deltas.append(abs(float(scores[0]) - float(scores[1])))
    if not deltas:
        return None
    return LevelEffect(tuple(reductions), tuple(deltas), tolerance)


def compute_ms(engine: Engine, path: Path, *, max_pixels: int) -> float:
    """Decode, preprocess and infer of ``path`` once, in milliseconds (paired isolation)."""
    return measure_file(engine, path, max_pixels=max_pixels, repeats=1).compute


def load_engine(config: Config) -> Engine:
    """``engine.bundle`` as the daemon loads it (backend, threads, plan cache), warmed up."""
    assert config.engine.bundle is not None, "the bench pins the serving bundle"
    return Engine.load(
        load_bundle(config.engine.bundle),
        backend=config.engine.backend,
        threads=config.engine.threads,
        plan_cache=config.engine_store_dir / PLANS,
    )


def measure_file(engine: Engine, path: Path, *, max_pixels: int, repeats: int) -> FileCost:
    """Median stage times of ``repeats`` runs on ``path``.

    The file is read once beforehand so that every run finds it in the page cache,
    as the daemon finds a file that was just written.
    """
    path.read_bytes()
    runs = [run_once(engine, path, max_pixels) for _ in range(repeats)]
    return FileCost(
        *(statistics.median(run[index] for run in runs) for index in range(5)),
    )


def infer_images_per_s(engine: Engine, *, repeats: int = 3) -> float:
    """Images per second the engine scores in full batches (the inference bound)."""
    spec = engine.preprocessing
    size = min(BATCH, engine.backend.max_batch)
    batch = np.random.default_rng(0).random((size, 1, spec.height, spec.width), dtype=np.float32)
    engine.score(batch)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        engine.score(batch)
        times.append(time.perf_counter() - started)
    return size / statistics.median(times)


def run_once(
    engine: Engine, path: Path, max_pixels: int
) -> tuple[float, float, float, float, float]:
    """One file through header, decode, preprocess and infer: milliseconds of each,
    then the CPU milliseconds (all threads) of header, decode and preprocess."""
    cpu_started = time.process_time()
    stat = path.stat()
    incoming = IncomingFile(path, stat.st_size, stat.st_mtime_ns, time.monotonic(), "bench")
    header = read_header(incoming, max_pixels=max_pixels)
    # The daemon's own decode path: JPEG 2000 at the resolution the model needs.
    prepared = load_model_input(header, engine.preprocessing, threads=0)
    cpu_ms = (time.process_time() - cpu_started) * 1000
    started = time.perf_counter()
    engine.score(prepared.tensor[np.newaxis])
    infer_ms = (time.perf_counter() - started) * 1000
    return (
        header.timings_ms["header"],
        prepared.timings_ms["decode"],
        prepared.timings_ms["preprocess"],
        infer_ms,
        cpu_ms,
    )
