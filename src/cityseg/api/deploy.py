"""`cityseg.benchmark`: several models timed at one input size, as `cityseg benchmark
--model A --model B` does; `Model.benchmark` is its one-model form."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from cityseg.api._common import PathLike, size_of
from cityseg.api.model import Model
from cityseg.config import BENCHMARK, DEFAULT_PROJECT
from cityseg.inference.predictor import newest_bundle
from cityseg.inference.pretrained import named_or_path
from cityseg.logs import api_messages

if TYPE_CHECKING:
    from cityseg.deploy.benchmark import BenchmarkReport

Timed = Model | PathLike


def benchmark(
    models: Timed | Sequence[Timed] | None = None,
    *,
    size: str | tuple[int, int] | None = None,
    runs: int = BENCHMARK.runs,
    batch: int = BENCHMARK.batch,
    exports: bool = BENCHMARK.include_exports,
    project: PathLike = DEFAULT_PROJECT,
    verbose: bool = True,
) -> BenchmarkReport:
    """Time each model (`Model`s or paths; default the newest run's best under `project`)
    and, with `exports`, each bundle's run exports, all at one size (default: the first
    model's), so their latencies compare. Returns one row per runtime, with the Keras
    model's parameters and FLOPs; an export made at another size is skipped, said so.
    """
    from cityseg.deploy.benchmark import time_models

    if models is None or isinstance(models, (str, os.PathLike, Model)):
        chosen: list[Timed] = [] if models is None else [models]
    else:
        chosen = list(models)
    with api_messages(verbose):  # a pretrained name is built into a bundle once
        paths = [m.path if isinstance(m, Model) else named_or_path(Path(m)) for m in chosen]
        return time_models(
            paths or [newest_bundle(Path(project))],
            size=size_of(size),
            runs=runs,
            batch=batch,
            include_exports=exports,
        )
