"""Configuration: the ``hyper.yml`` schema, its checks, and the error report."""

from aimlutils.hyper_opt.config.loader import check_config, load_config, read_yaml
from aimlutils.hyper_opt.config.run_config import RunConfig
from aimlutils.hyper_opt.errors import CONFIG_ERROR_EXIT_CODE, ConfigError, Problem

__all__ = [
    "CONFIG_ERROR_EXIT_CODE",
    "ConfigError",
    "Problem",
    "RunConfig",
    "check_config",
    "load_config",
    "read_yaml",
]
