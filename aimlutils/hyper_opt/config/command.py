"""The checks of a command objective (``optuna.objective: {command: ..., pass-as: ...}``), and
:class:`CommandSpec`, what they give: how a trial's command line is made.

Here, in config, since ``hyper.yml`` is checked on the login node before anything else loads;
:mod:`aimlutils.hyper_opt.objective.command` runs the command.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from aimlutils.hyper_opt.errors import Problem, format_value, join_path

#: Placeholders every command may use besides the parameter names.
RESERVED = ("parameters", "config", "trial", "gpus", "checkpoint")
#: The default way a parameter is passed by ``{parameters}``.
DEFAULT_PASS_AS = "--{name}={v}"  # noqa: S105 (a template, not a password)
_KEYS = ("command", "pass-as")
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]*)\}")


@dataclasses.dataclass(frozen=True)
class CommandSpec:
    """A checked ``optuna.objective`` mapping.

    Example:
        >>> spec = CommandSpec(("train", "--lr={lr}", "{parameters}"), {"lr": "-l {v}"})
        >>> spec.argv({"lr": 0.5, "units": 8}, config="m.yml", trial=0)
        ['train', '--lr=0.5', '-l', '0.5', '--units=8']
    """

    words: tuple[str, ...]
    pass_as: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def argv(
        self, values: Mapping[str, Any], config: str, trial: int, gpus: int = 0, checkpoint: str = ""
    ) -> list[str]:
        """The command's arguments for a trial with parameter ``values``."""
        fields = {"config": config, "trial": str(trial), "gpus": str(gpus), "checkpoint": checkpoint}
        fields.update({name: _text(value) for name, value in values.items()})
        out: list[str] = []
        for word in self.words:
            if word == "{parameters}":
                for name in values:
                    # Split before filling, so a value with spaces stays one argument.
                    template = shlex.split(self.pass_as.get(name, DEFAULT_PASS_AS))
                    out += [_fill(w, {"name": name, "v": fields[name]}) for w in template]
            else:
                out.append(_fill(word, fields))
        return out


def with_files_absolute(spec: CommandSpec, *folders: Path) -> CommandSpec:
    """``spec`` with each word that names an existing file relative to one of ``folders`` (the
    directory ``optimize.py`` runs in, then ``hyper.yml``'s) made absolute: a trial's command runs
    in ``save_path/trials/<number>/``, where ``python train.py`` would find no ``train.py``.

    Example:
        >>> import tempfile
        >>> here = Path(tempfile.mkdtemp())
        >>> _ = (here / "train.py").write_text("")
        >>> with_files_absolute(CommandSpec(("python", "train.py", "{parameters}")), here).words[1] == str(
        ...     here / "train.py"
        ... )
        True
    """
    words = []
    for word in spec.words:
        if not _names(word) and not word.startswith("-") and not Path(word).is_absolute():
            found = next((folder / word for folder in folders if (folder / word).is_file()), None)
            word = str(found.resolve()) if found is not None else word
        words.append(word)
    return dataclasses.replace(spec, words=tuple(words))


def _text(value: Any) -> str:
    # YAML's spelling for booleans, which argparse users compare against more often than Python's.
    return str(value).lower() if isinstance(value, bool) else str(value)


def _fill(template: str, fields: Mapping[str, str]) -> str:
    def one(match: re.Match[str]) -> str:
        if match.group(0) in ("{{", "}}"):
            return match.group(0)[0]
        return fields[match.group(1)]

    return _PLACEHOLDER.sub(one, template)


def _names(template: str) -> list[str]:
    return [m.group(1) for m in _PLACEHOLDER.finditer(template) if m.group(1) is not None]


def check_command_section(
    value: Any, parameter_names: Iterable[str], path: str = "optuna.objective"
) -> tuple[CommandSpec | None, list[Problem]]:
    """Check an ``optuna.objective`` mapping; returns the spec, or ``None`` and every problem.

    Example:
        >>> spec, problems = check_command_section({"command": "run {lr}"}, ["lr"])
        >>> spec.words, problems
        (('run', '{lr}'), [])
        >>> _, problems = check_command_section({"command": "run {lrr}"}, ["lr"])
        >>> print(problems[0])  # doctest: +ELLIPSIS
        optuna.objective.command: placeholder {lrr} is not a parameter; allowed: {lr}, {parameters}, ...
    """
    names = list(parameter_names)
    if not isinstance(value, Mapping):
        return None, []  # a string is a Python file; other types are reported by the schema
    problems = [
        Problem(join_path(path, key), f"unknown key; allowed here: {', '.join(_KEYS)}")
        for key in value
        if key not in _KEYS
    ]
    command = value.get("command")
    words: list[str] = []
    if command is None:
        problems.append(Problem(join_path(path, "command"), "required key is missing; the command to run"))
    elif not isinstance(command, str) or not command.strip():
        problems.append(
            Problem(join_path(path, "command"), f"got {format_value(command)}; must be a non-empty string")
        )
    else:
        try:
            words = shlex.split(command)
        except ValueError as err:
            problems.append(Problem(join_path(path, "command"), f"got {command!r}; cannot split it: {err}"))
        problems += _check_words(words, names, join_path(path, "command"))
    pass_as = value.get("pass-as", {})
    if not isinstance(pass_as, Mapping):
        problems.append(
            Problem(
                join_path(path, "pass-as"),
                f"got {format_value(pass_as)}; must map parameter names to templates",
            )
        )
        pass_as = {}
    for name, template in pass_as.items():
        where = join_path(path, "pass-as", name)
        if name not in names:
            problems.append(
                Problem(where, f"not a parameter name; parameters: {', '.join(names) or '(none)'}")
            )
        elif not isinstance(template, str) or "{v}" not in template:
            problems.append(
                Problem(
                    where,
                    f"got {format_value(template)}; must be a string holding {{v}}, e.g. '--{name}={{v}}'",
                )
            )
        elif set(_names(template)) - {"v", "name"} or not _splits(template):
            problems.append(
                Problem(
                    where,
                    f"got {template!r}; must split into words (shlex) "
                    "whose only placeholders are {v} and {name}",
                )
            )
    if problems:
        return None, problems
    return CommandSpec(tuple(words), {str(k): str(v) for k, v in pass_as.items()}), []


def _splits(text: str) -> bool:
    try:
        return bool(shlex.split(text))
    except ValueError:
        return False


def _check_words(words: Sequence[str], names: Sequence[str], path: str) -> list[Problem]:
    allowed = [*names, *RESERVED]
    problems = []
    for word in words:
        for name in _names(word):
            if name == "parameters" and word != "{parameters}":
                problems.append(
                    Problem(path, f"{{parameters}} must be a word of its own, not part of {word!r}")
                )
            elif name not in allowed:
                problems.append(
                    Problem(
                        path,
                        f"placeholder {{{name}}} is not a parameter; allowed: "
                        + ", ".join(f"{{{n}}}" for n in allowed),
                    )
                )
    return problems
