"""Value modes: parameter types that expand to an explicit list of values.

``multiple``, ``linear``, ``logspace`` and ``random`` each become a categorical parameter over
the values they list, so a grid can enumerate them and any sampler can pick among them.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aimlutils.hyper_opt.errors import Problem, format_value, join_path, pydantic_problems

Value = bool | int | float | str | None


class _Mode(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = None


class _Multiple(_Mode):
    values: list[Value] = Field(min_length=1)


class _Linear(_Mode):
    start: float
    stop: float
    count: int = Field(ge=1)


class _Logspace(_Linear):
    base: float = Field(default=10.0, gt=0)


class _Random(_Mode):
    distribution: Literal["uniform", "loguniform", "int"]
    low: float
    high: float
    count: int = Field(ge=1)
    # A fixed default: every worker expands the config itself and must get the same list.
    seed: int = 0


_MODES: dict[str, type[_Mode]] = {
    "linear": _Linear,
    "logspace": _Logspace,
    "multiple": _Multiple,
    "random": _Random,
}

#: Parameter types that expand to a list of values.
VALUE_MODES = tuple(sorted(_MODES))


def _spaced(start: float, stop: float, count: int) -> list[float]:
    """``count`` evenly spaced numbers from ``start`` to ``stop``, both ends exact."""
    if count == 1:
        return [start]
    # Multiply before dividing: 0..1 in 11 steps gives 0.3, not 0.30000000000000004.
    return [start + (stop - start) * i / (count - 1) for i in range(count - 1)] + [stop]


def _linear(s: _Linear, raw: Mapping[str, Any]) -> list[Value]:
    values = _spaced(s.start, s.stop, s.count)
    # Integer ends with an integer spacing give integers: batch sizes, layer counts.
    ints = all(isinstance(raw.get(k), int) and not isinstance(raw.get(k), bool) for k in ("start", "stop"))
    if ints and all(v == int(v) for v in values):
        return [int(v) for v in values]
    return list(values)


def _logspace(s: _Logspace) -> list[Value]:
    values: list[Value] = [s.base**e for e in _spaced(s.start, s.stop, s.count)]
    return values


def _random(s: _Random) -> list[Value]:
    values: list[Value] = list(_draw(s))
    return values


def _draw(s: _Random) -> list[float] | list[int]:
    rng = random.Random(s.seed)  # noqa: S311 - reproducible values, not secrets
    if s.distribution == "int":
        # Distinct integers: a list with repeats would weigh some values twice.
        return sorted(rng.sample(range(int(s.low), int(s.high) + 1), s.count))
    if s.distribution == "loguniform":
        lo, hi = math.log(s.low), math.log(s.high)
        return sorted(math.exp(rng.uniform(lo, hi)) for _ in range(s.count))
    return sorted(rng.uniform(s.low, s.high) for _ in range(s.count))


def _problems(kind: str, s: Any, raw: Mapping[str, Any], path: str) -> list[Problem]:
    problems = []
    if kind == "multiple":
        seen: list[Any] = []
        for index, value in enumerate(s.values):
            if value in seen and type(value) is type(seen[seen.index(value)]):
                problems.append(
                    Problem(
                        join_path(path, "values", index),
                        f"{format_value(value)} is listed twice; each value may appear once",
                    )
                )
            seen.append(value)
    elif kind in ("linear", "logspace"):
        if s.count > 1 and s.start == s.stop:
            problems.append(
                Problem(
                    join_path(path, "stop"),
                    f"got {s.stop!r}, equal to start; with count {s.count} stop must differ from start "
                    "(or use count: 1)",
                )
            )
        if kind == "logspace" and s.base == 1:
            problems.append(
                Problem(join_path(path, "base"), "got 1; every value would be 1, use base > 0, != 1")
            )
    elif kind == "random":
        if s.low >= s.high:
            problems.append(
                Problem(join_path(path, "low"), f"low ({s.low!r}) must be less than high ({s.high!r})")
            )
        elif s.distribution == "loguniform" and s.low <= 0:
            problems.append(Problem(join_path(path, "low"), f"got {s.low!r}; loguniform needs low > 0"))
        elif s.distribution == "int":
            for key in ("low", "high"):
                if not isinstance(raw.get(key), int) or isinstance(raw.get(key), bool):
                    problems.append(
                        Problem(
                            join_path(path, key), f"got {format_value(raw.get(key))}; int needs an integer"
                        )
                    )
            size = int(s.high) - int(s.low) + 1
            if not problems and s.count > size:
                problems.append(
                    Problem(
                        join_path(path, "count"),
                        f"got {s.count}; only {size} distinct integers lie in [{int(s.low)}, {int(s.high)}]",
                    )
                )
    return problems


def expand_values(
    kind: str, settings: Mapping[str, Any], path: str
) -> tuple[str | None, list[Value] | None, list[Problem]]:
    """Expand a value-mode entry's ``settings`` to ``(name, values, problems)``.

    ``path`` is the key path of ``settings``, used in every problem; ``values`` is ``None``
    when there are problems.

    Example:
        >>> expand_values("logspace", {"start": -3, "stop": -1, "count": 3}, "p.settings")[1]
        [0.001, 0.01, 0.1]
        >>> expand_values("linear", {"start": 16, "stop": 64, "count": 4}, "p.settings")[1]
        [16, 32, 48, 64]
    """
    model = _MODES[kind]
    raw = dict(settings)
    try:
        parsed: Any = model.model_validate(raw)
    except ValidationError as err:
        return None, None, pydantic_problems(err, path, lambda _: list(model.model_fields), raw)
    problems = _problems(kind, parsed, raw, path)
    if problems:
        return parsed.name, None, problems
    if kind == "multiple":
        values: list[Value] = list(parsed.values)
    elif kind == "linear":
        values = _linear(parsed, raw)
    elif kind == "logspace":
        values = _logspace(parsed)
    else:
        values = _random(parsed)
    return parsed.name, values, []
