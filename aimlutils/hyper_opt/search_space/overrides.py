"""Command-line overrides in the grammar of the Hydra Optuna sweeper: ``key=value`` and ``key=sweep``.

::

    override := key "=" (sweep | items | plain)
    sweep    := "interval(" number "," number ")"                  arguments may be named start=, end=
              | "range(" number ["," number] ["," number] ")"       named start=, stop=, step=
              | "choice(" item {"," item} ")"
              | "shuffle(" (choice | range | item {"," item}) ")"
              | ("int" | "float") "(" sweep ")"
              | "tag(" tag {"," tag} "," sweep ")"                  tag: log
    items    := item "," item {"," item}                            a choice, as Hydra's a,b,c
    item     := a quoted string, or text up to the next "," or ")"

Each sweep becomes the distribution the Hydra Optuna sweeper builds from it (its
``create_optuna_distribution_from_override``), so a command line pasted from there searches the
same space:

- ``interval(a, b)`` is a float range from ``a`` to ``b`` (Hydra makes both bounds floats);
  ``int(interval(a, b))`` an int range; ``tag(log, ...)`` makes either log-scaled.
- ``range(start, stop, step=1)`` is ``IntDistribution(start, stop, step=step)`` (a float range with
  that step if any of the three is a float): Optuna's bounds include ``stop``, unlike Python's
  ``range``, and a ``stop`` off the step grid is lowered to the last grid point, as Optuna does.
  ``range(n)`` is ``range(0, n)``.
- ``choice(...)`` and ``a,b,c`` are categorical. ``shuffle(range(...))`` is categorical over the
  values Hydra's range iterates, which exclude ``stop``, as the sweeper does.

``plain`` and ``item`` are read as numbers where Python reads them as numbers (``1e-5``), else as
YAML scalars (``relu``, ``true``, ``[1, 2]``).

A key starting with ``optuna.``, ``slurm.``, ``pbs.``, ``log.`` or ``save_path`` is a dotted path into
``hyper.yml`` and takes a plain value (commas included: ``slurm.batch.mail-type=END,FAIL``). A key
starting with ``hydra.`` or ``hydra/`` is a setting of the Hydra Optuna sweeper, mapped onto the
``optuna`` section by :mod:`aimlutils.hyper_opt.search_space.sweeper_keys`. Any other key is a
model-config path (colons, or dots when it has no colon): a sweep there adds or replaces the
parameter at that place (an entry of ``optuna.parameters``, or the inline marker found there), a
plain value fixes the value for the run and drops any parameter at that place.

Example:
    >>> hyper, model = {"optuna": {"parameters": {}}}, {"optimizer": {"lr": 0.1}}
    >>> problems = apply_overrides(hyper, model, ["optimizer:lr=tag(log, interval(1e-5, 1e-3))"])
    >>> problems, hyper["optuna"]["parameters"]["optimizer:lr"]["settings"]
    ([], {'name': 'optimizer:lr', 'low': 1e-05, 'high': 0.001, 'log': True})
"""

from __future__ import annotations

import dataclasses
import decimal
import re
import warnings
from collections.abc import Sequence
from typing import Any

import yaml
from optuna.distributions import FloatDistribution, IntDistribution

from aimlutils.hyper_opt.errors import Problem
from aimlutils.hyper_opt.search_space import sweeper_keys
from aimlutils.hyper_opt.search_space.markers import MARKER_KEY, is_marker
from aimlutils.hyper_opt.search_space.model_config import get_value, locate, set_value
from aimlutils.hyper_opt.search_space.params import parameter_from_settings

#: First parts of a key that address ``hyper.yml`` instead of the model config.
HYPER_PREFIXES = ("optuna", "slurm", "pbs", "log", "save_path")
_SWEEPS = ("interval", "range", "choice", "tag", "shuffle")
_CASTS = {"int": int, "float": float}
_FUNCTIONS = (*_SWEEPS, *_CASTS)
# The rest of Hydra's override functions: refused by name rather than read as text.
_UNSUPPORTED = ("sort", "glob", "str", "bool", "json_str", "extend_list")
_TAGS = ("log",)
_KEY = re.compile(r"[A-Za-z0-9_\-.:/]+")
# More values than this in a shuffle(range(...)) is a typo, not a search space.
_MAX_SHUFFLED = 100_000


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


