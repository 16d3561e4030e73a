"""Configuration errors in plain words: the file, line and column; no library's phrasing.

A technician edits /etc/edge/config.yaml with nano on a clinic's box. What a
mistake prints must name that file and where in it, and say what to change in
the file's own terms, never PyYAML's ``<unicode string>`` or pydantic's
``Field required`` / ``Value error,``. Reasons written beside a quarantined
file likewise never carry a library's advice to its programmer.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
from mammo_files import header
from support import ROOT

from edge.config import load_config
from edge.errors import ConfigError, IngestError

GOOD = """\
site: clinic-1
device: box-1
state_dir: state
watch:
  dir: export
engine:
  backend: auto
mqtt:
  host: 127.0.0.1
"""

LIBRARY_WORDS = ("<unicode string>", "Field required", "Value error", "Input should be", "pydantic")


def refused(tmp_path: Path, text: str) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert not any(word in message for word in LIBRARY_WORDS), message
    return message


def test_an_indentation_error_names_the_file_line_and_column(tmp_path: Path) -> None:
    text = GOOD.replace("  host: 127.0.0.1", "  host: 127.0.0.1\n     port: 1883")
    message = refused(tmp_path, text)
    assert message.startswith(f"{tmp_path / 'config.yaml'}, line 10, column 10: not valid YAML")
    assert "indented" in message


def test_a_tab_is_named(tmp_path: Path) -> None:
    message = refused(tmp_path, GOOD.replace("  dir: export", "\tdir: export"))
    assert ", line 5, column 1:" in message and "a tab: indent with spaces only" in message


def test_a_missing_key_says_which_section_needs_it(tmp_path: Path) -> None:
    message = refused(tmp_path, GOOD.replace("  dir: export", "  settle_s: 2"))
    assert "watch.dir (line 4): missing: the watch section needs the key dir" in message


def test_a_value_error_reads_without_the_library_prefix(tmp_path: Path) -> None:
    text = GOOD + "  username: box-1\n  password: hunter2\n"
    message = refused(tmp_path, text)
    assert "mqtt.password (line 11): a password is never read from the YAML" in message
    assert "hunter2" not in message  # a value from the file is never echoed


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (("  backend: auto", "  backend: cuda"), "must be 'auto', 'onnxruntime' or 'tensorrt'"),
        (("watch:\n  dir: export", "watch: export"), "must be a section"),
        (("  host: 127.0.0.1", "  host: 127.0.0.1\n  port: many"), "must be a whole number"),
    ],
)
def test_type_errors_say_what_the_value_must_be(
    tmp_path: Path, change: tuple[str, str], words: str
) -> None:
    assert words in refused(tmp_path, GOOD.replace(*change))


def test_config_check_prints_the_plain_message(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(GOOD.replace("  dir: export", "\tdir: export"))
    run = subprocess.run(
        [str(ROOT / ".venv/bin/python"), "-m", "edge", "config", "check", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 2
    assert run.stderr.startswith(f"configuration error: {path}, line 5, column 1: not valid YAML")


def test_a_jpeg_dropped_in_the_folder_is_refused_without_pydicoms_advice(tmp_path: Path) -> None:
    ok, encoded = cv2.imencode(".jpg", np.zeros((64, 64), np.uint8))
    assert ok
    path = tmp_path / "photo.jpg"
    path.write_bytes(encoded.tobytes())
    with pytest.raises(IngestError) as caught:
        header(path)
    assert caught.value.reason == "not_dicom"
    assert "force" not in caught.value.detail.lower()
    assert "'DICM' prefix" in caught.value.detail
