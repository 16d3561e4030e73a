"""Configuration: valid files load, invalid ones fail at load with the key path and line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edge.config import load_config
from edge.errors import ConfigError

VALID = """\
site: clinic-1
device: box-1
state_dir: state
watch: {dir: /srv/modality-export}
study: {quiet_s: 30}
engine: {bundle: engines/demo, backend: auto}
mqtt: {host: 127.0.0.1, port: 1883, topic_prefix: edge}
health: {interval_s: 30}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_the_documented_keys_load_and_relative_paths_resolve(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, VALID))
    assert config.site == "clinic-1"
    assert config.study.quiet_s == 30
    assert config.engine.backend == "auto"
    assert config.state_dir == tmp_path.resolve() / "state"
    assert config.watch.dir == Path("/srv/modality-export")
    assert config.topic("results") == "edge/clinic-1/box-1/results"


def test_unknown_key_is_refused_with_its_path_and_line(tmp_path: Path) -> None:
    text = VALID.replace("study: {quiet_s: 30}", "study: {quiet_s: 30, quite_s: 5}")
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert "study.quite_s (line 5): unknown key" in str(info.value)


def test_invalid_value_names_the_key_line_and_expectation(tmp_path: Path) -> None:
    text = VALID.replace("backend: auto", "backend: cuda")
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    message = str(info.value)
    assert "engine.backend (line 6)" in message
    assert "'auto', 'onnxruntime' or 'tensorrt'" in message


def test_missing_required_section_is_named(tmp_path: Path) -> None:
    text = "\n".join(line for line in VALID.splitlines() if not line.startswith("watch"))
    with pytest.raises(
        ConfigError, match=r"watch: missing: the configuration needs a watch section"
    ):
        load_config(write(tmp_path, text))


def test_topic_segments_refuse_wildcards(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"site \(line 1\)"):
        load_config(write(tmp_path, VALID.replace("site: clinic-1", "site: clinic/+")))


def test_negative_quiet_period_is_refused_not_replaced(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"study.quiet_s \(line 5\).*greater than 0"):
        load_config(write(tmp_path, VALID.replace("quiet_s: 30", "quiet_s: -1")))


def test_config_check_command_exit_codes(tmp_path: Path) -> None:
    # edge config check also looks at the watch folder: one that exists.
    good = write(tmp_path, VALID.replace("/srv/modality-export", str(tmp_path)))
    ok = subprocess.run(
        [sys.executable, "-m", "edge", "config", "check", str(good)],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr
    assert "valid" in ok.stdout
    good.write_text(VALID.replace("port: 1883", "port: 99999"))
    bad = subprocess.run(
        [sys.executable, "-m", "edge", "config", "check", str(good)],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2
    assert "mqtt.port (line 7)" in bad.stderr


def test_output_into_a_closed_pipe_ends_without_a_traceback(tmp_path: Path) -> None:
    """``edge ... | head``: the reader leaves before the command writes."""
    # edge config check also looks at the watch folder: one that exists.
    good = write(tmp_path, VALID.replace("/srv/modality-export", str(tmp_path)))
    with subprocess.Popen(
        [sys.executable, "-m", "edge", "config", "check", str(good)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as process:
        assert process.stdout is not None and process.stderr is not None
        process.stdout.close()  # long before the interpreter has imported edge
        stderr = process.stderr.read().decode()
        assert process.wait(timeout=60) == 141
    assert stderr == ""