@dataclasses.dataclass
class _Sweep:
    """A sweep as Hydra's grammar returns it, before it becomes a distribution.

    ``values`` are ``[start, end]`` of an interval, ``[start, stop, step]`` of a range, or the
    items of a choice; ``at`` is where the sweep starts in the text, for messages.
    """

    name: str
    at: int
    values: list[Any]
    tags: tuple[str, ...] = ()
    shuffle: bool = False


class _Parser:
    """Recursive descent over the value text; positions count from the start of the override."""

    def __init__(self, text: str, start: int) -> None:
        self.text, self.pos = text, start

    def fail(self, reason: str, at: int | None = None) -> OverrideSyntaxError:
        return OverrideSyntaxError(self.text, self.pos if at is None else at, reason)

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

    def at_call(self) -> bool:
        """Whether a function of the grammar (``range(``, ``int(``, ...) starts here."""
        self.skip_space()
        match = re.compile(r"([A-Za-z_]\w*)\s*\(").match(self.text, self.pos)
        return match is not None and match.group(1) in _FUNCTIONS

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

    def value(self) -> Any:
        """A sweep or cast (``range(...)``, ``int(...)``), or an item."""
        return self.call() if self.at_call() else self.item()

    def call(self, tags: tuple[str, ...] = ()) -> Any:
        """One function of the grammar; a :class:`_Sweep`, or a number for a cast of a number."""
        self.skip_space()
        at = self.pos
        name = self.word()
        if name not in _FUNCTIONS:
            self.pos = at
            raise self.fail(f"unknown sweep {name!r}; use one of {', '.join(_FUNCTIONS)}")
        self.expect("(")
        if name == "tag":
            return self._tag(tags)
        if name in _CASTS:
            inner = self.value()
            self.expect(")")
            return _cast(inner, name, self, at)
        if name == "shuffle":
            return self._shuffle(at)
        if name == "choice":
            sweep = _Sweep("choice", at, self._items())
        elif name == "interval":
            args = self._arguments(name, ("start", "end"), at)
            if len(args) != 2:
                raise self.fail(f"interval() needs start and end, got {_show_args(args)}", at)
            sweep = _Sweep("interval", at, [float(args["start"]), float(args["end"])])
        else:
            args = self._arguments(name, ("start", "stop", "step"), at)
            if "start" not in args:
                raise self.fail(f"range() needs start, got {_show_args(args)}", at)
            if "stop" not in args:  # Hydra's range(n): from 0 to n
                args["start"], args["stop"] = 0, args["start"]
            sweep = _Sweep("range", at, [args["start"], args["stop"], args.get("step", 1)])
        self.expect(")")
        sweep.tags = tags
        return sweep

    def _items(self) -> list[Any]:
        items = [self.item()]
        while self.peek(","):
            self.expect(",")
            items.append(self.item())
        return items

    def _arguments(self, name: str, names: tuple[str, ...], at: int) -> dict[str, int | float]:
        """Numbers given by position, then by name (``step=16``), as Hydra's functions take them."""
        args: dict[str, int | float] = {}
        named = False
        while True:
            self.skip_space()
            keyword = re.compile(r"([A-Za-z_]\w*)\s*=").match(self.text, self.pos)
            if keyword:
                key = keyword.group(1)
                if key not in names:
                    raise self.fail(f"{name}() has no argument {key!r}; arguments: {', '.join(names)}")
                if key in args:
                    raise self.fail(f"{name}() got {key} twice")
                self.pos = keyword.end()
                named = True
            elif named:
                raise self.fail(f"{name}(): a positional argument cannot follow a named one")
            elif len(args) == len(names):
                raise self.fail(f"{name}() takes at most {len(names)} arguments ({', '.join(names)})")
            else:
                key = names[len(args)]
            args[key] = self.number()
            if not self.peek(","):
                return args
            self.expect(",")
            if self.peek(")"):
                raise self.fail("expected a value")

    def _shuffle(self, at: int) -> _Sweep:
        if self.at_call():
            inner = self.call()
            if not isinstance(inner, _Sweep) or inner.name == "interval":
                raise self.fail("shuffle() takes a choice(), a range() or several values", at)
            self.expect(")")
            inner.shuffle = True
            return inner
        items = self._items()
        self.expect(")")
        if len(items) < 2:
            raise self.fail("shuffle() of one value is not a sweep; give several, or a range()", at)
        return _Sweep("choice", at, items, shuffle=True)

    def _tag(self, tags: tuple[str, ...]) -> Any:
        while True:
            self.skip_space()
            at = self.pos
            name = self.word()
            if name in _FUNCTIONS and self.peek("("):
                self.pos = at
                sweep = self.call(tags)
                break
            if name not in _TAGS:
                self.pos = at
                hint = f" (an integer range is {name}(interval(...)))" if name in _CASTS else ""
                raise self.fail(f"unknown tag {name!r}; tags: {', '.join(_TAGS)}{hint}")
            tags = (*tags, name)
            self.expect(",")
        self.expect(")")
        if not isinstance(sweep, _Sweep):
            raise self.fail("the last argument of tag() must be a sweep", at)
        sweep.tags = tags
        return sweep


