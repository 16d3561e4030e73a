"""What the technician reads: every ``--help``, the default configuration, hints that paste.

One convention: every command that reads the appliance's configuration reads
/etc/edge/config.yaml unless ``--config FILE`` names another, the hub's commands
/etc/edge/hub.yaml; a hint a command prints is a command that runs as printed.
"""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from engine_bundles import edge_cli, make_bundle

from edge.cli import DEFAULT_CONFIG, DEFAULT_HUB_CONFIG, _parser, config_option

#: commands that read the appliance's configuration (bench's --config is a box to measure)
APPLIANCE = {
    "run",
    "config check",
    "doctor",
    "status",
    *(f"engines {a}" for a in ("list", "install", "verify", "activate", "rollback", "remove")),
}
HUB = {"hub", *(f"hub {a}" for a in ("devices", "results", "gaps", "check"))}


def commands(
    parser: argparse.ArgumentParser, prefix: str = ""
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every (sub)command's name and parser, listed ones only."""
    yield prefix, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            listed = {choice.dest for choice in action._choices_actions}
            for name, sub in action.choices.items():
                if name in listed:
                    yield from commands(sub, f"{prefix} {name}".strip())


ALL = dict(commands(_parser()))


def test_every_command_is_listed_with_a_help_line() -> None:
    assert set(ALL) >= APPLIANCE | HUB
    assert "engines build-plan" not in ALL  # internal: run by the plan cache only


@pytest.mark.parametrize("name", sorted(ALL))
def test_every_help_text_is_clean(name: str) -> None:
    text = ALL[name].format_help()
    assert "SUPPRESS" not in text
    assert "usage: edge" in text


@pytest.mark.parametrize("name", sorted(APPLIANCE))
def test_every_appliance_command_reads_the_default_configuration(name: str) -> None:
    parser = ALL[name]
    assert f"(default: {DEFAULT_CONFIG})" in " ".join(parser.format_help().split())
    positional = {"engines install": ["BUNDLE"], "engines activate": ["1.0"]}
    positional["engines remove"] = ["1.0"]
    args = parser.parse_args(positional.get(name, []))
    # config check keeps FILE and --config apart, and reads the default when neither
    assert getattr(args, "config", DEFAULT_CONFIG) == DEFAULT_CONFIG


@pytest.mark.parametrize("name", sorted(HUB))
def test_every_hub_command_reads_one_documented_configuration(name: str) -> None:
    args = _parser().parse_args(name.split())
    assert args.config == DEFAULT_HUB_CONFIG
    assert str(DEFAULT_HUB_CONFIG) in Path(__file__).parents[1].joinpath("docs/hub.md").read_text()


def test_the_help_of_the_real_command_lists_no_internal_action() -> None:
    run = edge_cli("engines", "--help")
    assert run.returncode == 0
    assert "build-plan" not in run.stdout and "SUPPRESS" not in run.stdout


def write_config(tmp_path: Path) -> Path:
    config = {
        "site": "clinic-1",
        "device": "box-1",
        "state_dir": str(tmp_path / "state"),
        "watch": {"dir": str(tmp_path / "export")},
        "engine": {"backend": "onnxruntime"},
    }
    path = tmp_path / "my config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_config_check_takes_a_file_or_the_config_option(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    for args in (["config", "check", path], ["config", "check", "--config", path]):
        run = edge_cli(*args)
        assert run.returncode == 0, run.stderr
        assert "valid (site clinic-1, device box-1)" in run.stdout
    both = edge_cli("config", "check", path, "--config", tmp_path / "other.yaml")
    assert both.returncode == 2 and "not both" in both.stderr
    default = edge_cli("config", "check")
    assert str(DEFAULT_CONFIG) in default.stdout + default.stderr


def test_the_install_hint_runs_as_printed(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    bundle = make_bundle(tmp_path / "bundle", version="1.0")
    run = edge_cli("engines", "install", bundle, "--allow-unsigned", "--config", path)
    assert run.returncode == 0, run.stderr
    (hint,) = [line for line in run.stdout.splitlines() if line.startswith("activate it with:")]
    command = shlex.split(hint.removeprefix("activate it with:"))
    assert command[:3] == ["edge", "engines", "activate"]
    pasted = edge_cli(*command[1:])
    assert pasted.returncode == 0, pasted.stderr
    assert "is now current" in pasted.stdout


def test_a_hint_for_the_default_configuration_names_no_option() -> None:
    assert config_option(DEFAULT_CONFIG) == ""
    assert config_option(Path("/tmp/a b.yaml")) == " --config '/tmp/a b.yaml'"
