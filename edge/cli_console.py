"""The console's actions of ``edge hub`` on the command line: ``serve``, ``users``, ``bench``.

Only argparse here, and outside ``edge.hub``: :mod:`edge.cli` builds its parser
from this without loading the hub (its libraries are an extra);
:mod:`edge.hub.console.commands` runs them.
"""

from __future__ import annotations

import argparse


def add_console_actions(
    actions: argparse._SubParsersAction[argparse.ArgumentParser], late: argparse.ArgumentParser
) -> None:
    """``edge hub serve``, ``users`` and ``bench``: the console (edge.hub.console)."""
    actions.add_parser("serve", parents=[late], help="the console in the browser and the API")
    users = actions.add_parser("users", parents=[late], help="the console's users")
    verbs = users.add_subparsers(dest="users_command", metavar="VERB", required=True)
    add = verbs.add_parser("add", parents=[late], help="add a user or change their password")
    add.add_argument("name")
    add.add_argument("--role", choices=("viewer", "reader", "admin"), required=True)
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    verbs.add_parser("remove", parents=[late], help="remove a user").add_argument("name")
    verbs.add_parser("token", parents=[late], help="print a new API token").add_argument("name")
    verbs.add_parser("list", parents=[late], help="the users and their roles")
    bench = actions.add_parser(
        "bench", parents=[late], help="fill an empty database and time ingest, pages and API"
    )
    bench.add_argument("--results", type=int, default=1_000_000, help="results to fill")
    bench.add_argument("--boxes", type=int, default=200, help="boxes (4 per site)")
    bench.add_argument("--days", type=int, default=60, help="days the results span")
    bench.add_argument("--ingest", type=int, default=20_000, help="results sent over MQTT")
    bench.add_argument("--samples", type=int, default=40, help="requests per page and API call")
