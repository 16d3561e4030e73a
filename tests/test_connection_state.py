"""Broker settings an operator fixes on a running box: a password file, a missing CA file."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from daemons import start_daemon, wait_for
from support import Subscriber, write_config
from test_connection import PASSWORD, USER, SecureBroker, secure_broker

__all__ = ["secure_broker", "start_daemon"]  # fixtures


def test_a_fixed_password_file_is_read_again_without_a_restart(
    secure_broker: SecureBroker, start_daemon: Any, tmp_path: Path
) -> None:
    password_file = tmp_path / "mqtt-password"
    password_file.write_text("an old password\n")
    listener = Subscriber(secure_broker.broker.port, ["edge/+/+/status"])
    # A long back-off: only the SIGHUP can make it try again within the test.
    daemon = start_daemon(
        secure_broker.password,
        mqtt={
            "username": USER,
            "password_file": str(password_file),
            "reconnect_min_s": 60,
            "reconnect_max_s": 120,
        },
    )
    try:
        wait_for(lambda: "refused the connection" in daemon.log(), 30, "a refusal", daemon)
        password_file.write_text(PASSWORD + "\n")
        assert daemon.process is not None
        daemon.process.send_signal(signal.SIGHUP)
        assert listener.next("/status", 30) == b"online"
    finally:
        listener.close()
    assert PASSWORD not in daemon.log()
    assert daemon.alive()


def test_a_missing_ca_file_is_a_configuration_error_naming_its_key(tmp_path: Path) -> None:
    config = write_config(tmp_path, 1883, mqtt={"tls": {"ca_file": str(tmp_path / "nope.pem")}})
    done = subprocess.run(
        [sys.executable, "-m", "edge", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done
    assert "mqtt.tls.ca_file: cannot read" in done.stderr and "nope.pem" in done.stderr
    assert "Traceback" not in done.stderr
