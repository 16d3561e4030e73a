"""Secrets the appliance needs, read from a file or a systemd credential, never the YAML.

systemd hands a service its credentials (``LoadCredential=``,
``LoadCredentialEncrypted=``, ``SetCredential=``) as files in a private folder
named by ``$CREDENTIALS_DIRECTORY``; only the service can read them.
"""

from __future__ import annotations

import os
from pathlib import Path

from edge.config import MqttConfig
from edge.errors import ConfigError

CREDENTIALS_ENV = "CREDENTIALS_DIRECTORY"


def broker_password(config: MqttConfig) -> str | None:
    """The broker password from ``mqtt.password_file`` or ``mqtt.password_credential``.

    Raises
    ------
    ConfigError
        Naming the key whose file or credential cannot be read or is empty.
    """
    if config.password_file is not None:
        return _read_secret(config.password_file, "mqtt.password_file")
    if config.password_credential is not None:
        folder = os.environ.get(CREDENTIALS_ENV)
        if not folder:
            raise ConfigError(
                f"mqtt.password_credential: ${CREDENTIALS_ENV} is not set (is the service "
                f"started by systemd with LoadCredential={config.password_credential}:...?)"
            )
        name = config.password_credential
        if "/" in name or name in ("", ".", ".."):
            raise ConfigError(f"mqtt.password_credential: {name!r} is not a credential name")
        return _read_secret(Path(folder) / name, "mqtt.password_credential")
    return None


def check_tls_files(config: MqttConfig) -> None:
    """Each TLS file named is readable now, by this process.

    Checked when the daemon starts rather than when the configuration loads: a key
    under ``/run/credentials`` exists only inside the service, so ``edge config
    check`` run by a technician cannot see it.

    Raises
    ------
    ConfigError
        Naming the key (``mqtt.tls.ca_file``) and why its file cannot be read.
    """
    tls = config.tls
    if tls is None:
        return
    for name in ("ca_file", "cert_file", "key_file"):
        path: Path | None = getattr(tls, name)
        if path is None:
            continue
        try:
            with path.open("rb"):
                pass
        except OSError as exc:
            raise ConfigError(
                f"mqtt.tls.{name}: cannot read {path}: {exc.strerror or exc}"
            ) from exc


def _read_secret(path: Path, key: str) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{key}: {path} is not UTF-8 text") from exc
    # The first line: files written by `echo` end with a newline that is no part of it.
    lines = text.splitlines()
    secret = lines[0] if lines else ""
    if not secret:
        raise ConfigError(f"{key}: {path} is empty")
    return secret
