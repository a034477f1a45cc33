"""How report plots look: size, resolution, fonts, log axes, which formats; read from a YAML file."""

from __future__ import annotations

import os
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aimlutils.hyper_opt.config import ConfigError, read_yaml
from aimlutils.hyper_opt.errors import pydantic_problems

PlotFormat = Literal["png", "pdf", "html"]

#: Plotly sizes are in CSS pixels, Matplotlib's in inches and points.
PIXELS_PER_INCH = 96
PIXELS_PER_POINT = 96 / 72


class PlotStyle(BaseModel):
    """The look of every report plot; each key is optional.

    ``width`` and ``height`` are inches (PNG and PDF; HTML gets the same size at 96 pixels per
    inch); the contour grid is drawn square, ``width`` on each side. ``font_size`` is the base size
    in points, titles and labels scale with it. ``log_value`` puts the objective axis of the history,
    learning-curve and slice plots on a log scale (ignored when a value is not positive).
    ``top_params`` is how many parameters, the most important first, the slice, contour and
    parallel-coordinate plots show.

    Example:
        >>> PlotStyle.model_validate({"width": 6, "font_size": 9, "log_value": True}).height
        4.5
    """

    model_config = ConfigDict(extra="forbid")

    width: float = Field(default=8.0, gt=0, le=100)
    height: float = Field(default=4.5, gt=0, le=100)
    dpi: int = Field(default=150, ge=30, le=1200)
    font_family: str | None = None
    font_size: float = Field(default=11.0, gt=0, le=100)
    log_value: bool = False
    top_params: int = Field(default=3, ge=1)
    formats: list[PlotFormat] = Field(default=["png", "pdf", "html"], min_length=1)


def load_style(path: str | os.PathLike[str] | None) -> PlotStyle:
    """The style in ``path`` (a YAML mapping), or the defaults when ``path`` is ``None``.

    Raises:
        ConfigError: naming every wrong key or value, and the keys allowed.
    """
    if path is None:
        return PlotStyle()
    label = f"plot style file {os.fspath(path)}"
    data = read_yaml(path, label)
    try:
        return PlotStyle.model_validate(data)
    except ValidationError as err:
        problems = pydantic_problems(err, allowed_keys=lambda loc: list(PlotStyle.model_fields), data=data)
        raise ConfigError(problems, label) from None
