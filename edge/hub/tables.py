"""The hub's database tables (SQLAlchemy Core), the same on SQLite and PostgreSQL.

Times are stored as UTC without a zone (the two databases agree on that form).

- ``results``: one row per result ``id``, however often it was delivered.
- ``shadow_scores``: a result's companion ``edge.shadow/1`` (a candidate engine's scores
  of the same study), one row per result that has one, for ``edge hub compare``.
- ``devices``: one row per appliance: its latest status and health, and where its
  ``seq`` numbering stands (``epoch`` counts the times it started again from 1;
  ``confirmed_seq``, what the hub has confirmed to it; ``device_last_seq``, the
  box's own newest).
- ``events``: quarantined files, errors and the like, one row per distinct message.
- ``seq_resets``: each time a device's ``seq`` went backwards (its journal was wiped).
- ``rejects``: every message the hub could not take, with the reason.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

results = Table(
    "results",
    metadata,
    Column("id", String(32), primary_key=True, comment="edge.result/1 id"),
    Column("site", String(64), nullable=False),
    Column("device", String(64), nullable=False),
    Column("epoch", Integer, nullable=False, comment="the device's seq numbering it belongs to"),
    Column("seq", BigInteger, nullable=False),
    Column("study_uid", String(64), nullable=False),
    Column("accession", String(16), nullable=False),
    Column("score", Float, nullable=False),
    Column("suspicious", Boolean, nullable=False),
    Column("threshold", Float, nullable=False),
    Column("closed_by", String(16), nullable=False),
    Column("model_name", Text, nullable=False),
    Column("model_version", Text, nullable=False),
    Column("model_sha256", String(64), nullable=False),
    Column("model_backend", String(32), nullable=False),
    Column("timings_ms", JSON, nullable=False),
    Column("document", JSON, nullable=False, comment="the whole message as received"),
    Column("created_at", DateTime, nullable=False, comment="assembled on the device"),
    Column("received_at", DateTime, nullable=False, comment="first stored by the hub"),
    Column("deliveries", Integer, nullable=False, comment="times the broker delivered it"),
    Column("last_delivery_at", DateTime, nullable=False),
    Index("results_device_seq", "site", "device", "epoch", "seq"),
    Index("results_created", "created_at"),
)

shadow_scores = Table(
    "shadow_scores",
    metadata,
    Column("result_id", String(32), primary_key=True, comment="the results row it belongs to"),
    Column("site", String(64), nullable=False),
    Column("device", String(64), nullable=False),
    Column("model_name", Text, nullable=False, comment="the engine that scored in shadow"),
    Column("model_version", Text, nullable=False),
    Column("model_sha256", String(64), nullable=False),
    Column("score", Float, nullable=False),
    Column("suspicious", Boolean, nullable=False, comment="at the shadow engine's threshold"),
    Column("threshold", Float, nullable=False),
    Column("skipped", Integer, nullable=False, comment="images of the study it did not score"),
    Column("breasts", JSON, nullable=False),
    Column("images", JSON, nullable=False),
    Index("shadow_scores_site_model", "site", "model_version"),
)

devices = Table(
    "devices",
    metadata,
    Column("site", String(64), primary_key=True),
    Column("device", String(64), primary_key=True),
    Column("first_seen", DateTime, nullable=False),
    Column("status", String(16), comment="online or offline, as last published"),
    Column("status_since", DateTime, comment="when the hub saw the status change to this"),
    Column("health", JSON, comment="the latest edge.health/1 document"),
    Column("health_at", DateTime, comment="the device's time stamp of that health"),
    Column("health_received_at", DateTime),
    Column("epoch", Integer, nullable=False),
    Column("max_seq", BigInteger, nullable=False, comment="highest seq in the current epoch"),
    Column("last_result_at", DateTime, comment="created_at of the newest result"),
    Column("confirmed_seq", BigInteger, comment="every seq up to this one is stored (epoch)"),
    Column("device_last_seq", BigInteger, comment="the box's own newest seq (hello, health)"),
    Column("device_last_seq_at", DateTime, comment="when the hub heard device_last_seq"),
)

#: columns added to ``devices`` after its first release: (name, SQL type) for the migration
DEVICE_COLUMNS_ADDED = (
    ("confirmed_seq", "BIGINT"),
    ("device_last_seq", "BIGINT"),
    ("device_last_seq_at", "TIMESTAMP"),
)

events = Table(
    "events",
    metadata,
    Column("digest", String(64), primary_key=True, comment="sha256 of topic and payload"),
    Column("site", String(64), nullable=False),
    Column("device", String(64), nullable=False),
    Column("kind", Text),
    Column("at", DateTime, comment="the device's time stamp"),
    Column("document", JSON, nullable=False),
    Column("received_at", DateTime, nullable=False),
    Column("deliveries", Integer, nullable=False),
    Index("events_device", "site", "device", "received_at"),
)

seq_resets = Table(
    "seq_resets",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("site", String(64), nullable=False),
    Column("device", String(64), nullable=False),
    Column("epoch", Integer, nullable=False, comment="the epoch that began"),
    Column("previous_max_seq", BigInteger, nullable=False),
    Column("first_seq", BigInteger, nullable=False),
    Column("result_id", String(32), nullable=False),
    Column("detected_at", DateTime, nullable=False),
)

rejects = Table(
    "rejects",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("topic", Text, nullable=False),
    Column("payload", LargeBinary, nullable=False, comment="exactly the bytes received"),
    Column("text", Text, comment="the payload as UTF-8, where it is"),
    Column("reason", String(32), nullable=False),
    Column("detail", Text, nullable=False),
    Column("received_at", DateTime, nullable=False),
    Index("rejects_received", "received_at"),
)


# -- the console's aggregates and outcomes (edge.hub.aggregates keeps them up to date) ------
#
# The collector adds to these in the same transaction as the results and health
# they count, so pages and the read API never scan every result. Counts are only
# ever incremented (INSERT ... ON CONFLICT DO UPDATE SET n = n + excluded.n),
# which two collectors may do at once.

result_days = Table(
    "result_days",
    metadata,
    Column("day", Date, primary_key=True, comment="UTC day the result was created on the box"),
    Column("site", String(64), primary_key=True),
    Column("engine", String(200), primary_key=True, comment="model name and version"),
    Column("results", BigInteger, nullable=False),
    Column("suspicious", BigInteger, nullable=False),
    Column("incomplete", BigInteger, nullable=False, comment="with a standard view missing"),
    Column("latency_ms_sum", Float, nullable=False),
    Column("latency_n", BigInteger, nullable=False),
)

result_bins = Table(
    "result_bins",
    metadata,
    Column("day", Date, primary_key=True),
    Column("site", String(64), primary_key=True),
    Column("engine", String(200), primary_key=True),
    Column("kind", String(16), primary_key=True, comment="score or latency"),
    Column("bin", Integer, primary_key=True),
    Column("count", BigInteger, nullable=False),
)

defect_hours = Table(
    "defect_hours",
    metadata,
    Column("hour", DateTime, primary_key=True),
    Column("site", String(64), primary_key=True),
    Column("device", String(64), primary_key=True),
    Column("engine", String(200), primary_key=True),
    Column("kind", String(16), primary_key=True, comment="received, quarantined or skipped"),
    Column("reason", String(64), primary_key=True, comment="'' for received"),
    Column("count", BigInteger, nullable=False),
    Index("defect_hours_site", "site", "hour"),
)

device_gaps = Table(
    "device_gaps",
    metadata,
    Column("site", String(64), primary_key=True),
    Column("device", String(64), primary_key=True),
    Column("missing", BigInteger, nullable=False, comment="seq missing over all epochs"),
)

outcome_bins = Table(
    "outcome_bins",
    metadata,
    Column("day", Date, primary_key=True, comment="the result's day"),
    Column("site", String(64), primary_key=True),
    Column("engine", String(200), primary_key=True),
    Column("bin", Integer, primary_key=True),
    Column("suspicious", Boolean, primary_key=True),
    Column("positives", BigInteger, nullable=False),
    Column("negatives", BigInteger, nullable=False),
)

outcomes = Table(
    "outcomes",
    metadata,
    Column("study_uid", String(64), primary_key=True),
    Column("result_id", String(32), nullable=False, comment="the result it is counted against"),
    Column("site", String(64), nullable=False),
    Column("engine", String(200), nullable=False),
    Column("day", Date, nullable=False),
    Column("bin", Integer, nullable=False),
    Column("suspicious", Boolean, nullable=False),
    Column("decision", String(16), nullable=False),
    Column("birads", Integer),
    Column("pathology", String(16)),
    Column("read_at", DateTime, nullable=False),
    Column("label", String(16), nullable=False, comment="positive, negative or pending"),
    Column("recorded_at", DateTime, nullable=False),
    Column("recorded_by", String(64), nullable=False),
)

outcome_history = Table(
    "outcome_history",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("study_uid", String(64), nullable=False),
    Column("document", JSON, nullable=False, comment="the record as given"),
    Column("read_at", DateTime, nullable=False),
    Column("effect", String(16), nullable=False, comment="new, superseded or older"),
    Column("recorded_at", DateTime, nullable=False),
    Column("recorded_by", String(64), nullable=False),
    Index("outcome_history_study", "study_uid", "id"),
)

audit = Table(
    "audit",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", DateTime, nullable=False),
    Column("user", String(64), nullable=False),
    Column("action", String(32), nullable=False),
    Column("detail", JSON, nullable=False),
    Index("audit_at", "at"),
)

# What the worklist, the study page and outcome matching look results up by.
Index("results_site_created", results.c.site, results.c.created_at)
Index("results_score", results.c.score)
Index("results_study", results.c.study_uid)
Index("results_accession", results.c.accession)
