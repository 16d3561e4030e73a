"""``edge bench``'s options, defined beside the bench (the CLI builds the sub-command).

Only argparse here: the CLI imports this while it builds its parser, before any of
the bench's own dependencies are needed.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``edge bench`` (``docs/bench.md`` defines what they measure)."""
    parser.add_argument("--config", type=Path, help="a box's configuration (default: demo engine)")
    parser.add_argument("--json", type=Path, dest="json_path", help="write the figures here")
    parser.add_argument("--chart", type=Path, dest="chart_path", help="write the PNG chart here")
    parser.add_argument("--quick", action="store_true", help="a short run (under two minutes)")
    parser.add_argument("--encodings", default="rle,explicit_vr,jpeg2000", help="comma-separated")
    parser.add_argument(
        "--soak-encodings", default="rle,explicit_vr", help="encodings fed in the soak"
    )
    parser.add_argument("--repeats", type=int, help="studies per encoding and arrival pattern")
    parser.add_argument("--burst-studies", type=int, help="studies dropped at once (default 50)")
    parser.add_argument("--soak-images", type=int, help="images fed in the soak (default 2000)")
    parser.add_argument("--idle-s", type=float, help="seconds of idle CPU measurement (default 30)")
    parser.add_argument("--cache-dir", type=Path, help="where re-encoded templates are kept")
    parser.add_argument("--keep", action="store_true", help="keep the bench's working folder")
    parser.add_argument(
        "--cstore-only", action="store_true", help="only the studies sent by DICOM C-STORE"
    )
    parser.add_argument(
        "--shadow",
        action="store_true",
        help="only the serving latency with and without a shadow engine (its own run)",
    )
