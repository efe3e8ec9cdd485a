"""The server's configuration: `ServeConfig`, its checks, and its way to worker processes.

`ServeConfig` lives in `cityseg.config` beside every other default, so `cityseg --help`
shows the server's defaults without importing FastAPI. With `--workers N`, uvicorn starts
each worker from an import string (`cityseg.serve.app:app_from_env`) and no object can be
handed over, so the configuration travels as JSON in the SETTINGS_ENV variable.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

from cityseg.config import ServeConfig
from cityseg.configio import config_from_json, json_record
from cityseg.errors import CitysegError
from cityseg.inference.sliding import as_window

SETTINGS_ENV = "CITYSEG_SERVE_SETTINGS"


def check_limits(config: ServeConfig) -> None:
    """Refuse limits that would make every request fail, before any socket opens."""
    if config.max_body_bytes < 1 or config.max_pixels < 1 or config.max_queue < 0:
        raise CitysegError("max_body_bytes and max_pixels must be positive, max_queue >= 0")
    as_window(config.slide)  # a bad window is refused here, not by the first request


def settings_to_env(config: ServeConfig) -> str:
    """`config` as the JSON that `settings_from_env` reads back in each worker process."""
    return json.dumps(json_record(config))


def settings_from_env(environ: Mapping[str, str] | None = None) -> ServeConfig:
    """The configuration the parent process stored with `settings_to_env`."""
    raw = json.loads((os.environ if environ is None else environ)[SETTINGS_ENV])
    return config_from_json(ServeConfig, raw, SETTINGS_ENV)
