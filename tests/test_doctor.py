"""``edge doctor`` as a technician runs it: a real process, a real broker, real engines."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from certificates import Pki, make_certificates
from engine_bundles import flip_byte
from support import DEMO_BUNDLE, ROOT, Broker, free_port, wait_for_port, write_config
from systemd_engines import make_bundle

from edge.tools.doctor.gpu import describe_gpu


def doctor(config: Path, *extra: str) -> tuple[int, dict[str, list[str]]]:
    """Run ``edge doctor``; its exit code and its lines grouped by check name."""
    done = subprocess.run(
        [sys.executable, "-m", "edge", "doctor", "--config", str(config), "--timeout=10", *extra],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
        check=False,
    )
    checks: dict[str, list[str]] = {}
    current: list[str] = []
    for line in done.stdout.splitlines():
        if line.startswith(("OK ", "FAIL ")):
            word, name = line.split()[:2]
            current = checks.setdefault(name, [])
            current.append(word)
        current.append(line.strip())
    assert checks, f"no checks printed:\n{done.stdout}\n{done.stderr}"
    return done.returncode, checks


def status_of(checks: dict[str, list[str]], name: str) -> str:
    return checks[name][0]


def text_of(checks: dict[str, list[str]], name: str) -> str:
    return "\n".join(checks[name][1:])


@pytest.fixture
def engine(tmp_path: Path) -> Path:
    return make_bundle(tmp_path / "engine")


def healthy_config(
    tmp_path: Path, port: int, engine: Path, backend: str = "onnxruntime", **overrides: Any
) -> Path:
    engine_section = {"bundle": str(engine), "threads": 1, "backend": backend}
    config = write_config(tmp_path, port, engine=engine_section, **overrides)
    (tmp_path / "state").mkdir(exist_ok=True)
    return config


def test_a_ready_box_passes_every_check(tmp_path: Path, broker: Broker, engine: Path) -> None:
    code, checks = doctor(healthy_config(tmp_path, broker.port, engine))
    assert code == 0, checks
    names = ["config", "watch", "state", "journal", "broker", "engine", "selftest", "gpu"]
    assert list(checks) == names
    assert all(status_of(checks, name) == "OK" for name in checks), checks
    assert "connected and logged in (no TLS)" in text_of(checks, "broker")
    assert "files match their sha256" in text_of(checks, "engine")
    assert "3 self-test inputs on onnxruntime" in text_of(checks, "selftest")


def test_missing_watch_folder_fails_with_how_to_create_it(
    tmp_path: Path, broker: Broker, engine: Path
) -> None:
    config = healthy_config(tmp_path, broker.port, engine, watch={"dir": str(tmp_path / "gone")})
    code, checks = doctor(config)
    assert code == 1
    assert status_of(checks, "watch") == "FAIL"
    assert f"{tmp_path / 'gone'} does not exist" in text_of(checks, "watch")
    assert "fix: create it (install -d" in text_of(checks, "watch")
    assert status_of(checks, "broker") == "OK"  # one failure does not hide the other checks


def test_unreachable_broker_fails_with_what_to_check(tmp_path: Path, engine: Path) -> None:
    port = free_port()  # nothing listens there
    code, checks = doctor(healthy_config(tmp_path, port, engine))
    assert code == 1
    assert status_of(checks, "broker") == "FAIL"
    assert f"127.0.0.1:{port}: cannot connect (Connection refused)" in text_of(checks, "broker")
    assert "fix: check mqtt.host and mqtt.port" in text_of(checks, "broker")


@pytest.mark.skipif(
    not (DEMO_BUNDLE / "manifest.yaml").exists(), reason="the demo bundle is not committed yet"
)
def test_corrupt_demo_engine_fails_with_reinstall_hint(tmp_path: Path, broker: Broker) -> None:
    copy = tmp_path / "demo"
    shutil.copytree(DEMO_BUNDLE, copy)
    manifest = yaml.safe_load((copy / "manifest.yaml").read_text())
    flip_byte(copy / manifest["model"])
    assert_corrupt_engine_reported(tmp_path, broker, copy, manifest["model"])


def test_corrupt_engine_fails_with_reinstall_hint(
    tmp_path: Path, broker: Broker, engine: Path
) -> None:
    flip_byte(engine / "model.onnx")
    assert_corrupt_engine_reported(tmp_path, broker, engine, "model.onnx")


def assert_corrupt_engine_reported(tmp_path: Path, broker: Broker, bundle: Path, name: str) -> None:
    code, checks = doctor(healthy_config(tmp_path, broker.port, bundle))
    assert code == 1
    assert status_of(checks, "engine") == "FAIL"
    assert f"{name} does not match its sha256" in text_of(checks, "engine")
    assert "fix: install the engine again" in text_of(checks, "engine")
    assert "selftest" not in checks  # a bundle that fails its checksum is never run


def test_store_engine_is_the_one_checked(tmp_path: Path, broker: Broker, engine: Path) -> None:
    config = healthy_config(tmp_path, broker.port, engine)
    install = ["engines", "install", str(engine), "--activate", "--allow-unsigned"]
    installed = subprocess.run(
        [sys.executable, "-m", "edge", *install, f"--config={config}"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    code, checks = doctor(config)
    assert code == 0, checks
    assert "the engine store's current engine" in text_of(checks, "engine")
    assert "installed unsigned" in text_of(checks, "engine")

    flip_byte(tmp_path / "state" / "engines" / "test-mean" / "1.0.0" / "model.onnx")
    code, checks = doctor(config)
    assert code == 1
    assert status_of(checks, "engine") == "FAIL"
    assert "model.onnx does not match its sha256" in text_of(checks, "engine")


def test_engine_failing_its_selftest_fails(tmp_path: Path, broker: Broker, engine: Path) -> None:
    # Expected outputs that the model does not give, with the manifest re-hashed to
    # match: a bundle that verifies but scores differently from what its maker saw.
    with np.load(engine / "selftest.npz") as data:
        inputs, outputs = data["inputs"], data["outputs"]
    np.savez(engine / "selftest.npz", inputs=inputs, outputs=outputs + 0.01)
    manifest = yaml.safe_load((engine / "manifest.yaml").read_text())
    manifest["files"]["selftest.npz"] = sha256(engine / "selftest.npz")
    (engine / "manifest.yaml").write_text(yaml.safe_dump(manifest))

    code, checks = doctor(healthy_config(tmp_path, broker.port, engine))
    assert code == 1
    assert status_of(checks, "engine") == "OK"
    assert status_of(checks, "selftest") == "FAIL"
    assert "exceeds the tolerance" in text_of(checks, "selftest")


def test_invalid_config_fails_and_names_the_key(tmp_path: Path, broker: Broker) -> None:
    config = write_config(tmp_path, broker.port, mqtt={"port": 99999})
    code, checks = doctor(config)
    assert code == 1
    assert list(checks) == ["config"]
    assert "mqtt.port" in text_of(checks, "config")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- TLS and login, with the credentials where the unit loads them from ------------------------


class TlsBroker:
    """mosquitto that wants TLS, a client certificate and a password."""

    def __init__(self, folder: Path, pki: Pki, user: str, password: str) -> None:
        self.folder = folder
        self.port = free_port()
        passwords = folder / "passwords"
        subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwords), user, password], check=True)
        conf = folder / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            f"cafile {pki.ca}\ncertfile {pki.server_cert}\nkeyfile {pki.server_key}\n"
            "require_certificate true\n"
            "allow_anonymous false\n"
            f"password_file {passwords}\n"
            # Stay root: the test's folders are private to root, and mosquitto
            # reads the password file after dropping to its own user otherwise.
            "user root\n"
        )
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        with (folder / "mosquitto.log").open("ab") as log:
            self.process = subprocess.Popen([binary, "-c", str(conf)], stdout=log, stderr=log)
        try:
            wait_for_port(self.port)
        except TimeoutError:
            self.stop()
            raise

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[tuple[TlsBroker, Pki]]:
    folder = tmp_path / "tls-broker"
    pki = make_certificates(folder, "hub")
    broker = TlsBroker(folder, pki, "box-1", "right horse battery")
    yield broker, pki
    broker.stop()


def tls_config(tmp_path: Path, port: int, engine: Path, ca: Path, cert: Path) -> Path:
    return healthy_config(
        tmp_path,
        port,
        engine,
        mqtt={
            "port": port,
            "username": "box-1",
            "password_credential": "mqtt-password",
            "tls": {
                "ca_file": str(ca),
                "cert_file": str(cert),
                "key_file": "/run/credentials/edge.service/mqtt-tls-key",
            },
        },
    )


def credentials(tmp_path: Path, pki: Pki, password: str) -> Path:
    """The folder scripts/install.sh makes (/etc/edge/credentials), with the unit's names."""
    folder = tmp_path / "credentials"
    folder.mkdir()
    (folder / "mqtt-password").write_text(password + "\n")
    shutil.copy(pki.client_key, folder / "mqtt-tls-key")
    return folder


