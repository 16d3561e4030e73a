"""Opening the hub's database: SQLite (WAL, one writer at a time) or PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import SQLAlchemyError

from edge.hub.errors import HubError
from edge.hub.tables import DEVICE_COLUMNS_ADDED, metadata

#: seconds a SQLite writer waits for another (a second collector, a query) to finish
SQLITE_BUSY_S = 30
#: PostgreSQL advisory lock key held while the tables are created ("edgehub!")
_DDL_LOCK = 0x6564676568756221


def open_database(url: URL | str, *, writer: bool) -> Engine:
    """An engine on ``url``; for the ``writer`` (the collector) the tables are made too.

    A SQLite database runs in WAL mode (readers never block the writer) with full
    synchronous commits: the collector acknowledges a message to the broker only
    after its commit, so a commit must survive a power cut. Write transactions
    begin ``IMMEDIATE`` so that two collectors on one file queue for the write
    lock instead of failing halfway through a transaction.

    Raises
    ------
    HubError
        When the tables cannot be created, or a reader finds no SQLite file.
    """
    url = make_url(url)
    if url.get_backend_name() == "sqlite":
        engine = _sqlite_engine(url, writer=writer)
    else:
        engine = create_engine(url, pool_pre_ping=True)
    if writer:
        try:
            _create_tables(engine)
        except SQLAlchemyError as exc:
            engine.dispose()
            raise HubError(f"cannot prepare the database {_safe(url)}: {exc}") from exc
    return engine


def _create_tables(engine: Engine) -> None:
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            # Collectors starting together must not race each other's CREATE TABLE.
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _DDL_LOCK})
        metadata.create_all(connection)
        # create_all makes a missing table's indexes only: a table made by an earlier
        # version gets the indexes added since (the console's) here.
        for table in metadata.sorted_tables:
            for index in table.indexes:
                index.create(connection, checkfirst=True)
        _add_missing_columns(connection)


def _add_missing_columns(connection: Connection) -> None:
    """The one migration so far: ``devices`` columns of the confirmation protocol."""
    present = {column["name"] for column in inspect(connection).get_columns("devices")}
    for name, sql_type in DEVICE_COLUMNS_ADDED:
        if name not in present:
            connection.execute(text(f"ALTER TABLE devices ADD COLUMN {name} {sql_type}"))


def _sqlite_engine(url: URL, *, writer: bool) -> Engine:
    if url.database and url.database != ":memory:":
        path = Path(url.database)
        if writer:
            path.parent.mkdir(parents=True, exist_ok=True)
        elif not path.exists():
            raise HubError(f"no hub database at {path} (has the collector run yet?)")
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_S})

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_S * 1000}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE" if writer else "BEGIN")

    return engine


def _safe(url: URL) -> str:
    return url.render_as_string(hide_password=True)


def utc_now() -> datetime:
    """Now, as the hub's tables store times: UTC, without a zone."""
    return datetime.now(timezone.utc).replace(tzinfo=None)
