"""``edge hub``: run the collector, or answer the operator's questions.

    edge hub --config hub.yaml                  the collector, in the foreground
    edge hub devices [--json]                   every device: online?, engine, backlog, GPU
    edge hub results --since 24h [--site S] [--suspicious] [--json]
    edge hub gaps [--json]                      seq numbers missing, per device
    edge hub compare --site S --engine A --with B [--outcomes CSV] [--json]
                                                two engines on the studies both scored
    edge hub check --config hub.yaml            validate the configuration and exit
    edge hub acl --user U [--site S --device D]  the broker ACL stanza of a box or the hub
    edge hub resend --site S --device D [--seq A-B] --config hub.yaml
                                                ask a box to send results again

The queries read the database named by ``--db URL`` or by the configuration's
``database`` section. The argument parser lives in :mod:`edge.cli`, which
imports this module only when ``edge hub`` runs (the appliance never does).
"""

from __future__ import annotations

import argparse
import csv
import re
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import Connection, select
from sqlalchemy.engine import URL
from sqlalchemy.exc import SQLAlchemyError

from edge.delivery.protocol import ResendRequest, encode, resend_message
from edge.errors import ConfigError
from edge.hub.acl import box_acl, hub_acl
from edge.hub.collector import Collector
from edge.hub.compare import compare_engines
from edge.hub.config import HubConfig, load_hub_config
from edge.hub.database import open_database, utc_now
from edge.hub.errors import HubError
from edge.hub.link import publish_once
from edge.hub.queries import find_gaps, list_devices, list_results, missing_companions
from edge.hub.repair import COMPANION_WINDOW_S
from edge.hub.report import as_json, comparison_text, devices_table, gaps_table, results_table
from edge.hub.store import Store
from edge.hub.tables import devices
from edge.logs import setup_logging

_SEQ_RANGE = re.compile(r"^(\d+)(-(\d*))?$")
_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def run_hub(args: argparse.Namespace) -> int:
    """Dispatch ``edge hub [ACTION]``; returns the exit status."""
    action = args.hub_command or "collect"
    if action == "collect":
        return _collect(_config(args))
    if action in ("serve", "users", "bench"):
        from edge.hub.console import commands as console

        config = _config(args)
        return console.run(action, config, args)
    if action == "check":
        config = _config(args)
        database = config.database_url().render_as_string(hide_password=True)
        print(f"{args.config}: valid (broker {config.mqtt.host}:{config.mqtt.port}, {database})")
        return 0
    if action == "acl":
        return _acl(args)
    if action == "resend":
        return _resend(_config(args), args.site, args.device, args.seq)
    engine = open_database(_database_url(args), writer=False)
    try:
        with engine.connect() as connection:
            if action == "devices":
                rows = list_devices(connection)
                print(as_json(rows) if args.json else devices_table(rows))
            elif action == "results":
                since = parse_since(args.since, datetime.now(timezone.utc))
                found = list_results(
                    connection,
                    since=since,
                    site=args.site,
                    suspicious=args.suspicious,
                    limit=args.limit,
                )
                print(as_json(found) if args.json else results_table(found))
            elif action == "compare":
                print(_compare(connection, args))
            else:
                gaps = find_gaps(connection) + missing_companions(
                    connection, now=utc_now(), window_s=COMPANION_WINDOW_S
                )
                print(as_json(gaps) if args.json else gaps_table(gaps))
    except SQLAlchemyError as exc:
        raise HubError(f"cannot read the hub database: {exc}") from exc
    finally:
        engine.dispose()
    return 0


def _compare(connection: Connection, args: argparse.Namespace) -> str:
    outcomes = None if args.outcomes is None else read_outcomes(args.outcomes)
    comparison = compare_engines(
        connection, site=args.site, engine=args.engine, other=args.other, outcomes=outcomes
    )
    return as_json([comparison]) if args.json else comparison_text(comparison)


