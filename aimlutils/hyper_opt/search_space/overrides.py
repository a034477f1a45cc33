"""Command-line overrides in the grammar of Hydra's sweepers: ``key=value`` and ``key=sweep``.

::

    override := key "=" (sweep | plain)
    sweep    := "interval(" number "," number ")"
              | "range(" number "," number ["," ["step="] number] ")"
              | "choice(" item {"," item} ")"
              | "tag(" tag {"," tag} "," sweep ")"          tag: log
    item     := a quoted string, or text up to the next "," or ")"

``plain`` and ``item`` are read as numbers where Python reads them as numbers (``1e-5``), else as
YAML scalars (``relu``, ``true``, ``[1, 2]``). ``interval`` is inclusive of both bounds, as Optuna's
``suggest_float``; ``range`` excludes its stop, as Python's and Hydra's ``range``:
``range(16, 128, step=16)`` is 16, 32, ..., 112.

A key starting with ``optuna.``, ``slurm.``, ``pbs.``, ``log.`` or ``save_path`` is a dotted path into
``hyper.yml`` and takes a plain value. Any other key is a model-config path (colons, or dots when it
has no colon): a sweep there adds or replaces the parameter at that place (an entry of
``optuna.parameters``, or the inline marker found there), a plain value fixes the value for the run
and drops any parameter at that place.

Example:
    >>> hyper, model = {"optuna": {"parameters": {}}}, {"optimizer": {"lr": 0.1}}
    >>> problems = apply_overrides(hyper, model, ["optimizer:lr=tag(log, interval(1e-5, 1e-3))"])
    >>> problems, hyper["optuna"]["parameters"]["optimizer:lr"]["settings"]
    ([], {'name': 'optimizer:lr', 'low': 1e-05, 'high': 0.001, 'log': True})
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence
from typing import Any

import yaml

from aimlutils.hyper_opt.errors import Problem
from aimlutils.hyper_opt.search_space.markers import MARKER_KEY, is_marker
from aimlutils.hyper_opt.search_space.model_config import get_value, locate, set_value
from aimlutils.hyper_opt.search_space.params import parameter_from_settings

#: First parts of a key that address ``hyper.yml`` instead of the model config.
HYPER_PREFIXES = ("optuna", "slurm", "pbs", "log", "save_path")
_SWEEPS = ("interval", "range", "choice", "tag")
_TAGS = ("log",)
_KEY = re.compile(r"[A-Za-z0-9_\-.:/]+")


class OverrideSyntaxError(ValueError):
    """An override that cannot be parsed; ``position`` is where in ``text`` parsing stopped."""

    def __init__(self, text: str, position: int, reason: str) -> None:
        self.text, self.position, self.reason = text, position, reason
        super().__init__(f"{reason}\n    {text}\n    {' ' * position}^")


@dataclasses.dataclass(frozen=True)
class Override:
    """One parsed override: a plain ``value``, or a sweep as ``kind`` + Optuna settings."""

    text: str
    key: str
    value: Any = None
    kind: str | None = None
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)


class _Parser:
    """Recursive descent over the value text; positions count from the start of the override."""

    def __init__(self, text: str, start: int) -> None:
        self.text, self.pos = text, start

    def fail(self, reason: str) -> OverrideSyntaxError:
        return OverrideSyntaxError(self.text, self.pos, reason)

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def expect(self, char: str) -> None:
        self.skip_space()
        if not self.text.startswith(char, self.pos):
            found = repr(self.text[self.pos]) if self.pos < len(self.text) else "the end"
            raise self.fail(f"expected {char!r}, found {found}")
        self.pos += 1

    def peek(self, char: str) -> bool:
        self.skip_space()
        return self.text.startswith(char, self.pos)

    def word(self) -> str:
        self.skip_space()
        match = re.compile(r"[A-Za-z_]\w*").match(self.text, self.pos)
        if match is None:
            raise self.fail("expected a name")
        self.pos = match.end()
        return match.group()

    def item(self) -> Any:
        """A choice item or a bound: a quoted string, or bare text read as a number or YAML."""
        self.skip_space()
        start = self.pos
        if self.pos < len(self.text) and self.text[self.pos] in "'\"":
            end = self.text.find(self.text[self.pos], self.pos + 1)
            if end < 0:
                raise self.fail("unterminated quoted string")
            self.pos = end + 1
            return self.text[start + 1 : end]
        while self.pos < len(self.text) and self.text[self.pos] not in ",()":
            self.pos += 1
        raw = self.text[start : self.pos].strip()
        if not raw:
            self.pos = start
            raise self.fail("expected a value")
        return scalar(raw)

    def number(self) -> int | float:
        self.skip_space()
        start = self.pos
        value = self.item()
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.pos = start
            raise self.fail(f"expected a number, found {value!r}")
        return value

    def sweep(self, tags: tuple[str, ...] = ()) -> tuple[str, dict[str, Any]]:
        self.skip_space()
        at = self.pos
        name = self.word()
        if name not in _SWEEPS:
            self.pos = at
            raise self.fail(f"unknown sweep {name!r}; use one of {', '.join(_SWEEPS)}")
        self.expect("(")
        if name == "tag":
            return self._tag(tags)
        if name == "choice":
            choices = [self.item()]
            while self.peek(","):
                self.expect(",")
                choices.append(self.item())
            self.expect(")")
            if tags:
                self.pos = at
                raise self.fail("choice() takes no tags")
            return "categorical", {"choices": choices}
        low = self.number()
        self.expect(",")
        high = self.number()
        if name == "interval":
            self.expect(")")
            return "float", {"low": low, "high": high, **({"log": True} if tags else {})}
        step: int | float = 1
        if self.peek(","):
            self.expect(",")
            self.skip_space()
            if self.text.startswith("step", self.pos):
                self.word()
                self.expect("=")
            step = self.number()
        self.expect(")")
        return self._range(low, high, step, tags, at)

    def _tag(self, tags: tuple[str, ...]) -> tuple[str, dict[str, Any]]:
        while True:
            self.skip_space()
            at = self.pos
            name = self.word()
            if name in _SWEEPS and self.peek("("):
                self.pos = at
                kind, settings = self.sweep(tags)
                break
            if name not in _TAGS:
                self.pos = at
                raise self.fail(f"unknown tag {name!r}; tags: {', '.join(_TAGS)}")
            tags = (*tags, name)
            self.expect(",")
        self.expect(")")
        return kind, settings

    def _range(
        self, start: int | float, stop: int | float, step: int | float, tags: tuple[str, ...], at: int
    ) -> tuple[str, dict[str, Any]]:
        if step <= 0:
            self.pos = at
            raise self.fail(f"range() needs a step > 0, got {step!r}")
        # End-exclusive, as Python's range: the last value is the last grid point below stop.
        count = math.ceil(round((stop - start) / step, 9))
        if count < 1:
            self.pos = at
            raise self.fail(f"range({start!r}, {stop!r}) is empty: stop must be greater than start")
        if all(isinstance(v, int) for v in (start, stop, step)):
            settings: dict[str, Any] = {"low": start, "high": start + (count - 1) * step, "step": step}
            return "int", settings | ({"log": True} if tags else {})
        high = round(start + (count - 1) * step, 12)
        return "float", {"low": start, "high": high, "step": step, **({"log": True} if tags else {})}


def scalar(text: str) -> Any:
    """A number where Python reads one (``1e-5``, which YAML 1.1 reads as text), else YAML."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return yaml.safe_load(text)


