"""The training run a model came from, and the dataset that run was trained on.

`evaluate`, `export` and `serve` need a prepared dataset beside the model. A model trained
with `train --data X` should not need `--data X` again on every later command: the run's
config.json records X, and every model path (a bundle `best/` or `last/`, an export folder
`export/FORMAT`, or its `model.tflite` / `model.onnx`) lies a level or two below the run.
Resolving it here, once, keeps the three commands from disagreeing about which dataset
they use. Pure stdlib: no TensorFlow, so `--help` and `evaluate --predictions` stay quick.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from cityseg.config import TRAIN
from cityseg.dataset.manifest import is_dataset
from cityseg.errors import UsageError

logger = logging.getLogger(__name__)
DEFAULT_DATA = TRAIN.data
RUN_LEVELS = 3
"""Folders searched for config.json: the model's own, its parent and grandparent."""


def run_dir_of(model: Path) -> Path | None:
    """The training run folder holding `model`, or None for a model from elsewhere.

    Parents are taken lexically (`best` -> `.` -> `..`) so that a relative model path gives
    relative run paths, which are what the user typed and what the messages should show.
    """
    folder = model if model.is_dir() else model.parent
    for level in range(RUN_LEVELS):
        candidate = Path(os.path.normpath(folder.joinpath(*[".."] * level)))
        if run_config(candidate) is not None:
            return candidate
    return None


def run_config(run_dir: Path) -> dict[str, Any] | None:
    """A run's config.json if it is one `cityseg train` wrote (it names its dataset)."""
    try:
        config = json.loads((run_dir / CONFIG_NAME).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict) or not isinstance(config.get("data"), str):
        return None
    return config


def find_data(data: Path | None, model: Path | None) -> Path | None:
    """The dataset a command should use: `data` as given; else the model's run's dataset
    if it is still prepared; else the default if it is; else None.

    A dataset the user did not name is announced (logged), as `resolve_model` does for
    models, so that the numbers a command prints can be traced to their data.
    """
    if data is not None:
        return data
    found = _run_dataset(model) if model is not None else None
    if found is not None:
        return found
    return DEFAULT_DATA if is_dataset(DEFAULT_DATA) else None


def resolve_data(data: Path | None, model: Path | None) -> Path:
    """`find_data`, falling back to the default so the command's own error names it."""
    return find_data(data, model) or DEFAULT_DATA


def _run_dataset(model: Path) -> Path | None:
    run_dir = run_dir_of(model)
    config = run_config(run_dir) if run_dir is not None else None
    if run_dir is None or config is None:
        return None
    source = run_dir / CONFIG_NAME
    recorded = Path(config["data"])
    for candidate in _dataset_candidates(recorded, run_dir, config.get("run_dir")):
        if is_dataset(candidate):
            logger.info(f"data: {candidate} (from {source}; choose another with --data)")
            return candidate
    if recorded != DEFAULT_DATA:
        logger.info(
            f"note: the run's dataset {recorded} (from {source}) is no longer prepared there"
        )
    return None


def _dataset_candidates(recorded: Path, run_dir: Path, recorded_run: object) -> list[Path]:
    """Where a recorded dataset may be: as given (relative to the current folder), then,
    for a relative one, relative to the folder training ran in, which lets a command run
    from elsewhere (`--model /proj/runs/train/fpn/best`) still find `/proj/data/...`."""
    if recorded.is_absolute():
        return [recorded]
    base = _training_folder(run_dir, recorded_run)
    return [recorded] if base is None else [recorded, base / recorded]


def _training_folder(run_dir: Path, recorded_run: object) -> Path | None:
    """The folder `train` ran in: the run folder's path less the relative `run_dir` that
    config.json recorded (`/proj/runs/train/fpn` less `runs/train/fpn` is `/proj`)."""
    if not isinstance(recorded_run, str):
        return None
    tail = Path(recorded_run).parts
    actual = run_dir.resolve().parts
    if not tail or Path(recorded_run).is_absolute() or ".." in tail or actual[-len(tail) :] != tail:
        return None
    return Path(*actual[: -len(tail)])


CONFIG_NAME = "config.json"


def parse_size(text: str, option: str = "--size") -> tuple[int, int]:
    """`512x1024` -> (512, 1024): height first, as Keras and the CLI's help say; `option`
    names the flag in messages (`--crop` takes sizes too)."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX*,]\s*(\d+)\s*", text)
    if not match:
        raise UsageError(f"{option} must look like HEIGHTxWIDTH (e.g. 512x1024), got {text!r}")
    height, width = int(match[1]), int(match[2])
    if height < 16 or width < 16:
        raise UsageError(f"{option} {text} is too small; use at least 16x16")
    return height, width


def next_run_dir(project: Path, name: str) -> Path:
    """`project/name`, or `name2`, `name3`, ... if taken (never reuses a run)."""
    candidate = project / name
    number = 2
    while candidate.exists():
        candidate = project / f"{name}{number}"
        number += 1
    return candidate
