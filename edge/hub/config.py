"""The hub's configuration: one YAML file, validated like the appliance's.

Every model forbids unknown keys and every error names its key path and YAML
line (``mqtt.port (line 4): Input should be less than or equal to 65535``).
Secrets never sit in the YAML: the broker and database passwords are read from
files (a systemd credential, a file only the hub's user can read).
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from edge.common.model import StrictModel, TlsConfig, topic_segment

# The appliance's validation helpers: the same key-path messages for both programs.
from edge.config import validate_yaml
from edge.errors import ConfigError

#: database back-ends the hub's SQL is written for
DIALECTS = ("sqlite", "postgresql")


class HubMqttConfig(StrictModel):
    host: str = Field("127.0.0.1", description="Broker host name or address.")
    port: Annotated[int, Field(ge=1, le=65535)] = 1883
    topic_prefix: str = Field("edge", description="First topic segment, as on the appliances.")
    group: str = Field(
        "edge-hub",
        description="Shared-subscription group: collectors with the same group split "
        "the results between them ($share/<group>/...).",
    )
    client_id: str = Field(
        default_factory=lambda: f"edge-hub-{socket.gethostname()}"[:64],
        description="Unique per collector process and stable across its restarts: the "
        "broker keeps this client's session (and what it missed) under this id.",
    )
    session_expiry_s: Annotated[int, Field(ge=60, le=4_294_967_295)] = Field(
        7 * 86400,
        description="How long the broker keeps the session and queues messages while "
        "the collector is away.",
    )
    keepalive_s: Annotated[int, Field(ge=5, le=3600)] = 30
    receive_maximum: Annotated[int, Field(ge=1, le=65535)] = Field(
        100, description="Unacknowledged messages the broker may send at once (MQTT 5)."
    )
    username: str | None = Field(None, description="Broker user name.")
    password_file: Path | None = Field(
        None, description="File holding the broker password (never the password itself)."
    )
    tls: TlsConfig | None = None
    max_message_bytes: Annotated[int, Field(ge=1024, le=268_435_455)] = Field(
        262_144,
        description="A message larger than this is refused: only its topic, size and "
        "first kilobyte are kept in rejects (reason too_large). Set the broker's "
        "message_size_limit too (docs/hub.md).",
    )
    resend_after_s: Annotated[float, Field(gt=0, le=86400)] = Field(
        10.0,
        description="A gap open this long is asked for again (edge.resend/1 to its box), "
        "and again each time this long passes while it stays open.",
    )

    _check_segments = field_validator("topic_prefix", "group")(topic_segment)


class DatabaseConfig(StrictModel):
    url: str = Field(
        "sqlite:///hub.db",
        description="SQLAlchemy URL: sqlite:///PATH (relative to this file's folder) or "
        "postgresql+psycopg://USER@HOST:PORT/DB.",
    )
    password_file: Path | None = Field(
        None, description="File holding the database password (PostgreSQL)."
    )
    batch: Annotated[int, Field(ge=1, le=10_000)] = Field(
        200, description="Messages committed together in one transaction at most."
    )

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        url = _parse_url(value)
        if url.get_backend_name() not in DIALECTS:
            raise ValueError(f"the hub supports {' and '.join(DIALECTS)} databases")
        if url.password is not None:
            raise ValueError("no password in the URL: put it in database.password_file")
        return value


class LogConfig(StrictModel):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class ConsoleConfig(StrictModel):
    """``edge hub serve``: the console in the browser and the read API."""

    host: str = Field("127.0.0.1", description="Address the console listens on.")
    port: Annotated[int, Field(ge=1, le=65535)] = 8080
    users_file: Path = Field(
        Path("users.yaml"),
        description="The console's users (argon2 password hashes, roles, API token "
        "hashes), managed by `edge hub users`.",
    )
    session_secret_file: Path = Field(
        Path("console.secret"),
        description="Key that signs session cookies; made (mode 0600) when missing.",
    )
    secure_cookies: bool = Field(
        False,
        description="Mark session cookies Secure (HTTPS only): set it behind TLS.",
    )
    session_hours: Annotated[float, Field(gt=0, le=24 * 30)] = Field(
        12.0, description="A login lasts this long."
    )
    forwarded_allow_ips: str | None = Field(
        None,
        description="Reverse proxies whose X-Forwarded-For/-Proto are trusted (uvicorn's "
        "forwarded_allow_ips), e.g. 127.0.0.1.",
    )


class MonitoringConfig(StrictModel):
    """The programme's alarm levels on the monitoring page."""

    auc_floor: Annotated[float, Field(ge=0.5, le=1.0)] = Field(
        0.88, description="Alarm when the AUC's 95 % lower bound falls below this."
    )
    psi_warn: Annotated[float, Field(gt=0)] = Field(
        0.1, description="Score drift (PSI) at or above this is a warning."
    )
    psi_alarm: Annotated[float, Field(gt=0)] = Field(
        0.25, description="Score drift (PSI) at or above this is an alarm."
    )
    reference_days: Annotated[int, Field(ge=1, le=365)] = Field(
        30,
        description="The reference score distribution: the first this many days of an "
        "engine version at a site (or the period given on the page).",
    )