def parse_override(text: str) -> Override:
    """Parse ``key=value``; raises :class:`OverrideSyntaxError` pointing at where it stopped."""
    match = _KEY.match(text)
    if match is None or match.end() >= len(text) or text[match.end()] != "=":
        position = match.end() if match else 0
        raise OverrideSyntaxError(text, position, "expected key=value (a key of letters, digits, _-.:/)")
    key, parser = match.group(), _Parser(text, match.end() + 1)
    rest = text[parser.pos :].lstrip()
    head = re.match(r"(\w+)\s*\(", rest)
    if head is None or head.group(1) not in _SWEEPS:
        try:
            return Override(text, key, value=scalar(rest))
        except yaml.YAMLError as err:
            raise parser.fail(f"not a valid value: {str(err).splitlines()[0]}") from None
    kind, settings = parser.sweep()
    parser.skip_space()
    if parser.pos < len(text):
        raise parser.fail("unexpected text after the sweep")
    return Override(text, key, kind=kind, settings=settings)


def apply_overrides(hyper: dict[str, Any], model: dict[str, Any], texts: Sequence[str]) -> list[Problem]:
    """Apply each override in order to ``hyper`` and ``model`` (in place); returns the problems."""
    problems: list[Problem] = []
    for text in texts:
        try:
            override = parse_override(text)
        except OverrideSyntaxError as err:
            problems.append(Problem("", f"override {text!r}: {err}"))
            continue
        problem = _apply(override, hyper, model)
        if problem:
            problems.append(Problem("", f"override {text!r}: {problem}"))
    return problems


def _apply(o: Override, hyper: dict[str, Any], model: dict[str, Any]) -> str | None:
    dotted = tuple(o.key.split("."))
    if dotted[0] in HYPER_PREFIXES:
        if o.kind is not None:
            return f"{o.key} is a hyper.yml setting; it takes a plain value, not a sweep"
        return _set_creating(hyper, dotted, o.value)
    path = tuple(o.key.split(":")) if ":" in o.key else dotted
    found, problem = locate(model, path)
    if problem:
        return problem
    section = _parameters(hyper)
    colon_key = ":".join(path)
    if o.kind is None:
        if not found:
            return f"{o.key} is not in the model config; check the spelling"
        set_value(model, path, o.value)
        section.pop(colon_key, None)  # fixed for this run: no parameter may overwrite it
        return None
    # Replacing an entry keeps its Optuna name, so enqueued trials and reports still match it.
    existing = section.get(colon_key)
    settings = existing.get("settings") if isinstance(existing, dict) else None
    name = str(settings.get("name") or o.key) if isinstance(settings, dict) else o.key
    parameter, found_problems = parameter_from_settings(o.kind, {**o.settings, "name": name}, "", name)
    if parameter is None:
        return "; ".join(p.message for p in found_problems)
    if found and is_marker(get_value(model, path)):
        # The marker keeps its depends_on; only how its value is drawn changes.
        body = get_value(model, path)[MARKER_KEY]
        body.update(suggest=o.kind, params=dict(o.settings))
        return None
    section[colon_key] = {"type": o.kind, "settings": {"name": name, **o.settings}}
    return None


def _parameters(hyper: dict[str, Any]) -> dict[str, Any]:
    optuna_section = hyper.setdefault("optuna", {})
    if not isinstance(optuna_section, dict):
        return {}  # the schema reports it
    section = optuna_section.setdefault("parameters", {})
    return section if isinstance(section, dict) else {}


def _set_creating(conf: dict[str, Any], path: tuple[str, ...], value: Any) -> str | None:
    node: Any = conf
    for depth, key in enumerate(path[:-1]):
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            return f"{'.'.join(path[: depth + 1])} is {node!r}, not a mapping"
    node[path[-1]] = value
    return None
