"""Print the decode benchmark: pydicom's default path against edge's, per encoding."""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from edge.bundle.manifest import Preprocessing, read_manifest
from edge.pipeline.pool import ProcessDecoder, ThreadDecoder
from edge.tools import decode_bench

DEMO = Path(__file__).resolve().parents[1] / "engines" / "demo"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--encodings",
        nargs="+",
        default=list(decode_bench.ENCODINGS),
        choices=list(decode_bench.ENCODINGS),
    )
    parser.add_argument("--repeats", type=int, default=5, help="runs per path; the best counts")
    parser.add_argument(
        "--size",
        type=int,
        nargs=2,
        metavar=("HEIGHT", "WIDTH"),
        help="model input (default: engines/demo's, else 1024 832)",
    )
    parser.add_argument(
        "--burst",
        action="store_true",
        help="also time 8 files decoded at once by threads and by processes",
    )
    args = parser.parse_args()
    spec = _spec(args.size)
    missing = decode_bench.encoders_missing(args.encodings)
    if missing:
        parser.error(f"encoders not installed: {', '.join(missing)} (run scripts/bootstrap)")
    print(decode_bench.header_line(spec), flush=True)
    with tempfile.TemporaryDirectory(prefix="edge-bench-") as folder:
        rows = decode_bench.run(
            Path(folder),
            args.encodings,
            spec,
            repeats=args.repeats,
            report=lambda row: print(decode_bench.format_row(row), flush=True),
        )
        print(decode_bench.summary(rows))
        if args.burst:
            _burst(Path(folder), args.encodings, spec)


def _spec(size: list[int] | None) -> Preprocessing:
    if size:
        return Preprocessing(height=size[0], width=size[1])
    if (DEMO / "manifest.yaml").exists():
        return read_manifest(DEMO).preprocessing
    return Preprocessing(height=1024, width=832)


def _burst(folder: Path, encodings: list[str], spec: Preprocessing) -> None:
    paths = [folder / f"{name}.dcm" for name in encodings if name in ("rle", "j2k-lossless")]
    if not paths:
        return
    paths = (paths * 8)[:8]
    workers = os.cpu_count() or 1
    threads = ThreadDecoder(threads=1)
    processes = ProcessDecoder(workers, threads=1, timeout_s=300)
    try:
        processes.run(decode_bench.header_of(paths[0]), spec)  # the workers start lazily
        for name, pool in (("threads", threads), ("processes", processes)):
            seconds = decode_bench.burst(paths, spec, pool, workers)
            print(f"burst of {len(paths)} files (RLE, J2K) on {workers} {name}: {seconds:.2f} s")
    finally:
        processes.close()


if __name__ == "__main__":
    main()