def _show_args(args: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in args.items()) or "nothing"


def _cast(inner: Any, name: str, parser: _Parser, at: int) -> Any:
    """Hydra's ``int(...)`` / ``float(...)``: of every bound or item of a sweep, or of a value."""
    to = _CASTS[name]

    def one(value: Any) -> Any:
        if value is None or not isinstance(value, (bool, int, float, str)):
            raise parser.fail(f"{name}() cannot convert {value!r}", at)
        try:
            return to(value)
        except (ValueError, OverflowError):
            raise parser.fail(f"{name}() cannot convert {value!r}", at) from None

    if isinstance(inner, _Sweep):
        return dataclasses.replace(inner, values=[one(v) for v in inner.values])
    return one(inner)


def _distribution(sweep: _Sweep, parser: _Parser) -> tuple[str, dict[str, Any]]:
    """The Optuna settings the Hydra Optuna sweeper gives ``sweep``."""
    log = {"log": True} if "log" in sweep.tags else {}
    if sweep.name == "choice":
        if sweep.tags:
            raise parser.fail("choice() takes no tags", sweep.at)
        return "categorical", {"choices": list(sweep.values)}
    if sweep.name == "interval":
        low, high = sweep.values
        # The sweeper builds an IntDistribution when both bounds are ints: int(interval(...)).
        kind = "int" if isinstance(low, int) and isinstance(high, int) else "float"
        return kind, {"low": low, "high": high, **log}
    start, stop, step = sweep.values
    if sweep.tags:
        # The sweeper ignores tags on a range; a silent uniform draw would surprise more.
        raise parser.fail(
            "tag() on range(): the Hydra Optuna sweeper ignores it and draws uniformly; for a "
            "log-scaled integer write tag(log, int(interval(low, high))), else drop the tag",
            sweep.at,
        )
    if sweep.shuffle:
        return "categorical", {"choices": _iterate_range(start, stop, step, parser, sweep.at)}
    if step <= 0:
        raise parser.fail(f"range() needs a step > 0, got {step!r}", sweep.at)
    if stop < start:
        raise parser.fail(
            f"range({start!r}, {stop!r}) is empty: stop must be at least start (both are included)",
            sweep.at,
        )
    is_float = any(isinstance(v, float) for v in (start, stop, step))
    with warnings.catch_warnings():
        # Optuna lowers a stop that is off the step grid, and warns; the README says so once.
        warnings.simplefilter("ignore")
        if is_float:
            dist: FloatDistribution | IntDistribution = FloatDistribution(start, stop, step=step)
        else:
            dist = IntDistribution(start, stop, step=step)
    return ("float" if is_float else "int"), {"low": dist.low, "high": dist.high, "step": step}


