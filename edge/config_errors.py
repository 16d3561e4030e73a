"""Configuration errors in a technician's words: the file, the line, what to change.

PyYAML and pydantic describe a problem to a programmer (``in "<unicode string>",
line 6, column 12``, ``Field required``, ``Value error, ...``, ``Input should be a
valid dictionary or instance of WatchConfig``). These functions say the same in
terms of the file being edited: its name, the line and column, and the key path.
They never quote a value from the file: a misplaced password must not be echoed.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

#: PyYAML's problems, in the words of someone editing the file
_YAML_PROBLEMS = {
    "mapping values are not allowed here": (
        "a ':' where no key can start: is this line indented too far, or does a value "
        "hold ': ' (then quote it)?"
    ),
    "could not find expected ':'": (
        "a key without its ':', or a line indented unlike its neighbours"
    ),
    "found character '\\t' that cannot start any token": "a tab: indent with spaces only",
    "found a tab character that violates indentation": "a tab: indent with spaces only",
    "found undefined alias": "an '*' that starts a value: quote the value",
    "found duplicate anchor": "an '&' that starts a value: quote the value",
}
_TYPE_WORDS = {
    "model_type": "must be a section: keys on the lines below it, indented, or {key: value}",
    "dict_type": "must be a section: keys on the lines below it, indented, or {key: value}",
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "int_parsing": "must be a whole number",
    "int_type": "must be a whole number",
    "int_from_float": "must be a whole number",
    "bool_parsing": "must be true or false",
    "bool_type": "must be true or false",
    "string_type": "must be text (quote it if it looks like a number or true/false)",
    "path_type": "must be a path",
    "tuple_type": "must be a list: [a, b] or one '- item' line each",
    "list_type": "must be a list: [a, b] or one '- item' line each",
    "none_required": "must not be set here",
    "extra_forbidden": "unknown key (misspelt, or not valid here)",
}


def describe_yaml_error(path: Path, exc: yaml.YAMLError) -> str:
    """``FILE, line L, column C: what is wrong``, from a PyYAML error."""
    mark = getattr(exc, "problem_mark", None)
    problem = str(getattr(exc, "problem", "") or "")
    where = str(path)
    if mark is not None:
        where += f", line {mark.line + 1}, column {mark.column + 1}"
    words = _YAML_PROBLEMS.get(problem)
    if words is None:
        context = str(getattr(exc, "context", "") or "")
        words = f"{problem} ({context})" if problem and context else problem or "unreadable"
        if "expected <block end>" in problem or "expected <block end>" in context:
            words = "this line is indented unlike the lines of its section above"
    return f"{where}: not valid YAML: {words}"


def describe_validation(
    path: Path,
    exc: ValidationError,
    lines: dict[tuple[str, ...], int],
    model: type[BaseModel],
) -> str:
    """One line per invalid key of ``model``: its path, its line, and what it must be."""
    problems = [_problem(error, lines, model) for error in exc.errors()]
    return f"{path}: invalid configuration:\n" + "\n".join(problems)


def _problem(error: ErrorDetails, lines: dict[tuple[str, ...], int], model: type[BaseModel]) -> str:
    loc = tuple(str(part) for part in error["loc"])
    where = ".".join(loc) or "(top level)"
    line = _nearest_line(loc, lines)
    if line is not None:
        where += f" (line {line})"
    return f"  {where}: {_message(error, loc, model)}"


def _message(error: ErrorDetails, loc: tuple[str, ...], model: type[BaseModel]) -> str:
    kind = error["type"]
    if kind == "missing" and loc:
        owner = f"the {'.'.join(loc[:-1])} section" if len(loc) > 1 else "the configuration"
        what = f"a {loc[-1]} section" if _is_section(model, loc) else f"the key {loc[-1]}"
        return f"missing: {owner} needs {what}"
    if kind in _TYPE_WORDS:
        return _TYPE_WORDS[kind]
    message = str(error["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    return message.replace("Input should be", "must be").replace("String should", "must")


def _is_section(model: type[BaseModel], loc: tuple[str, ...]) -> bool:
    """Whether the field at ``loc`` is itself a model (a section of keys)."""
    current: object = model
    for part in loc:
        fields = getattr(current, "model_fields", None)
        if not isinstance(fields, dict) or part not in fields:
            return False
        current = fields[part].annotation
    return isinstance(current, type) and issubclass(current, BaseModel)


def _nearest_line(loc: tuple[str, ...], lines: dict[tuple[str, ...], int]) -> int | None:
    # A missing key has no line of its own: point at its parent mapping.
    for end in range(len(loc), -1, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return None
