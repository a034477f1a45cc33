"""The grammar of sweep overrides, as the Hydra Optuna sweeper reads them; see
:mod:`aimlutils.hyper_opt.search_space.overrides` for what each sweep becomes.

Example:
    >>> o = parse_override("trainer:batch=range(16, 128, step=16)")
    >>> o.kind, o.settings
    ('int', {'low': 16, 'high': 128, 'step': 16})
"""

from __future__ import annotations

import dataclasses
import decimal
import re
import warnings
from typing import Any

import yaml
from optuna.distributions import FloatDistribution, IntDistribution

from aimlutils.hyper_opt._text import scalar, top_level_commas
from aimlutils.hyper_opt.errors import HyperOptError


def hyper_prefixes() -> tuple[str, ...]:
    """First parts of a key that address ``hyper.yml``: ``optuna``, ``log``, ``save_path``, and
    the section of every registered scheduler (imported here: they import the config, which
    imports this)."""
    from aimlutils.hyper_opt import schedulers

    return ("optuna", "log", "save_path", *schedulers.names())


_SWEEPS = ("interval", "range", "choice", "tag", "shuffle")
_CASTS = {"int": int, "float": float}
_FUNCTIONS = (*_SWEEPS, *_CASTS)
# The rest of Hydra's override functions: refused by name rather than read as text.
_UNSUPPORTED = ("sort", "glob", "str", "bool", "json_str", "extend_list")
_TAGS = ("log",)
_KEY = re.compile(r"[A-Za-z0-9_\-.:/]+")
# More values than this in a shuffle(range(...)) is a typo, not a search space.
_MAX_SHUFFLED = 100_000


class OverrideSyntaxError(HyperOptError, ValueError):
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
        # Optuna lowers a stop that is off the step grid, and warns; the docs say so once.
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
    commas = [] if key.split(".")[0] in hyper_prefixes() else top_level_commas(text, parser.pos)
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
