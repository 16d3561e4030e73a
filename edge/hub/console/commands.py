"""``edge hub serve`` and ``edge hub users``: the console and who may use it.

edge hub serve --config hub.yaml
edge hub users add NAME --role viewer|reader|admin [--password-stdin] --config hub.yaml
edge hub users remove NAME --config hub.yaml
edge hub users token NAME --config hub.yaml       prints a new API token, once
edge hub users list --config hub.yaml
"""

from __future__ import annotations

import argparse
import dataclasses
import getpass
import json
import sys

from edge.errors import ConfigError
from edge.hub.config import HubConfig
from edge.hub.console.users import add_user, new_token, read_users, remove_user
from edge.hub.database import open_database
from edge.logs import setup_logging


def run(action: str, config: HubConfig, args: argparse.Namespace) -> int:
    """``edge hub serve``, ``users`` or ``bench``."""
    if action == "serve":
        return serve(config)
    if action == "users":
        return users(config, args)
    return bench(config, args)


def serve(config: HubConfig) -> int:
    from edge.hub.console.app import serve as run_server

    setup_logging(config.log.level)
    # The console writes outcomes and the audit log, and may be the first to open the database.
    writer = open_database(config.database_url(), writer=True)
    engine = open_database(config.database_url(), writer=False)
    try:
        run_server(config, engine, writer)
    finally:
        engine.dispose()
        writer.dispose()
    return 0


def users(config: HubConfig, args: argparse.Namespace) -> int:
    path = config.console.users_file
    action = args.users_command
    if action == "add":
        password = _password(args.password_stdin)
        new = add_user(path, args.name, args.role, password)
        print(f"{'added' if new else 'updated'} {args.name} ({args.role}) in {path}")
    elif action == "remove":
        if not remove_user(path, args.name):
            raise ConfigError(f"no user {args.name!r} in {path}")
        print(f"removed {args.name} and their tokens from {path}")
    elif action == "token":
        print(new_token(path, args.name))
    else:
        for name, raw in sorted(read_users(path).items()):
            print(f"{name}\t{raw['role']}\t{len(raw.get('tokens') or [])} token(s)")
    return 0


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise ConfigError("the two passwords differ")
    return first


def bench(config: HubConfig, args: argparse.Namespace) -> int:
    from edge.hub.bench import Plan
    from edge.hub.bench_run import run_bench

    setup_logging("WARNING")
    plan = Plan(results=args.results, boxes=args.boxes, days=args.days, ingest=args.ingest,
                samples=args.samples)  # fmt: skip
    engine = open_database(config.database_url(), writer=True)
    try:
        report = run_bench(config, engine, plan, lambda line: print(line, flush=True))
    finally:
        engine.dispose()
    if args.json:
        print(json.dumps(dataclasses.asdict(report)))
    else:
        print("\n".join(report.lines()))
    return 0