class HubConfig(StrictModel):
    mqtt: HubMqttConfig = HubMqttConfig()
    database: DatabaseConfig = DatabaseConfig()
    log: LogConfig = LogConfig()
    console: ConsoleConfig = ConsoleConfig()
    monitoring: MonitoringConfig = MonitoringConfig()

    def database_url(self) -> URL:
        """The database URL with its password read from ``database.password_file``."""
        url = make_url(self.database.url)
        if self.database.password_file is not None:
            url = url.set(password=read_secret(self.database.password_file))
        return url


def _parse_url(value: str) -> URL:
    try:
        return make_url(value)
    except ArgumentError as exc:
        raise ValueError(f"not a database URL: {exc}") from None


def read_secret(path: Path) -> str:
    """The first line of a secret file, without its line end."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read secret: {exc.strerror}") from exc
    secret = text.splitlines()[0] if text else ""
    if not secret:
        raise ConfigError(f"{path}: secret file is empty")
    return secret


def load_hub_config(path: Path) -> HubConfig:
    """Read and validate the hub's configuration file.

    Relative paths (secret files, certificates, a SQLite database file) are
    resolved against the file's folder, and every secret file named is read once
    here, so a missing one fails at start with its key path.

    Raises
    ------
    ConfigError
        With one line per problem: the key path, the YAML line, what was expected.
    """
    config = validate_yaml(path, HubConfig)
    config = _resolve_paths(config, path.parent.resolve())
    _check_secrets(path, config)
    return config


def _resolve_paths(config: HubConfig, base: Path) -> HubConfig:
    def resolve(value: Path | None) -> Path | None:
        return value if value is None or value.is_absolute() else base / value

    mqtt_updates: dict[str, Any] = {"password_file": resolve(config.mqtt.password_file)}
    if config.mqtt.tls is not None:
        tls = config.mqtt.tls
        mqtt_updates["tls"] = tls.model_copy(
            update={name: resolve(getattr(tls, name)) for name in TlsConfig.model_fields}
        )
    database_updates: dict[str, Any] = {
        "password_file": resolve(config.database.password_file),
        "url": _resolve_sqlite_path(config.database.url, base),
    }
    console_updates: dict[str, Any] = {
        "users_file": resolve(config.console.users_file),
        "session_secret_file": resolve(config.console.session_secret_file),
    }
    return config.model_copy(
        update={
            "mqtt": config.mqtt.model_copy(update=mqtt_updates),
            "database": config.database.model_copy(update=database_updates),
            "console": config.console.model_copy(update=console_updates),
        }
    )


def _resolve_sqlite_path(value: str, base: Path) -> str:
    url = make_url(value)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return value
    if Path(url.database).is_absolute():
        return value
    return url.set(database=str(base / url.database)).render_as_string(hide_password=False)


def _check_secrets(path: Path, config: HubConfig) -> None:
    for key, secret in (
        ("mqtt.password_file", config.mqtt.password_file),
        ("database.password_file", config.database.password_file),
    ):
        if secret is None:
            continue
        try:
            read_secret(secret)
        except ConfigError as exc:
            raise ConfigError(f"{path}: invalid configuration:\n  {key}: {exc}") from None
