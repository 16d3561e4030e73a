"""A stop (SIGTERM, as systemctl stop sends) ends the service in time and loses nothing."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

from support import DaemonProcess, Subscriber
from systemd_engines import make_bundle

from edge.samples import sample_cases, write_study

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
    # The second study is half scored; its other half arrives as the stop comes.
    for path in files[1][2:]:
        path.rename(export / path.name)
    assert first.stop(signal.SIGTERM, timeout=TIMEOUT_STOP_S) == 0
    assert "stopped" in first.log()

    daemon_factory(**overrides)
    results = {}
    while len(results) < 2:
        result = subscriber.next("/results", 120)
        assert isinstance(result, dict)
        results[result["study_uid"]] = result
    assert all(r["closed_by"] == "complete" and not r["missing_views"] for r in results.values())
    assert "TEST^STOP" not in first.log()
