"""`cityseg.predict_files` and `cityseg.evaluate_predictions`: the commands' file-to-file
forms, for when what is wanted is the files `cityseg predict` writes, or the score of
PNGs made elsewhere, rather than arrays in memory.

`predict_files` checks every input and output name before it opens a model, as the
command does: a typo in a path costs milliseconds, not a TensorFlow import.
`evaluate_predictions` reads PNGs only and never imports TensorFlow, so scoring another
tool's results works on a machine without it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

from cityseg.api._common import PathLike, optional_path
from cityseg.api.model import Model
from cityseg.config import DEFAULT_PROJECT, EVALUATE, PREDICT, OutputFormat, PredictConfig, Split
from cityseg.errors import UsageError
from cityseg.inference.sliding import Window, as_window
from cityseg.logs import api_messages
from cityseg.runs import resolve_data

if TYPE_CHECKING:
    from cityseg.evaluation.report import EvalReport
    from cityseg.inference.predict import PredictReport
    from cityseg.inference.predictor import Predictor


class PredictFileOptions(TypedDict, total=False):
    """`predict_files`' options, as `Model.predict_files` passes them on: its defaults
    are `predict_files`' own, so they are written once."""

    format: str | OutputFormat
    legend: bool
    alpha: float
    tta: bool
    batch: int
    slide: str | Window | None
    verbose: bool


def predict_files(
    inputs: PathLike | Sequence[PathLike],
    output: PathLike,
    *,
    model: Model | PathLike | None = None,
    project: PathLike = DEFAULT_PROJECT,
    format: str | OutputFormat = PREDICT.format,
    legend: bool = PREDICT.legend,
    alpha: float = PREDICT.alpha,
    tta: bool = PREDICT.tta_flip,
    batch: int = PREDICT.batch,
    slide: str | Window | None = None,
    verbose: bool = True,
) -> PredictReport:
    """Write one mask file per input image, as `cityseg predict INPUT... -o OUTPUT`.

    `inputs` are image files, glob patterns or folders (searched for photos, skipping
    labels, masks and earlier outputs); `output` is a folder, or a .png/.jpg for one
    image. `format` is colour, ids, overlay or labelids; `model` a `Model` (kept loaded),
    a path, or None for the newest run's best under `project`. Unreadable images are
    skipped with a warning (shown even when not `verbose`) and listed in the report's
    `failed`.
    """
    from cityseg.inference.predict import predict_paths

    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    window = as_window(slide)
    path, loader = _model_of(model, tta, window)
    with api_messages(verbose):
        return predict_paths(
            [item if isinstance(item, str) else Path(item) for item in items],
            output if isinstance(output, str) else Path(output),
            model=path,
            project=Path(project),
            config=PredictConfig(
                format=_output_format(format), alpha=alpha, legend=legend, tta_flip=tta, batch=batch
            ),
            show_progress=verbose,
            loader=loader,
            slide=window,
        )


def _model_of(
    model: Model | PathLike | None, tta: bool, window: Window | None
) -> tuple[Path | None, Callable[[], Predictor] | None]:
    """A path is opened by predict itself once the inputs are checked, as the command
    does; a `Model` lends its loaded model, so a loop of calls loads it once."""
    if not isinstance(model, Model):
        return optional_path(model), None
    opened = model
    return opened.path, lambda: opened.predictor(tta=tta, slide=window)


def evaluate_predictions(
    predictions: PathLike,
    data: PathLike | None = None,
    *,
    split: str | Split = EVALUATE.split,
    project: PathLike = EVALUATE.project,
    name: str | None = None,
    write_labelids: PathLike | None = None,
    scheme: str | None = None,
    verbose: bool = True,
) -> EvalReport:
    """Score a folder of class-id PNGs named by key (`{key}.png`, or any name holding the
    key) on a prepared split, as `cityseg evaluate --predictions FOLDER` does.

    `data` defaults to data/cityscapes, `scheme` to the categories the official score
    needs. Writes `project/<name>/` (default `predictions`) like `Model.evaluate` and
    returns the same typed report.
    """
    from cityseg.evaluation.evaluate import evaluate

    with api_messages(verbose):
        return evaluate(
            data=resolve_data(optional_path(data), None),
            split=split.value if isinstance(split, Enum) else split,
            predictions=Path(predictions),
            write_labelids=optional_path(write_labelids),
            project=Path(project),
            name=name,
            show_progress=verbose,
            scheme=scheme,
        )


def _output_format(value: str | OutputFormat) -> OutputFormat:
    try:
        return OutputFormat(value)
    except ValueError:
        choices = ", ".join(member.value for member in OutputFormat)
        raise UsageError(f"format={value!r} is not one of {choices}") from None
