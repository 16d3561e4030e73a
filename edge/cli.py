"""The ``edge`` command. The only module that calls ``sys.exit``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from edge import __version__
from edge.config import Config, load_config
from edge.errors import ConfigError, EngineError, JournalError
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
    except JournalError as exc:
        print(f"journal error: {exc}", file=sys.stderr)
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