def _iterate_range(
    start: int | float, stop: int | float, step: int | float, parser: _Parser, at: int
) -> list[int | float]:
    """The values Hydra's ``range`` iterates: Python's ``range``, or Hydra's exact decimal steps."""
    if step == 0:
        raise parser.fail("range() needs a step other than 0", at)
    values: list[int | float] = []
    if all(isinstance(v, int) for v in (start, stop, step)):
        numbers = range(int(start), int(stop), int(step))
        if len(numbers) > _MAX_SHUFFLED:
            raise parser.fail(f"shuffle(range(...)) has {len(numbers)} values; at most {_MAX_SHUFFLED}", at)
        values = list(numbers)
    else:
        at_value, end, by = decimal.Decimal(start), decimal.Decimal(stop), decimal.Decimal(step)
        while (at_value < end) if by > 0 else (at_value > end):
            if len(values) == _MAX_SHUFFLED:
                raise parser.fail(f"shuffle(range(...)) has more than {_MAX_SHUFFLED} values", at)
            values.append(float(at_value))
            at_value += by
    if not values:
        raise parser.fail(f"range({start!r}, {stop!r}, step={step!r}) is empty", at)
    return values


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
    parser.skip_space()
    rest = text[parser.pos :]
    head = re.match(r"(\w+)\s*\(", rest)
    if head is not None and head.group(1) in _UNSUPPORTED:
        raise parser.fail(
            f"{head.group(1)}() is Hydra override grammar that is not read here; sweeps: "
            f"{', '.join(_FUNCTIONS)} (quote the value to pass it as text: {key}='{rest}')"
        )
    if head is not None and head.group(1) in _FUNCTIONS:
        result = parser.call()
        parser.skip_space()
        if parser.pos < len(text):
            raise parser.fail("unexpected text after the sweep")
        if not isinstance(result, _Sweep):
            return Override(text, key, value=result)  # int(3), float(1)
        kind, settings = _distribution(result, parser)
        return Override(text, key, kind=kind, settings=settings)
    commas = [] if key.split(".")[0] in HYPER_PREFIXES else _top_level_commas(text, parser.pos)
    if commas:  # Hydra's simple choice sweep: a,b,c
        choices = []
        for begin, end in zip([parser.pos, *(c + 1 for c in commas)], [*commas, len(text)], strict=True):
            parser.pos = begin
            parser.skip_space()
            if not text[begin:end].strip():
                raise parser.fail("expected a value")
            choices.append(_plain(text[begin:end].strip(), parser))
        return Override(text, key, kind="categorical", settings={"choices": choices})
    return Override(text, key, value=_plain(rest, parser))


def _plain(raw: str, parser: _Parser) -> Any:
    try:
        return scalar(raw)
    except yaml.YAMLError as err:
        raise parser.fail(f"not a valid value: {str(err).splitlines()[0]}") from None


def _top_level_commas(text: str, start: int) -> list[int]:
    """Positions of the commas outside quotes and brackets: those of Hydra's ``a,b,c``."""
    commas, depth, quote = [], 0, ""
    for index in range(start, len(text)):
        char = text[index]
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == "," and depth == 0:
            commas.append(index)
    return commas


def apply_overrides(hyper: dict[str, Any], model: dict[str, Any], texts: Sequence[str]) -> list[Problem]:
    """Apply each override in order to ``hyper`` and ``model`` (in place); returns the problems.

    Config-group choices (``hydra/sweeper/sampler=random``) come first, as Hydra applies them
    before any value.
    """
    problems: list[Problem] = []
    written: list[tuple[str, ...]] = []
    sources: list[str] = []
    for text in sorted(texts, key=lambda t: not t.lstrip().startswith("hydra/")):
        try:
            override = parse_override(text)
        except OverrideSyntaxError as err:
            problems.append(Problem("", f"override {text!r}: {err}"))
            continue
        if sweeper_keys.is_sweeper_key(override.key):
            before = len(written)
            problem = sweeper_keys.apply(
                override.key, override.value, override.kind is not None, hyper, written
            )
            sources += [text] * (len(written) - before)
        else:
            problem = _apply(override, hyper, model)
        if problem:
            problems.append(Problem("", f"override {text!r}: {problem}"))
    return problems + sweeper_keys.resolve_interpolations(hyper, model, written, sources)


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