def test_tls_broker_with_login_from_credentials_passes(
    tmp_path: Path, tls_broker: tuple[TlsBroker, Pki], engine: Path
) -> None:
    broker, pki = tls_broker
    config = tls_config(tmp_path, broker.port, engine, pki.ca, pki.client_cert)
    store = credentials(tmp_path, pki, "right horse battery")
    code, checks = doctor(config, "--credentials", str(store))
    assert status_of(checks, "broker") == "OK", checks
    assert "connected and logged in (TLS, user box-1)" in text_of(checks, "broker")
    assert code == 0, checks


def test_wrong_password_fails_with_where_the_password_is(
    tmp_path: Path, tls_broker: tuple[TlsBroker, Pki], engine: Path
) -> None:
    broker, pki = tls_broker
    config = tls_config(tmp_path, broker.port, engine, pki.ca, pki.client_cert)
    store = credentials(tmp_path, pki, "wrong horse")
    code, checks = doctor(config, "--credentials", str(store))
    assert code == 1
    assert status_of(checks, "broker") == "FAIL"
    assert "the broker refused the login" in text_of(checks, "broker")
    assert "mqtt-password" in text_of(checks, "broker")


def test_untrusted_broker_certificate_fails_at_the_handshake(
    tmp_path: Path, tls_broker: tuple[TlsBroker, Pki], engine: Path
) -> None:
    broker, pki = tls_broker
    other = make_certificates(tmp_path / "other-ca", "other")
    config = tls_config(tmp_path, broker.port, engine, other.ca, pki.client_cert)
    store = credentials(tmp_path, pki, "right horse battery")
    code, checks = doctor(config, "--credentials", str(store))
    assert code == 1
    assert status_of(checks, "broker") == "FAIL"
    assert "certificate is not trusted" in text_of(checks, "broker")
    assert "fix: set mqtt.tls.ca_file" in text_of(checks, "broker")


