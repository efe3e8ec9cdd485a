"""cityseg: Cityscapes from the raw zips to a trained model and colour masks.

Importing the package stays cheap on purpose: `cityseg --help` and `cityseg remap`
must never pay for TensorFlow. So the Python API (`cityseg.Model`, `cityseg.train`, ...)
is made of lazy attributes (PEP 562): each is imported on first use, and even then only
running a model imports TensorFlow.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from cityseg import serve
    from cityseg.api.dataset import prepare, remap
    from cityseg.api.deploy import benchmark
    from cityseg.api.files import evaluate_predictions, predict_files
    from cityseg.api.model import Model
    from cityseg.api.pipeline import demo
    from cityseg.api.run import EpochMetrics, Run, RunMetrics, train
    from cityseg.api.study import compare, tune
    from cityseg.comparison import Comparison
    from cityseg.config import TrainConfig, TuneConfig
    from cityseg.dataset.prepare import PrepareReport
    from cityseg.dataset.remap import RemapReport
    from cityseg.deploy.benchmark import BenchmarkReport
    from cityseg.deploy.export import ExportReport
    from cityseg.errors import CitysegError
    from cityseg.evaluation.report import EvalReport
    from cityseg.inference.predict import PredictReport
    from cityseg.tuning.study import TuneReport

_LAZY = {
    "Model": "cityseg.api.model",
    "Run": "cityseg.api.run",
    "RunMetrics": "cityseg.api.run",
    "EpochMetrics": "cityseg.api.run",
    "prepare": "cityseg.api.dataset",
    "remap": "cityseg.api.dataset",
    "train": "cityseg.api.run",
    "predict_files": "cityseg.api.files",
    "evaluate_predictions": "cityseg.api.files",
    "benchmark": "cityseg.api.deploy",
    "demo": "cityseg.api.pipeline",
    "tune": "cityseg.api.study",
    "compare": "cityseg.api.study",
    "TrainConfig": "cityseg.config",
    "TuneConfig": "cityseg.config",
    "TuneReport": "cityseg.tuning.study",
    "Comparison": "cityseg.comparison",
    "CitysegError": "cityseg.errors",
    "PrepareReport": "cityseg.dataset.prepare",
    "RemapReport": "cityseg.dataset.remap",
    "PredictReport": "cityseg.inference.predict",
    "EvalReport": "cityseg.evaluation.report",
    "ExportReport": "cityseg.deploy.export",
    "BenchmarkReport": "cityseg.deploy.benchmark",
}
_SUBMODULES = ("serve",)
"""Packages reachable as attributes without an import of their own: `cityseg.serve`."""

__all__ = [
    "BenchmarkReport",
    "CitysegError",
    "Comparison",
    "EpochMetrics",
    "EvalReport",
    "ExportReport",
    "Model",
    "PredictReport",
    "PrepareReport",
    "RemapReport",
    "Run",
    "RunMetrics",
    "TrainConfig",
    "TuneConfig",
    "TuneReport",
    "__version__",
    "benchmark",
    "compare",
    "demo",
    "evaluate_predictions",
    "predict_files",
    "prepare",
    "remap",
    "serve",
    "train",
    "tune",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    """The API and the module's dunders, not the helpers this file imports."""
    return sorted({*__all__, *(name for name in globals() if name.startswith("__"))})
