"""Options of the hub's newer queries, beside the hub (the CLI builds ``edge hub``).

Only argparse here: the CLI imports this while it builds its parser, whether or not
the ``hub`` extra is installed.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_compare(
    actions: argparse._SubParsersAction[argparse.ArgumentParser], late: argparse.ArgumentParser
) -> None:
    """``edge hub compare --site S --engine A --with B [--outcomes CSV]``."""
    compare = actions.add_parser(
        "compare", parents=[late], help="two engines on the studies both scored (shadow)"
    )
    compare.add_argument("--site", required=True, help="the site")
    compare.add_argument("--engine", required=True, help="an engine version (e.g. the serving)")
    compare.add_argument("--with", dest="other", required=True, help="the other engine version")
    compare.add_argument("--outcomes", type=Path, help="CSV: study (accession or UID), cancer")
