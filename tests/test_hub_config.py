"""The hub's configuration: every error names its key path; secrets come from files."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from edge.errors import ConfigError
from edge.hub.commands import parse_since
from edge.hub.config import load_hub_config
from edge.hub.errors import HubError
from edge.hub.messages import parse_time


def write(folder: Path, text: str) -> Path:
    path = folder / "hub.yaml"
    path.write_text(text)
    return path


def test_an_empty_file_gives_the_defaults_with_the_database_beside_it(tmp_path: Path) -> None:
    config = load_hub_config(write(tmp_path, ""))
    assert config.mqtt.topic_prefix == "edge"
    assert config.mqtt.group == "edge-hub"
    assert config.mqtt.session_expiry_s == 7 * 86400
    assert config.database.url == f"sqlite:///{tmp_path / 'hub.db'}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mqtt:\n  hots: broker\n", "mqtt.hots (line 2): unknown key"),
        ("mqtt:\n  port: 70000\n", "mqtt.port (line 2): must be less than or equal"),
        ("mqtt:\n  group: a/b\n", "mqtt.group (line 2): must be 1-64 characters"),
        ("database:\n  url: mysql://db/hub\n", "database.url (line 2): the hub"),
        ("database:\n  url: not a url\n", "database.url (line 2): not a database"),
        (
            "database:\n  url: postgresql+psycopg://hub:secret@db/hub\n",
            "database.url (line 2): no password in the URL",
        ),
        ("log: {level: LOUD}\n", "log.level (line 1): must be"),
    ],
)
def test_an_invalid_setting_fails_with_its_key_path(
    tmp_path: Path, text: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as failure:
        load_hub_config(write(tmp_path, text))
    assert expected in str(failure.value)


def test_passwords_are_read_from_files_relative_to_the_configuration(tmp_path: Path) -> None:
    (tmp_path / "db.pass").write_text("s3cret\n")
    config = load_hub_config(
        write(
            tmp_path,
            "database:\n  url: postgresql+psycopg://hub@db.example:5432/hub\n"
            "  password_file: db.pass\n",
        )
    )
    assert config.database_url().password == "s3cret"
    with pytest.raises(ConfigError, match=r"mqtt.password_file: .*missing.pass: cannot read"):
        load_hub_config(write(tmp_path, "mqtt:\n  username: hub\n  password_file: missing.pass\n"))


def test_check_validates_without_connecting(tmp_path: Path) -> None:
    good = write(tmp_path, "mqtt: {host: broker.example, port: 8883}\n")
    done = subprocess.run(
        [sys.executable, "-m", "edge", "hub", "check", "--config", str(good)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "valid (broker broker.example:8883" in done.stdout
    bad = write(tmp_path, "mqtt: {port: none}\n")
    done = subprocess.run(
        [sys.executable, "-m", "edge", "hub", "check", "--config", str(bad)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert "mqtt.port (line 1)" in done.stderr


@pytest.mark.parametrize(
    ("text", "utc"),
    [
        ("2025-03-01T12:00:00Z", "2025-03-01 12:00:00"),
        ("2025-03-01T13:30:00+01:30", "2025-03-01 12:00:00"),
        ("2025-03-01T12:00:00", None),  # no offset: not RFC 3339, not guessed
        ("yesterday", None),
        (17, None),
    ],
)
def test_times_are_read_as_rfc3339_into_utc(text: object, utc: str | None) -> None:
    parsed = parse_time(text)
    assert (None if parsed is None else str(parsed)) == utc


@pytest.mark.parametrize(
    ("text", "since"),
    [
        ("30m", "2025-03-01 11:30:00"),
        ("7d", "2025-02-22 12:00:00"),
        ("2025-02-01", "2025-02-01 00:00:00"),
        ("2025-02-01T10:00:00+02:00", "2025-02-01 08:00:00"),
    ],
)
def test_since_takes_a_duration_or_a_time(text: str, since: str) -> None:
    now = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)
    assert str(parse_since(text, now)) == since


def test_since_refuses_anything_else() -> None:
    with pytest.raises(HubError, match="expected 30m, 24h, 7d"):
        parse_since("last tuesday", datetime.now(timezone.utc))


def test_the_appliance_never_imports_the_hub() -> None:
    probe = (
        "import sys, edge.cli, edge.daemon\n"
        "edge.cli._parser()\n"
        "loaded = sorted(m for m in sys.modules if m.startswith(('edge.hub', 'sqlalchemy')))\n"
        "print(loaded)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    assert done.stdout.strip() == "[]"
