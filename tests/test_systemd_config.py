"""systemd/config.example.yaml: valid as written, and naming every key edge/config.py has."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel
from support import ROOT

from edge.config import Config, load_config

EXAMPLE = ROOT / "systemd" / "config.example.yaml"
#: keys that exist only to be refused with a helpful message
REFUSED = {"mqtt.password"}


def key_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    paths = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        paths.append(path)
        nested = [t for t in (field.annotation, *get_args(field.annotation)) if _is_model(t)]
        for sub in nested:
            paths += key_paths(sub, f"{path}.")
    return paths


def _is_model(value: Any) -> bool:
    return isinstance(value, type) and issubclass(value, BaseModel)


def test_example_is_a_valid_configuration() -> None:
    config = load_config(EXAMPLE)
    assert config.state_dir == Path("/var/lib/edge")
    assert config.watch.dir == Path("/srv/edge/export")


def test_example_names_every_key() -> None:
    text = EXAMPLE.read_text()
    named = set(re.findall(r"^[#\s]*([a-z_]+):", text, flags=re.MULTILINE))
    missing = [
        path
        for path in key_paths(Config)
        if path not in REFUSED and path.rsplit(".", 1)[-1] not in named
    ]
    assert missing == []
