"""`cityseg tune` and `cityseg compare`: a search over training settings, and the table.

Every searchable training option takes a choice list (`--arch fpn,unet`), a range
(`--lr 1e-4:1e-2:log`) or one value, so these are strings here and the search space
parses them (`cityseg.tuning.space`); the settings held fixed are train's own options.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cityseg.cli.options import Command, Crop, InputSize, Size, note, out
from cityseg.config import TRAIN, TUNE

if TYPE_CHECKING:
    from cityseg.comparison import Comparison

app = typer.Typer()

SIZE = Size(TRAIN.height, TRAIN.width)
OBJECTIVE = ",".join(TUNE.objectives)
SEARCH_HELP = "Choices a,b,c, a range LOW:HIGH[:log], or one value."

Searched = Annotated[str | None, typer.Option(help=SEARCH_HELP, show_default=False)]
SpaceFile = Annotated[
    Path | None,
    typer.Option("--space", help="YAML/JSON search space; options given here win over it."),
]
Trials = Annotated[int, typer.Option(min=1, help="Trials in the whole study (all processes).")]
Timeout = Annotated[
    float | None, typer.Option(min=0, help="Seconds after which no new trial starts.")
]
Objective = Annotated[str, typer.Option(help="miou, or miou,latency for a Pareto front.")]
StudyName = Annotated[str, typer.Option("--study", help="Study name: its folder and its key.")]
Storage = Annotated[
    str | None,
    typer.Option(help="Database URL shared by machines (default: SQLite in the study folder)."),
]
Heartbeat = Annotated[
    int, typer.Option(min=1, help="Seconds between heartbeats; a trial silent 2x is retried.")
]
Prune = Annotated[bool, typer.Option(help="Stop trials whose per-epoch score falls behind.")]
TuneProject = Annotated[Path, typer.Option(help="Folder holding the studies.")]


@app.command(cls=Command)
def tune(
    data: Annotated[Path, typer.Option(help="Prepared dataset.")] = TRAIN.data,
    size: InputSize = SIZE,
    crop: Crop = None,
    epochs: Annotated[int, typer.Option(min=1, help="Epochs per trial.")] = TRAIN.epochs,
    arch: Searched = None,
    backbone: Searched = None,
    weights: Searched = None,
    loss: Searched = None,
    aug: Searched = None,
    lr: Searched = None,
    batch: Searched = None,
    optimizer: Searched = None,
    schedule: Searched = None,
    base_filters: Searched = None,
    space: SpaceFile = None,
    trials: Trials = TUNE.trials,
    timeout: Timeout = TUNE.timeout,
    objective: Objective = OBJECTIVE,
    study: StudyName = TUNE.study,
    storage: Storage = TUNE.storage,
    project: TuneProject = TUNE.project,
    heartbeat: Heartbeat = TUNE.heartbeat,
    prune: Prune = TUNE.prune,
    patience: Annotated[int, typer.Option(min=0, help="Early stopping per trial.")] = 0,
    seed: Annotated[int, typer.Option(help="Sampler and training seed.")] = TUNE.seed,
) -> None:
    """Search training settings with Optuna; each trial is a run in runs/tune/<study>/."""
    from cityseg.api.study import tune as run_study
    from cityseg.tuning.space import merge_spaces, space_from_file, space_from_options

    searched = {
        "arch": arch, "backbone": backbone, "weights": weights, "loss": loss, "aug": aug,
        "lr": lr, "batch": batch, "optimizer": optimizer, "schedule": schedule,
        "base_filters": base_filters,
    }  # fmt: skip
    chosen = (
        merge_spaces(space_from_file(space), searched, space)
        if space is not None
        else space_from_options(searched)
    )
    report = run_study(
        space=chosen, study=study, trials=trials, timeout=timeout, objective=objective,
        storage=storage, project=project, prune=prune, heartbeat=heartbeat, seed=seed,
        data=data, size=size.pair, crop=None if crop is None else crop.pair, epochs=epochs,
        patience=patience,
    )  # fmt: skip
    for best in report.best:
        scores = "  ".join(f"{name} {value:.4g}" for name, value in best.values.items())
        note(f"best: trial {best.number} ({scores}): {best.model}")
    if report.best_json is not None:
        note(f"summary and the commands to retrain or export it: {report.best_json}")
    _print_comparison(_comparison([report.folder], "val_miou"), "table")


class CompareFormat(str, Enum):
    table = "table"
    csv = "csv"
    md = "md"
    json = "json"


@app.command(cls=Command)
def compare(
    runs: Annotated[
        list[Path] | None,
        typer.Argument(help="Run folders or folders of runs (default: runs/train, runs/tune)."),
    ] = None,
    sort: Annotated[str, typer.Option(help="Column to rank by, best first.")] = "val_miou",
    format: Annotated[CompareFormat, typer.Option(help="Output form.")] = CompareFormat.table,
    latency: Annotated[
        bool, typer.Option(help="Time every best model on this CPU, in this process.")
    ] = False,
    latency_runs: Annotated[int, typer.Option(min=1, help="Timed calls per model.")] = 10,
    plot: Annotated[
        Path | None, typer.Option(help="Where to draw the chart (default runs/compare.png).")
    ] = None,
    no_plot: Annotated[bool, typer.Option("--no-plot", help="Draw no chart.")] = False,
) -> None:
    """Compare runs in one table: settings, cost, val and test scores, and why a run has none."""
    from cityseg.comparison.plot import write_plot

    comparison = _comparison(list(runs or []), sort, latency=latency, latency_runs=latency_runs)
    _print_comparison(comparison, format.value)
    if not no_plot:
        target = plot or Path("runs") / "compare.png"
        shown = write_plot(comparison.rows, target)
        note(
            f"plot: {target} ({shown} runs)"
            if shown
            else "no plot: no run has a val mIoU and a cost"
        )


def _comparison(
    runs: list[Path], sort: str, *, latency: bool = False, latency_runs: int = 10
) -> Comparison:
    from cityseg.comparison import compare_runs

    return compare_runs(runs, sort=sort, latency=latency, latency_runs=latency_runs)


def _print_comparison(comparison: Comparison, format: str) -> None:
    """The table on stdout; in table form, the reasons follow as notes on stderr."""
    out.file.write(comparison.render(format))
    out.file.flush()  # the table before the notes that explain it
    if format == "table":
        for row in comparison.rows:
            if row.reason:
                note(f"{row.name}: {row.reason}")
