"""Commands that run a trained model: `evaluate`, `predict` and `serve`.

All three take any model format (`--model`) and default to the newest run's best/.
Library modules are imported inside each command, so `--help` does not load TensorFlow.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from cityseg.cli.options import (
    Batch,
    Command,
    Data,
    Model,
    Project,
    Quiet,
    Slide,
    Tta,
    note,
    open_model,
    out,
    score,
    tta_choice,
)
from cityseg.config import (
    DEFAULT_DATA,
    DEFAULT_PROJECT,
    EVALUATE,
    PREDICT,
    SERVE,
    TTA,
    OutputFormat,
    ServeConfig,
    Split,
)
from cityseg.errors import CitysegError, UsageError

if TYPE_CHECKING:
    from cityseg.evaluation.evaluate import EvalReport

app = typer.Typer()

SPLIT = Split(EVALUATE.split)
EVALUATE_TTA = tta_choice(EVALUATE.tta_flip)
PREDICT_TTA = tta_choice(PREDICT.tta_flip)

SplitOption = Annotated[Split, typer.Option(help="Which split to score.")]
Predictions = Annotated[
    Path | None,
    typer.Option(help="Score a folder of class-id PNGs named by key instead of a model."),
]
WriteLabelIds = Annotated[
    Path | None,
    typer.Option(help="Also write predictions as official {key}_pred_labelIds.png files here."),
]
EvalProject = Annotated[Path, typer.Option(help="Folder holding evaluation runs.")]
EvalName = Annotated[str | None, typer.Option(help="Run name (default: the training run's).")]


@app.command(cls=Command)
def evaluate(
    model: Model = None,
    data: Data = None,
    split: SplitOption = SPLIT,
    predictions: Predictions = None,
    write_labelids: WriteLabelIds = None,
    project: EvalProject = EVALUATE.project,
    name: EvalName = None,
    batch: Batch = EVALUATE.batch,
    tta: Tta = EVALUATE_TTA,
    slide: Slide = None,
    quiet: Quiet = False,
) -> None:
    """Score a model (or a folder of predictions), including the official Cityscapes IoU."""
    if predictions is not None:
        from cityseg.api.files import evaluate_predictions  # PNGs only: no TensorFlow

        if model is not None:
            raise UsageError("pass either a model or --predictions, not both")
        report = evaluate_predictions(
            predictions,
            data,
            split=split,
            project=project,
            name=name,
            write_labelids=write_labelids,
            verbose=not quiet,
        )
    else:
        report = open_model(model, DEFAULT_PROJECT, quiet=quiet).evaluate(
            data,
            split,
            tta=tta is TTA.flip,
            batch=batch,
            project=project,
            name=name,
            write_labelids=write_labelids,
            slide=slide,
        )
    _print_scores(report)


def _print_scores(report: EvalReport) -> None:
    scores = report.scores
    table = Table(title=f"{report.split} split, {report.images} images")
    for column in ("class", "IoU", "dice", "precision", "recall"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for row in scores.per_class:
        table.add_row(row.name, *(score(v) for v in (row.iou, row.dice, row.precision, row.recall)))
    out.print(table)
    count = f"({len(scores.per_class)} classes)"
    out.print(f"mean IoU {count:<19}{score(scores.mean_iou)}")
    if scores.void_classes:
        out.print(f"mean IoU (non-void)         {score(scores.mean_iou_non_void)}")
    out.print(f"pixel accuracy              {score(scores.pixel_accuracy)}")
    if report.official is not None:
        out.print(f"official Cityscapes category IoU  [bold]{score(report.official.mean_iou)}[/]")
    out.print(f"written: {escape(str(report.out_dir))}")


PredictInputs = Annotated[
    list[str],
    typer.Argument(
        help="PNG/JPEG files or glob patterns (taken as given), or folders: searched "
        "recursively for photos, skipping label/mask PNGs (named *_labelIds, *_color, "
        "*_gtFine_*..., or grayscale/palette), a prepared dataset's labelIds/ and masks/, "
        "cityseg predict outputs and hidden files.",
        show_default=False,
        metavar="INPUT...",
    ),
]
PredictOutput = Annotated[
    str,
    typer.Option(
        "--output",
        "-o",
        help="Output folder, or a .png/.jpg file for exactly one input image.",
        metavar="PATH",
    ),
]
Format = Annotated[OutputFormat, typer.Option(help="What to write.")]
Alpha = Annotated[float, typer.Option(help="Overlay opacity of the mask, 0..1.")]
Legend = Annotated[bool, typer.Option("--legend", help="Draw the class legend.")]


@app.command(cls=Command)
def predict(
    inputs: PredictInputs,
    output: PredictOutput,
    model: Model = None,
    project: Project = DEFAULT_PROJECT,
    format: Format = PREDICT.format,
    alpha: Alpha = PREDICT.alpha,
    legend: Legend = PREDICT.legend,
    tta: Tta = PREDICT_TTA,
    batch: Batch = PREDICT.batch,
    slide: Slide = None,
    quiet: Quiet = False,
) -> None:
    """Write colour masks (or ids, overlays, labelIds) for images, at each image's size."""
    from cityseg.api.files import predict_files

    # Not `open_model`: predict checks every input before it looks for the model.
    report = predict_files(
        inputs,
        output,
        model=model,
        project=project,
        format=format,
        alpha=alpha,
        legend=legend,
        tta=tta is TTA.flip,
        batch=batch,
        slide=slide,
        verbose=not quiet,
    )
    out.print(f"[green]Wrote {len(report.written)} {format.value} mask(s)[/] to {escape(output)}")
    if report.failed:
        raise CitysegError(
            f"{len(report.failed)} input(s) could not be read (see the "
            "warnings above); the others were written"
        )


