"""All of ``edge doctor``'s checks, in the order a technician fixes things."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from edge.config import Config, load_config
from edge.credentials import CREDENTIALS_ENV
from edge.errors import ConfigError
from edge.tools.doctor.account import Account, run_as
from edge.tools.doctor.broker import probe_broker
from edge.tools.doctor.check import Check
from edge.tools.doctor.engine import check_engine, check_selftest
from edge.tools.doctor.folders import check_state_dir, check_watch_folder
from edge.tools.doctor.gpu import check_gpu
from edge.tools.doctor.journal import check_journal
from edge.tools.doctor.receiver import check_receiver

#: where scripts/install.sh keeps the files systemd loads as credentials (LoadCredential=)
CREDENTIALS_SOURCE = Path("/etc/edge/credentials")
#: where the running service sees them: its $CREDENTIALS_DIRECTORY
SERVICE_CREDENTIALS = Path("/run/credentials/edge.service")


def run_checks(
    config_path: Path,
    *,
    account: Account,
    credentials: Path = CREDENTIALS_SOURCE,
    broker_timeout_s: float = 10.0,
) -> Iterator[Check]:
    """Every check in order; stops after the configuration when it is invalid.

    ``credentials`` is the folder the service's credentials are loaded from;
    the doctor reads them there, as it runs outside the service.
    """
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        yield Check("config", False, str(exc), f"correct the keys named above in {config_path}")
        return
    yield Check(
        "config", True, f"{config_path} is valid (site {config.site}, device {config.device})"
    )
    yield check_watch_folder(config, account)
    yield check_state_dir(config, account)
    yield from check_receiver(config, account)
    yield check_journal(config)
    # Outside the service there is no $CREDENTIALS_DIRECTORY: read the sources.
    os.environ.setdefault(CREDENTIALS_ENV, str(credentials))
    yield probe_broker(as_seen_outside(config, credentials), timeout_s=broker_timeout_s)
    yield from run_as(account, lambda: engine_checks(config))


def engine_checks(config: Config) -> list[Check]:
    """The engine, its self-test and the GPU: what the service's own identity sees."""
    engine, bundle = check_engine(config)
    checks = [engine]
    if bundle is not None:
        checks.append(check_selftest(config, bundle))
    checks.append(check_gpu(config.engine.backend))
    return checks


def as_seen_outside(config: Config, credentials: Path) -> Config:
    """``config`` with files under the service's credential folder read at their source."""
    tls = config.mqtt.tls
    if tls is None or tls.key_file is None or not tls.key_file.is_relative_to(SERVICE_CREDENTIALS):
        return config
    key_file = credentials / tls.key_file.relative_to(SERVICE_CREDENTIALS)
    mqtt = config.mqtt.model_copy(update={"tls": tls.model_copy(update={"key_file": key_file})})
    return config.model_copy(update={"mqtt": mqtt})


def report(checks: Iterable[Check], out: Callable[[str], None]) -> bool:
    """Print each check as it completes; True when every one passed."""
    passed = True
    for check in checks:
        for line in check.lines():
            out(line)
        passed = passed and check.ok
    return passed
