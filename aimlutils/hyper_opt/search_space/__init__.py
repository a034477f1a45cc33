"""Search spaces: front-end syntax in, :class:`Parameter` objects out."""

from aimlutils.hyper_opt.search_space.model_config import locate, set_value, split_colon_path
from aimlutils.hyper_opt.search_space.params import (
    PARAMETER_TYPES,
    Parameter,
    parameter_from_settings,
    suggest_from_spec,
)
from aimlutils.hyper_opt.search_space.space import SearchSpace

__all__ = [
    "PARAMETER_TYPES",
    "Parameter",
    "SearchSpace",
    "locate",
    "parameter_from_settings",
    "set_value",
    "split_colon_path",
    "suggest_from_spec",
]