ServeData = Annotated[
    Path | None,
    typer.Option(
        help="Prepared dataset to browse (default: the model's training run's, else "
        f"{DEFAULT_DATA}, if prepared; else none).",
        show_default=False,
    ),
]
Host = Annotated[str, typer.Option(help="Bind address; 0.0.0.0 exposes it.")]
Port = Annotated[int, typer.Option(min=1, max=65535)]
ServeWorkers = Annotated[int, typer.Option(min=1, help="Server processes (each loads the model).")]
MaxBodyMb = Annotated[float, typer.Option(min=0.001, help="Largest request body, MB.")]
MaxPixels = Annotated[int, typer.Option(min=1, help="Largest image, pixels.")]
MaxQueue = Annotated[int, typer.Option(min=0, help="Inference requests queued before 503.")]


@app.command(cls=Command)
def serve(
    model: Model = None,
    data: ServeData = None,
    host: Host = SERVE.host,
    port: Port = SERVE.port,
    workers: ServeWorkers = SERVE.workers,
    project: Project = DEFAULT_PROJECT,
    max_body_mb: MaxBodyMb = SERVE.max_body_bytes / 1024**2,
    max_pixels: MaxPixels = SERVE.max_pixels,
    max_queue: MaxQueue = SERVE.max_queue,
    slide: Slide = None,
) -> None:
    """Serve the prediction API (OpenAPI at /docs) and a web page to browse the dataset."""
    import uvicorn

    from cityseg.inference.predictor import resolve_model
    from cityseg.runs import find_data
    from cityseg.serve.app import create_app
    from cityseg.serve.settings import SETTINGS_ENV, settings_to_env

    model = resolve_model(model, project)
    settings = ServeConfig(
        model=model,
        data=find_data(data, model),
        project=project,
        host=host,
        port=port,
        workers=workers,
        max_body_bytes=int(max_body_mb * 1024 * 1024),
        max_pixels=max_pixels,
        max_queue=max_queue,
        slide=None if slide is None else str(slide),
    )
    app_instance = create_app(settings)  # checks the model and data before binding
    note(f"serving on http://{host}:{port} (API docs at /docs); Ctrl-C stops")
    if workers == 1:
        uvicorn.run(
            app_instance, host=host, port=port, log_level="warning", timeout_graceful_shutdown=30
        )
        return
    os.environ[SETTINGS_ENV] = settings_to_env(settings)
    uvicorn.run(
        "cityseg.serve.app:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="warning",
        timeout_graceful_shutdown=30,
    )
