"""`cityseg serve`: an HTTP API and a web page over one model and, optionally, a dataset.

Importing this package does not import TensorFlow; the model is loaded by the app's
lifespan, so `cityseg --help` stays fast.
"""

from __future__ import annotations

from cityseg.config import ServeConfig
from cityseg.serve.app import create_app

__all__ = ["ServeConfig", "create_app"]