def read_outcomes(path: Path) -> Mapping[str, bool]:
    """The outcome source for ``edge hub compare``: a CSV file with the columns ``study``
    (accession number or Study Instance UID) and ``cancer`` (1/0, true/false, yes/no).

    Raises
    ------
    HubError
        When the file cannot be read or a row does not say.
    """
    answers = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as exc:
        raise HubError(f"--outcomes {path}: {exc.strerror or exc}") from exc
    outcomes = {}
    for line, row in enumerate(rows, start=2):
        study, cancer = (row.get("study") or "").strip(), (row.get("cancer") or "").strip().lower()
        if not study or cancer not in answers:
            raise HubError(f"--outcomes {path} line {line}: expected study and cancer (1 or 0)")
        outcomes[study] = answers[cancer]
    return outcomes


def _collect(config: HubConfig) -> int:
    setup_logging(config.log.level)
    engine = open_database(config.database_url(), writer=True)
    try:
        Collector(config, Store(engine)).run()
    finally:
        engine.dispose()
    return 0


def _acl(args: argparse.Namespace) -> int:
    if (args.site is None) != (args.device is None):
        raise HubError("edge hub acl: give both --site and --device (a box), or neither (the hub)")
    if args.site is None:
        print(hub_acl(args.topic_prefix, args.user), end="")
    else:
        print(box_acl(args.topic_prefix, args.site, args.device, args.user), end="")
    return 0


def _resend(config: HubConfig, site: str, device: str, seq: str | None) -> int:
    """Publish an ``edge.resend/1`` to the box; without ``--seq``, from the hub's
    confirmation on (what the box still holds unconfirmed, and anything after it)."""
    if seq is None:
        first, last = _confirmed(config, site, device) + 1, None
    else:
        first, last = parse_seq_range(seq)
    request = ResendRequest(site, device, first, last, "operator")
    topic = f"{config.mqtt.topic_prefix}/{site}/{device}/resend"
    publish_once(config.mqtt, topic, encode(resend_message(request)))
    print(f"asked {site}/{device} for seq {first}..{'newest' if last is None else last} again")
    return 0


def _confirmed(config: HubConfig, site: str, device: str) -> int:
    engine = open_database(config.database_url(), writer=False)
    try:
        with engine.connect() as connection:
            value = connection.execute(
                select(devices.c.confirmed_seq).where(
                    devices.c.site == site, devices.c.device == device
                )
            ).scalar()
    except SQLAlchemyError as exc:
        raise HubError(f"cannot read the hub database: {exc}") from exc
    finally:
        engine.dispose()
    return int(value or 0)


def parse_seq_range(text: str) -> tuple[int, int | None]:
    """``--seq``: ``A-B``, ``A-`` (to the newest) or ``A``.

    Raises
    ------
    HubError
        For anything else, or B below A.
    """
    match = _SEQ_RANGE.match(text.strip())
    if match is None:
        raise HubError(f"--seq {text!r}: expected A-B, A- or A, with A >= 1")
    first = int(match.group(1))
    last = first if match.group(2) is None else (int(match.group(3)) if match.group(3) else None)
    if first < 1 or (last is not None and last < first):
        raise HubError(f"--seq {text!r}: expected 1 <= A <= B")
    return first, last


def _config(args: argparse.Namespace) -> HubConfig:
    if args.config is None:
        raise ConfigError("edge hub: give the configuration with --config HUB.yaml")
    return load_hub_config(args.config)


def _database_url(args: argparse.Namespace) -> URL | str:
    if args.db is not None:
        return str(args.db)
    if args.config is None:
        raise ConfigError("edge hub: name the database with --db URL or --config HUB.yaml")
    return load_hub_config(args.config).database_url()


def parse_since(text: str, now: datetime) -> datetime:
    """``--since``: ``30m``, ``24h``, ``7d`` before ``now``, or an RFC 3339 date or time.

    A date or time without an offset is taken as UTC. Returns naive UTC, as stored.

    Raises
    ------
    HubError
        For anything else.
    """
    relative = _RELATIVE.match(text.strip())
    if relative:
        amount, unit = float(relative.group(1)), relative.group(2)
        moment = now - timedelta(**{_UNITS[unit]: amount})
    else:
        try:
            moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        except ValueError:
            raise HubError(
                f"--since {text!r}: expected 30m, 24h, 7d, a date (2025-01-31) or a time "
                "(2025-01-31T08:00:00Z)"
            ) from None
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(timezone.utc).replace(tzinfo=None)