@pytest.mark.skipif(os.geteuid() != 0, reason="trying another user's permissions needs root")
def test_folders_are_tried_with_the_service_users_permissions(
    tmp_path: Path, broker: Broker, engine: Path
) -> None:
    # Root may read anything; the service user may not: the test's folders are
    # private to root, so "nobody" (standing in for edge) can use neither.
    code, checks = doctor(healthy_config(tmp_path, broker.port, engine), "--user", "nobody")
    assert code == 1
    assert status_of(checks, "watch") == "FAIL"
    assert "is not readable by nobody" in text_of(checks, "watch")
    assert status_of(checks, "state") == "FAIL"
    assert "is not writable by nobody" in text_of(checks, "state")
    assert "fix: chown -R nobody:" in text_of(checks, "state")
    # The engine checks ran as nobody too, who cannot reach the engine either.
    assert status_of(checks, "engine") == "FAIL"


@pytest.mark.skipif(describe_gpu() is not None, reason="this machine has an NVIDIA GPU")
def test_tensorrt_backend_without_a_gpu_fails(tmp_path: Path, broker: Broker, engine: Path) -> None:
    config = healthy_config(tmp_path, broker.port, engine, backend="tensorrt")
    code, checks = doctor(config)
    assert code == 1
    assert status_of(checks, "gpu") == "FAIL"
    assert "no NVIDIA GPU seen, but engine.backend is tensorrt" in text_of(checks, "gpu")
    assert "fix: install the NVIDIA driver, or set engine.backend: auto" in text_of(checks, "gpu")
