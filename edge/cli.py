"""The ``edge`` command. The only module that calls ``sys.exit``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from edge import __version__
from edge.config import Config, load_config
from edge.errors import ConfigError, EngineError
from edge.logs import setup_logging

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2


def main(argv: Sequence[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        code = handler(args)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        code = EXIT_CONFIG
    except EngineError as exc:
        print(f"engine error: {exc}", file=sys.stderr)
        code = EXIT_FAILURE
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge", description="Clinic-side AI screening mammography appliance."
    )
    parser.add_argument("--version", action="version", version=f"edge {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run the daemon in the foreground")
    run.add_argument("--config", type=Path, required=True, help="configuration YAML file")
    run.set_defaults(handler=_run)

    config = commands.add_parser("config", help="configuration tools")
    config_commands = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    check = config_commands.add_parser("check", help="validate a configuration file and exit")
    check.add_argument("file", type=Path)
    check.set_defaults(handler=_config_check)
    _add_bench(commands)
    return parser


def _load(path: Path) -> Config:
    return load_config(path)


def _run(args: argparse.Namespace) -> int:
    from edge.daemon import Daemon

    config = _load(args.config)
    setup_logging(config.log.level)
    Daemon(config).run()
    return EXIT_OK


def _config_check(args: argparse.Namespace) -> int:
    config = _load(args.file)
    print(f"{args.file}: valid (site {config.site}, device {config.device})")
    return EXIT_OK


def _add_bench(commands: Any) -> None:
    bench = commands.add_parser(
        "bench", help="measure latency, throughput and footprint against a naive pipeline"
    )
    bench.add_argument("--config", type=Path, help="a box's configuration (default: demo engine)")
    bench.add_argument("--json", type=Path, dest="json_path", help="write the figures here")
    bench.add_argument("--chart", type=Path, dest="chart_path", help="write the PNG chart here")
    bench.add_argument("--quick", action="store_true", help="a short run (under two minutes)")
    bench.add_argument("--encodings", default="rle,explicit_vr,jpeg2000", help="comma-separated")
    bench.add_argument(
        "--soak-encodings", default="rle,explicit_vr", help="encodings fed in the soak"
    )
    bench.add_argument("--repeats", type=int, help="studies per encoding and arrival pattern")
    bench.add_argument("--burst-studies", type=int, help="studies dropped at once (default 50)")
    bench.add_argument("--soak-images", type=int, help="images fed in the soak (default 2000)")
    bench.add_argument("--idle-s", type=float, help="seconds of idle CPU measurement (default 30)")
    bench.add_argument("--cache-dir", type=Path, help="where re-encoded templates are kept")
    bench.add_argument("--keep", action="store_true", help="keep the bench's working folder")
    bench.set_defaults(handler=_bench)


def _bench(args: argparse.Namespace) -> int:
    from edge.bench import BenchError
    from edge.bench.runner import options_from_args, run_bench

    try:
        run_bench(options_from_args(args))
    except BenchError as exc:
        print(f"bench error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK
