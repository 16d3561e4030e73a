"""The journal's tables and indexes, and how an older journal gets what it lacks.

A journal is opened without writing what it already has (a full disk must not stop
the daemon from opening it): :func:`missing_schema` reads what is there first.
"""

from __future__ import annotations

import re
import sqlite3

SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sop_uid TEXT,
    study_uid TEXT,
    state TEXT NOT NULL,
    reason TEXT,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS files_by_sop ON files (sop_uid);
CREATE INDEX IF NOT EXISTS files_by_state ON files (state, updated_at);
-- retention's passes walk the files oldest first, a batch at a time
CREATE INDEX IF NOT EXISTS files_by_age ON files (updated_at, path);
CREATE TABLE IF NOT EXISTS images (
    sop_uid TEXT PRIMARY KEY,
    study_uid TEXT NOT NULL,
    accession TEXT NOT NULL,
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    laterality TEXT NOT NULL,
    view TEXT NOT NULL,
    screening INTEGER NOT NULL,
    n_rows INTEGER NOT NULL,
    n_columns INTEGER NOT NULL,
    transfer_syntax TEXT NOT NULL,
    row_direction TEXT,
    score REAL NOT NULL,
    engine_name TEXT NOT NULL,
    engine_version TEXT NOT NULL,
    engine_sha256 TEXT NOT NULL,
    engine_backend TEXT NOT NULL,
    timings TEXT NOT NULL,
    scored_at REAL NOT NULL,
    result_entry INTEGER,
    -- the regions the engine located, [[column, row, radius, score], ...]: the CAD SR's marks
    findings TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS images_open ON images (study_uid) WHERE result_entry IS NULL;
CREATE INDEX IF NOT EXISTS images_by_result ON images (result_entry);
CREATE TABLE IF NOT EXISTS results (
    entry INTEGER PRIMARY KEY,
    device TEXT NOT NULL,
    seq INTEGER NOT NULL,
    id TEXT NOT NULL,
    study_uid TEXT NOT NULL,
    score REAL NOT NULL,
    suspicious INTEGER NOT NULL,
    closed_by TEXT NOT NULL,
    images INTEGER NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    created_at REAL NOT NULL,
    delivered_at REAL,
    UNIQUE (device, seq)
);
CREATE INDEX IF NOT EXISTS results_waiting ON results (entry) WHERE delivered_at IS NULL;
CREATE TABLE IF NOT EXISTS outbox (
    entry INTEGER PRIMARY KEY REFERENCES results (entry),
    seq INTEGER NOT NULL,
    result_id TEXT NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sequence (
    device TEXT PRIMARY KEY,
    seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS shadow_images (
    sop_uid TEXT PRIMARY KEY REFERENCES images (sop_uid),
    engine_name TEXT NOT NULL,
    engine_version TEXT NOT NULL,
    engine_sha256 TEXT NOT NULL,
    engine_backend TEXT NOT NULL,
    score REAL NOT NULL,
    threshold REAL NOT NULL
);
-- a result's companion (edge.shadow/1): the shadow engine's view of the same study
CREATE TABLE IF NOT EXISTS shadow_results (
    result_entry INTEGER PRIMARY KEY REFERENCES results (entry),
    seq INTEGER NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    created_at REAL NOT NULL,
    delivered_at REAL
);
CREATE INDEX IF NOT EXISTS shadow_results_waiting ON shadow_results (result_entry)
    WHERE delivered_at IS NULL;
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    kind TEXT NOT NULL,
    reason TEXT NOT NULL,
    stage TEXT,
    file TEXT,
    study TEXT,
    message TEXT NOT NULL
);
-- the hub's last cumulative confirmation per device name (edge.confirm/1)
CREATE TABLE IF NOT EXISTS confirmations (
    device TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    result_id TEXT NOT NULL,
    confirmed_at REAL NOT NULL
);
"""


def missing_schema(db: sqlite3.Connection) -> set[str]:
    """Tables and indexes of :data:`SCHEMA` the database lacks (read, never written)."""
    wanted = set(re.findall(r"CREATE (?:TABLE|INDEX) IF NOT EXISTS (\w+)", SCHEMA))
    present = {str(row[0]) for row in db.execute("SELECT name FROM sqlite_master")}
    return wanted - present


#: columns added since a table was first created: (table, column, definition)
ADDED_COLUMNS = (("images", "findings", "TEXT NOT NULL DEFAULT '[]'"),)


def add_columns(db: sqlite3.Connection) -> None:
    """Give a journal made before a column existed that column (at the table's end).

    The schema version stays: an older daemon's journal reads the same, and
    ``edge status`` reads one not yet opened by this version (the column absent)."""
    for table, column, definition in ADDED_COLUMNS:  # read first: no write unless missing
        present = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        if column not in present:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
