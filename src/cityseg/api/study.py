"""`cityseg.tune` and `cityseg.compare`: a search over training settings, and its table.

`tune` takes the search space as a `cityseg.tuning.space.SearchSpace`, as the mapping a
`--space` file holds (`{"arch": ["fpn", "unet"], "lr": {"low": 1e-4, "high": 1e-2,
"log": True}}`) or as that file's path; every other training setting comes from
`config` and `overrides`, as for `cityseg.train`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cityseg.api._common import PathLike
from cityseg.config import TUNE, TrainConfig, TuneConfig
from cityseg.logs import api_messages

if TYPE_CHECKING:
    from cityseg.comparison import Comparison
    from cityseg.tuning.space import SearchSpace
    from cityseg.tuning.study import TuneReport


def tune(
    config: TrainConfig | None = None,
    *,
    space: SearchSpace | Mapping[str, Any] | PathLike,
    study: str = TUNE.study,
    trials: int = TUNE.trials,
    timeout: float | None = TUNE.timeout,
    objective: str | Sequence[str] = TUNE.objectives,
    storage: str | None = TUNE.storage,
    project: PathLike = TUNE.project,
    prune: bool = TUNE.prune,
    heartbeat: int = TUNE.heartbeat,
    seed: int = TUNE.seed,
    verbose: bool = True,
    **overrides: Any,
) -> TuneReport:
    """Run (or resume) a study as `cityseg tune` does, and return its report: where it
    is, its trial counts, and its best trial (or Pareto front, for `miou,latency`).
    `verbose=False` keeps only the warnings of its progress lines."""
    from cityseg.api.run import with_overrides
    from cityseg.tuning.study import tune as run_study

    base = with_overrides(config or TrainConfig(), overrides)
    settings = TuneConfig(
        study=study,
        project=Path(project),
        storage=storage,
        trials=trials,
        timeout=timeout,
        objectives=_objectives(objective),
        prune=prune,
        heartbeat=heartbeat,
        seed=seed,
    )
    with api_messages(verbose):
        return run_study(base, search_space(space), settings)


def search_space(space: SearchSpace | Mapping[str, Any] | PathLike) -> SearchSpace:
    """A space given as a `SearchSpace`, a file-form mapping, or a YAML/JSON file."""
    from cityseg.tuning.space import SearchSpace, merge_spaces, space_from_file

    if isinstance(space, SearchSpace):
        return space
    if isinstance(space, (str, os.PathLike)):
        path = Path(space)
        return merge_spaces(space_from_file(path), {}, path)
    return merge_spaces(space, {}, Path("space"))


def compare(
    runs: PathLike | Sequence[PathLike] = (),
    *,
    sort: str = "val_miou",
    latency: bool = False,
    latency_runs: int = TUNE.latency_runs,
    plot: PathLike | None = None,
    verbose: bool = True,
) -> Comparison:
    """The comparison `cityseg compare` prints, as rows (`.rows`) you can read, and
    `.render("md")` for the Markdown table; `plot` also writes compare.png there."""
    from cityseg.comparison import compare_runs
    from cityseg.comparison.plot import write_plot

    paths = [Path(runs)] if isinstance(runs, (str, os.PathLike)) else [Path(r) for r in runs]
    with api_messages(verbose):
        comparison = compare_runs(paths, sort=sort, latency=latency, latency_runs=latency_runs)
    if plot is not None:
        write_plot(comparison.rows, Path(plot))
    return comparison


def _objectives(objective: str | Sequence[str]) -> tuple[str, ...]:
    if isinstance(objective, str):
        return tuple(part.strip() for part in objective.split(",") if part.strip())
    return tuple(objective)
