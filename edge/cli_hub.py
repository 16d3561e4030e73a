"""``edge hub``'s arguments, beside the CLI: the hub itself is imported only when it runs.

The appliance never imports :mod:`edge.hub`; this module names its sub-commands
(the collector, the operator's queries, ``resend``, ``acl``) and hands the parsed
arguments to :func:`edge.hub.commands.run_hub`, returning its exit status to
:mod:`edge.cli`, the one place that exits.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edge.cli_console import add_console_actions

#: where docs/hub.md puts the hub's configuration
DEFAULT_HUB_CONFIG = Path("/etc/edge/hub.yaml")
EXIT_FAILURE = 1


def add_hub_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``edge hub``: the central collector and its queries (edge.hub, imported lazily)."""
    source = argparse.ArgumentParser(add_help=False)
    source.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_HUB_CONFIG,
        metavar="FILE",
        help=f"hub configuration file (default: {DEFAULT_HUB_CONFIG})",
    )
    source.add_argument("--db", metavar="URL", help="database URL (instead of --config)")
    # The same options after the action: their default must not undo the hub's own.
    late = argparse.ArgumentParser(add_help=False)
    late.add_argument(
        "--config", type=Path, default=argparse.SUPPRESS, metavar="FILE", help="as above"
    )
    late.add_argument("--db", metavar="URL", default=argparse.SUPPRESS, help="as above")
    late.add_argument("--json", action="store_true", help="JSON instead of a table")
    hub = commands.add_parser(
        "hub",
        parents=[source],
        help="the central hub: collect results (needs edge[hub])",
        description="Without an ACTION, run the collector in the foreground. Every action "
        f"reads {DEFAULT_HUB_CONFIG}, or the file --config names; the queries take --db URL "
        "instead.",
    )
    hub.set_defaults(handler=run, hub_command=None, json=False)
    actions = hub.add_subparsers(dest="hub_command", metavar="ACTION")
    actions.add_parser("devices", parents=[late], help="every device: status, engine, backlog")
    results = actions.add_parser("results", parents=[late], help="results since a time")
    results.add_argument("--since", default="24h", help="30m, 24h, 7d or an RFC 3339 time")
    results.add_argument("--site", help="only this site")
    results.add_argument("--suspicious", action="store_true", help="only suspicious studies")
    results.add_argument("--limit", type=int, default=1000, help="at most this many rows")
    actions.add_parser("gaps", parents=[late], help="seq numbers missing per device")
    compare = actions.add_parser("compare", parents=[late], help="two engines, studies both scored")
    compare.add_argument("--site", required=True, help="the site")
    compare.add_argument("--engine", required=True, help="an engine version (e.g. the serving)")
    compare.add_argument("--with", dest="other", required=True, help="the other engine version")
    compare.add_argument("--outcomes", type=Path, help="CSV: study (accession or UID), cancer")
    actions.add_parser("check", parents=[late], help="validate the configuration and exit")
    add_console_actions(actions, late)
    _add_delivery_actions(actions, late)


def _add_delivery_actions(
    actions: argparse._SubParsersAction[argparse.ArgumentParser], late: argparse.ArgumentParser
) -> None:
    """``edge hub acl`` and ``resend``: the boxes' broker accounts and their results again."""
    acl = actions.add_parser("acl", help="print the broker ACL stanza of a box or the hub")
    acl.add_argument("--user", required=True, help="the broker user name")
    acl.add_argument("--site", help="the box's site (omit both for the collectors' stanza)")
    acl.add_argument("--device", help="the box's device name")
    acl.add_argument("--topic-prefix", default="edge", help="mqtt.topic_prefix (default edge)")
    resend = actions.add_parser("resend", parents=[late], help="ask a box to send results again")
    resend.add_argument("--site", required=True, help="the box's site")
    resend.add_argument("--device", required=True, help="the box's device name")
    resend.add_argument(
        "--seq", metavar="A-B", help="seq A to B (or A-: A to the newest; default: unconfirmed)"
    )


def run(args: argparse.Namespace) -> int:
    try:
        from edge.hub.commands import run_hub
        from edge.hub.errors import HubError
    except ImportError as exc:
        print(
            f"edge hub needs the hub extra ({exc}): in the source folder, "
            f"{sys.executable} -m pip install '.[hub]'",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    try:
        return run_hub(args)
    except HubError as exc:
        print(f"hub error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
