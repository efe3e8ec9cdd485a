"""`cityseg train`: its options, which are `cityseg.train`'s keywords -> a summary.

TensorFlow is imported only when the command runs, so `cityseg --help` stays quick.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from cityseg.cli.options import Command, Crop, InputSize, Size, out
from cityseg.config import TRAIN, Arch, Augmentation, Loss, Optimizer, Precision, Schedule, Strategy

if TYPE_CHECKING:
    from cityseg.api.run import Run

app = typer.Typer()

# TrainConfig holds the plain strings config.json stores; the options take the enums.
ARCH = Arch(TRAIN.arch)
LOSS = Loss(TRAIN.loss)
AUG = Augmentation(TRAIN.aug)
SIZE = Size(TRAIN.height, TRAIN.width)


def _list_choices(value: bool) -> None:
    """`--list` is eager, like `--version`: it answers before any other option is checked."""
    if not value:
        return
    from cityseg.training.choices import describe_choices

    for line in describe_choices():
        out.print(line, highlight=False)
    raise typer.Exit()


Data = Annotated[Path, typer.Option(help="Prepared dataset (from `cityseg prepare`).")]
ArchOption = Annotated[Arch, typer.Option(help="Model architecture.")]
# Each arch takes its own (`--list` shows them); the model builder checks the name.
Backbone = Annotated[
    str | None,
    typer.Option(help="Encoder of the arch (default: the arch's own; see --list)."),
]
Weights = Annotated[
    str,
    typer.Option(
        help="Encoder weights: imagenet (needs internet once), none, or a file; segformer "
        "archs: cityscapes (needs internet once) or a keras-hub preset folder."
    ),
]
# A name the dataset holds or auto, and only the dataset knows its names: a str.
Scheme = Annotated[
    str,
    typer.Option(help="Mask scheme prepared in the dataset (auto: the one it was made with)."),
]
Epochs = Annotated[int, typer.Option(min=1)]
Batch = Annotated[int, typer.Option(min=1, help="Global batch size (all devices).")]
Lr = Annotated[float, typer.Option(min=0.0, help="Peak learning rate.")]
ScheduleOption = Annotated[Schedule, typer.Option(help="Learning-rate schedule.")]
Patience = Annotated[int, typer.Option(min=0, help="Early-stopping patience in epochs (0: off).")]
LossOption = Annotated[Loss, typer.Option(help="Training loss.")]
Aug = Annotated[Augmentation, typer.Option(help="Augmentation preset.")]
Cache = Annotated[
    str | None,
    typer.Option(help="Cache decoded data: 'memory' or a file prefix (small sets)."),
]
PrecisionOption = Annotated[Precision, typer.Option(help="auto: mixed on a GPU.")]
StrategyOption = Annotated[
    Strategy,
    typer.Option(
        help="Distribution: auto = multiworker when TF_CONFIG names several workers, "
        "else mirrored over several GPUs, else one device."
    ),
]
WorkerTimeout = Annotated[
    float,
    typer.Option(
        min=1.0, help="Seconds a multi-worker run waits for every TF_CONFIG worker to join."
    ),
]
Project = Annotated[Path, typer.Option(help="Folder holding the runs.")]
Name = Annotated[str | None, typer.Option(help="Run name (default: the arch).")]
BaseFilters = Annotated[
    int, typer.Option(min=4, help="unet-scratch width (64 = the classic U-Net).")
]
StepsPerEpoch = Annotated[
    int | None, typer.Option(min=1, help="Cap training steps per epoch (quick runs).")
]
Resume = Annotated[
    Path | None, typer.Option(help="Continue the run in this folder from its last/ checkpoint.")
]
ListChoices = Annotated[
    bool,
    typer.Option(
        "--list",
        help="List architectures, backbones, losses and presets, then exit.",
        callback=_list_choices,
        is_eager=True,
    ),
]


@app.command(cls=Command)
def train(
    data: Data = TRAIN.data,
    arch: ArchOption = ARCH,
    backbone: Backbone = TRAIN.backbone,
    weights: Weights = TRAIN.weights,
    scheme: Scheme = TRAIN.scheme,
    size: InputSize = SIZE,
    crop: Crop = None,
    epochs: Epochs = TRAIN.epochs,
    batch: Batch = TRAIN.batch,
    lr: Lr = TRAIN.lr,
    optimizer: Optimizer = TRAIN.optimizer,
    schedule: ScheduleOption = TRAIN.schedule,
    patience: Patience = TRAIN.patience,
    loss: LossOption = LOSS,
    aug: Aug = AUG,
    cache: Cache = TRAIN.cache,
    seed: int = TRAIN.seed,
    precision: PrecisionOption = TRAIN.precision,
    strategy: StrategyOption = TRAIN.strategy,
    worker_timeout: WorkerTimeout = TRAIN.worker_timeout,
    project: Project = TRAIN.project,
    name: Name = TRAIN.name,
    base_filters: BaseFilters = TRAIN.base_filters,
    steps_per_epoch: StepsPerEpoch = TRAIN.steps_per_epoch,
    resume: Resume = None,
    list_choices: ListChoices = False,
) -> None:
    """Train a segmentation model; writes runs/train/<name>/ with best/ and last/ bundles."""
    settings = dict(locals())  # the flags by name: each is a `cityseg.train` keyword
    del settings["list_choices"]
    settings["size"] = size.pair
    settings["crop"] = None if crop is None else crop.pair
    _train_and_print(settings)


def _train_and_print(settings: dict[str, Any]) -> None:
    """`cityseg.train` with the flags as its keywords: the one `TrainConfig` builder that
    `cityseg.train`, `cityseg.tune` and `cityseg tune` use too (`with_overrides`)."""
    from cityseg.api.run import WorkerProcessError
    from cityseg.api.run import train as train_run

    try:
        run = train_run(**settings)
    except WorkerProcessError as worker:  # trained; only the chief writes the run folder
        epochs = worker.report.epochs_completed
        out.print(f"Trained {epochs} epoch(s); the chief wrote the run folder.")
        return
    _print_trained(run)


def _print_trained(run: Run) -> None:
    report = run.report
    assert report is not None  # `cityseg.train` keeps what training reported
    best = "-" if report.best_score is None else f"{report.best_score:.4f}"
    out.print(
        f"[green]Trained {report.epochs_completed} epoch(s)[/]; best {report.monitor} {best} "
        f"at epoch {report.best_epoch}. Bundles: {escape(str(report.run_dir / 'best'))}, "
        f"{escape(str(report.run_dir / 'last'))}"
    )
