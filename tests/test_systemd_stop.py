"""A stop (SIGTERM, as systemctl stop sends) ends the service in time and loses nothing."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

from daemons import wait_for
from journal_builders import read_journal
from support import DaemonProcess, Subscriber
from systemd_engines import make_bundle

from edge.journal import Journal
from edge.tools.samples import sample_cases, write_study

#: the unit's TimeoutStopSec: after it systemd would kill the service
TIMEOUT_STOP_S = 90


def test_sigterm_mid_study_exits_cleanly_and_the_next_start_finishes_it(
    daemon_factory: Callable[..., DaemonProcess], subscriber: Subscriber, tmp_path: Path
) -> None:
    bundle = make_bundle(tmp_path / "engine")
    overrides = {"engine": {"bundle": str(bundle), "threads": 1}}
    first = daemon_factory(**overrides)
    staging = tmp_path / "staging"
    files: list[list[Path]] = []
    for n, case in enumerate(sample_cases()):
        study = write_study(case, staging / str(n), accession=f"ACC{n}", patient="TEST^STOP")
        files.append([path.rename(staging / f"s{n}-{view}.dcm") for view, path in study.items()])
    assert len(files) == 2 and all(len(study) == 4 for study in files)
    export = tmp_path / "export"

    for path in [*files[0], *files[1][:2]]:
        path.rename(export / path.name)
    first.wait_log("result seq 1 journalled")
    # The stop comes with the second study half scored; its other half arrives after.
    state = tmp_path / "state"
    wait_for(lambda: read_journal(state, Journal.file_counts).get("scored") == 2, 60, "2 scored")
    assert first.stop(signal.SIGTERM, timeout=TIMEOUT_STOP_S) == 0
    assert "stopped" in first.log()
    done = subscriber.next("/results", 10)
    for path in files[1][2:]:
        path.rename(export / path.name)

    second = daemon_factory(**overrides)
    assert "resuming: 2 scored images of open studies" in second.run_log()
    finished = subscriber.next("/results", 120)
    assert isinstance(done, dict) and isinstance(finished, dict)
    assert (done["seq"], finished["seq"]) == (1, 2)
    assert done["study_uid"] != finished["study_uid"]
    for result in (done, finished):
        assert result["closed_by"] == "complete" and not result["missing_views"]
    assert "TEST^STOP" not in first.log()
