"""One daemon per state folder, and a watch folder it cannot see: real ``edge run`` processes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from pydicom.uid import generate_uid
from support import Broker, DaemonProcess, Subscriber, write_config

from edge.daemon import SERVING
from edge.tools.samples import sample_cases, write_study

NOBODY, NOGROUP = 65534, 65534


def subscriber_port(daemon: DaemonProcess) -> int:
    port: int = yaml.safe_load(daemon.config.read_text())["mqtt"]["port"]
    return port


def edge(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge", *args],
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


def test_a_second_daemon_on_the_same_state_folder_exits_at_once_naming_the_first(
    daemon_factory: Callable[..., DaemonProcess], tmp_path: Path
) -> None:
    first = daemon_factory()
    assert first.process is not None
    started = time.monotonic()
    second = edge("run", "--config", str(first.config))
    assert second.returncode != 0
    assert time.monotonic() - started < 30  # it did not start serving first
    assert f"pid {first.process.pid}" in second.stderr
    assert "Traceback" not in second.stderr
    # The first goes on, and the technician's read-only tools still work beside it.
    assert first.alive()
    assert edge("status", "--config", str(first.config)).returncode == 0
    assert " serving " not in second.stdout + second.stderr


def test_a_missing_watch_folder_is_one_line_naming_the_key(broker: Broker, tmp_path: Path) -> None:
    config = write_config(tmp_path, broker.port)
    shutil.rmtree(tmp_path / "export")
    for command in (("run", "--config"), ("config", "check")):
        done = edge(*command, str(config))
        assert "Traceback" not in done.stderr
        assert "watch.dir" in done.stderr and str(tmp_path / "export") in done.stderr
        assert "does not exist" in done.stderr
    # edge run refuses; edge config check says the file is valid, and warns.
    assert edge("run", "--config", str(config)).returncode != 0
    assert "warning: edge run would not start here" in done.stderr
    (tmp_path / "export").write_text("a file, not a folder")
    done = edge("run", "--config", str(config))
    assert done.returncode != 0 and "is not a folder" in done.stderr


def test_a_watch_folder_gone_while_running_is_an_alarm_and_is_rescanned_on_return(
    daemon_factory: Callable[..., DaemonProcess], subscriber: Subscriber, tmp_path: Path
) -> None:
    daemon = daemon_factory(study={"quiet_s": 1}, health={"interval_s": 1})
    events = Subscriber(subscriber_port(daemon), ["edge/+/+/events"])
    export, away = tmp_path / "export", tmp_path / "export.away"
    os.rename(export, away)
    health = subscriber.wait_health(lambda h: "watch_unavailable" in h["alarms"], timeout=60)
    assert health["counters"]["errors"] == 0
    event = events.next("/events", timeout=30)
    events.close()
    assert isinstance(event, dict) and event["reason"] == "watch_unavailable"
    assert "watch.dir" in event["message"]
    # A study arrives while the folder is away (the exporter writes into it where it is).
    study_uid = generate_uid()
    staged = write_study(sample_cases()[0], tmp_path / "staging", accession="W1",
                         study_uid=study_uid)  # fmt: skip
    (away / study_uid).mkdir()
    os.rename(staged["rcc"], away / study_uid / "rcc.dcm")
    os.rename(away, export)
    result = subscriber.next("/results", timeout=120)
    assert isinstance(result, dict) and result["study_uid"] == study_uid
    subscriber.wait_health(lambda h: "watch_unavailable" not in h["alarms"], timeout=30)
    assert daemon.alive()
    assert "is back: watching it again" in daemon.log()


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare (util-linux)")
@pytest.mark.parametrize(
    ("limit", "sysctl"),
    [("max_inotify_instances = 0", "max_user_instances"),
     ("max_inotify_watches = 2", "max_user_watches")],
    ids=["no-instance-at-start", "no-watch-for-a-new-sub-folder"],
)  # fmt: skip
def test_inotify_refused_is_an_alarm_naming_the_sysctl_and_the_folder_is_polled(
    limit: str, sysctl: str, broker: Broker, subscriber: Subscriber, tmp_path: Path
) -> None:
    # In a user namespace of its own the daemon has inotify limits of its own (they
    # are per namespace), set here as when a box's fs.inotify limits are exhausted:
    # no instance at all, or room for the folder (and one more) and no new sub-folder.
    config = write_config(tmp_path, broker.port, study={"quiet_s": 1}, health={"interval_s": 1})
    name, value = limit.split(" = ")
    lower = f"echo {value} > /proc/sys/user/{name}"
    probe = subprocess.run(["unshare", "-U", "-r", "sh", "-c", lower], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a user namespace here: {probe.stderr.decode().strip()}")
    command = f'{lower} && exec "$0" -m edge run --config "$1"'
    log = (tmp_path / "daemon.log").open("wb")
    process = subprocess.Popen(
        ["unshare", "-U", "-r", "sh", "-c", command, sys.executable, str(config)],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    alarm = f"inotify_limit: raise fs.inotify.{sysctl}"
    try:
        first = subscriber.wait_health(lambda h: True, timeout=120)
        assert (alarm in first["alarms"]) == (name == "max_inotify_instances"), first["alarms"]
        study_uid = generate_uid()
        staged = write_study(sample_cases()[0], tmp_path / "staging", accession="P1",
                             study_uid=study_uid)  # fmt: skip
        views = tmp_path / "export" / study_uid / "views"  # no room for their watch
        views.mkdir(parents=True)
        os.rename(staged["rcc"], views / "rcc.dcm")
        health = subscriber.wait_health(lambda h: alarm in h["alarms"], timeout=60)
        assert health["counters"]["errors"] == 0
        result = subscriber.next("/results", timeout=120)
        assert isinstance(result, dict) and result["study_uid"] == study_uid
    finally:
        process.terminate()
        process.wait(timeout=60)
        log.close()


#: the service user a root test runs the daemon as (its own HOME and PATH, as systemd
#: gives it): the kernel's permission checks apply
AS_SERVICE_USER = ("setpriv", "--reset-env", "--reuid=nobody", "--regid=nogroup", "--clear-groups")


@pytest.fixture
def service_folder() -> Iterator[Path]:
    """A folder the service user can reach (pytest's own, under /tmp/pytest-of-root, is 0700)."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv (util-linux) to run the daemon as another user")
    probe = subprocess.run([*AS_SERVICE_USER, sys.executable, "-c", "import edge"],
                           capture_output=True, text=True, check=False)  # fmt: skip
    if probe.returncode != 0:
        pytest.skip(f"the service user cannot run this checkout's Python: {probe.stderr[-300:]}")
    folder = Path(tempfile.mkdtemp(prefix="edge-service-", dir="/tmp"))
    folder.chmod(0o755)
    (folder / "state").mkdir()
    os.chown(folder / "state", NOBODY, NOGROUP)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_a_watch_folder_the_service_user_cannot_read_is_an_error_then_an_alarm(
    broker: Broker, subscriber: Subscriber, service_folder: Path
) -> None:
    # Decoders in threads: this checkout's interpreter may live where the service user
    # cannot start a worker process from (a pyenv under /root, which is 0700).
    config = write_config(service_folder, broker.port, study={"quiet_s": 1},
                          health={"interval_s": 1}, log={"level": "INFO"},
                          decode={"pool": "thread"})  # fmt: skip
    export = service_folder / "export"
    export.chmod(0o700)  # root's: the service user cannot list it
    for command in (("run", "--config"), ("config", "check")):
        done = subprocess.run(
            [*AS_SERVICE_USER, sys.executable, "-m", "edge", *command, str(config)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert "Traceback" not in done.stderr
        assert f"watch.dir: {export} is not readable by nobody" in done.stderr, done.stderr
        assert f"chmod g+rx {export}" in done.stderr
        assert (done.returncode != 0) == (command[0] == "run")
    assert len(done.stderr.strip().splitlines()) <= 2  # the line, and config check's warning

    export.chmod(0o755)
    daemon = DaemonProcess(config, prefix=AS_SERVICE_USER)
    daemon.start()
    events = Subscriber(broker.port, ["edge/+/+/events"])
    try:
        daemon.wait_log(SERVING, timeout=120)
        export.chmod(0o700)  # taken away while it runs
        health = subscriber.wait_health(lambda h: "watch_unavailable" in h["alarms"], timeout=60)
        assert health["counters"]["errors"] == 0
        event = events.next("/events", timeout=30)
        assert isinstance(event, dict) and event["reason"] == "watch_unavailable"
        assert "not readable by nobody" in event["message"]
        # A study arrives meanwhile; once the folder is readable again it is rescanned.
        study_uid = generate_uid()
        staged = write_study(sample_cases()[0], service_folder / "staging", accession="U1",
                             study_uid=study_uid)  # fmt: skip
        (export / study_uid).mkdir()
        os.rename(staged["rcc"], export / study_uid / "rcc.dcm")
        export.chmod(0o755)
        result = subscriber.next("/results", timeout=120)
        assert isinstance(result, dict) and result["study_uid"] == study_uid
        subscriber.wait_health(lambda h: "watch_unavailable" not in h["alarms"], timeout=30)
        assert daemon.alive()
    finally:
        events.close()
        if daemon.alive():
            daemon.stop()
