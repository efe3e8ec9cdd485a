"""Which folders are runs: the ones named, or every run under runs/train and runs/tune.

A run folder is one `cityseg train` (or a tuning trial) made: it holds config.json,
metrics.csv, best/, last/ or trial.json. A folder that holds none of them is a folder
of runs (runs/train, a study, runs/tune), whose sub-folders are taken as runs in turn,
down to a study's trials; an empty trial folder is still listed, as such.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cityseg.config import DEFAULT_PROJECT, DEFAULT_TUNE_PROJECT
from cityseg.errors import UsageError
from cityseg.runs import CONFIG_NAME
from cityseg.tuning.trial import TRIAL_PREFIX, TRIAL_RECORD

RUN_MARKERS = (CONFIG_NAME, "metrics.csv", "best", "last", TRIAL_RECORD)
NOT_RUNS = ("tensorboard", "evaluate", "export")
"""Folders inside a run, never runs of their own."""


def is_run(folder: Path) -> bool:
    return any((folder / marker).exists() for marker in RUN_MARKERS) or folder.name.startswith(
        TRIAL_PREFIX
    )


def collect_runs(paths: Sequence[Path]) -> list[Path]:
    """The run folders of `paths` (or of the default projects), each once, in order."""
    if not paths:
        defaults = [p for p in (DEFAULT_PROJECT, DEFAULT_TUNE_PROJECT) if p.is_dir()]
        if not defaults:
            raise UsageError(
                f"no runs: neither {DEFAULT_PROJECT} nor {DEFAULT_TUNE_PROJECT} exists here; "
                "name run folders, or train one with cityseg train"
            )
        paths = defaults
    found: list[Path] = []
    for path in paths:
        if not path.is_dir():
            raise UsageError(f"{path} is not a folder of runs or a run folder")
        found.extend(_runs_under(path, depth=3))
    return list(dict.fromkeys(found))


def _runs_under(folder: Path, depth: int) -> list[Path]:
    if is_run(folder):
        return [folder]
    if depth == 0:
        return []
    children = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    runs: list[Path] = []
    for child in children:
        if child.name in NOT_RUNS:
            continue
        if not any(child.iterdir()):
            runs.append(child)  # a run that never got going: listed, with its reason
            continue
        runs.extend(_runs_under(child, depth - 1))
    return runs


def display_name(run: Path) -> str:
    """`fpn`, or `study/trial-3` for a trial, so names stay short and unique."""
    if run.name.startswith(TRIAL_PREFIX):
        return f"{run.parent.name}/{run.name}"
    return run.name
