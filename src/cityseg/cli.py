"""The `cityseg` command line: parse options, call one library function, print the result.

No logic lives here. Library modules are imported inside each command so that
`cityseg --help` and `cityseg remap` start without importing TensorFlow.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cityseg import __version__
from cityseg.config import (
    TTA,
    Background,
    DataFormat,
    ExportFormat,
    GroundTruth,
    LabelSource,
    Optimizer,
    OutputFormat,
    OwnDataConfig,
    Precision,
    PrepareConfig,
    RemapConfig,
    Schedule,
    ServeConfig,
    SplitBy,
    Strategy,
    SyntheticConfig,
    TrainConfig,
    UnknownPolicy,
)
from cityseg.demo import DemoFormat
from cityseg.errors import CitysegError, UsageError

if TYPE_CHECKING:
    from cityseg.dataset.prepare import PrepareReport

app = typer.Typer(
    name="cityseg",
    help="Cityscapes from the raw zips to a trained segmentation model and colour masks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

REMAP = RemapConfig()
PREPARE = PrepareConfig()
OWN = OwnDataConfig()
SYNTHETIC = SyntheticConfig()
TRAIN = TrainConfig()
SERVE = ServeConfig()
MODEL_HELP = (
    "A bundle or export folder, or its model.tflite / model.onnx (default: the newest run's best/)."
)


def _version(value: bool) -> None:
    if value:
        out.print(f"cityseg {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False,
        "--version",
        "-V",
        help="Show the version and exit.",
        callback=_version,
        is_eager=True,
    ),
) -> None:
    """Cityscapes from the raw zips to a trained segmentation model and colour masks.

    [bold]prepare[/] ./raw -> data/cityscapes -> [bold]train[/] -> [bold]evaluate[/] ->
    [bold]predict[/] / [bold]serve[/].  Set CITYSEG_DEBUG=1 to see tracebacks.
    """


@app.command()
def prepare(
    raw: Path = typer.Argument(
        ...,
        metavar="SOURCE",
        help="Cityscapes: the folder holding gtFine_trainvaltest.zip and "
        "leftImg8bit_trainvaltest.zip (or their extracted folders). Other formats: the "
        "folder holding your images (and, if not given with --annotations, the annotations).",
    ),
    format: DataFormat = typer.Option(
        DataFormat.cityscapes, "--format", "-f", help="What SOURCE holds (docs/datasets.md)."
    ),
    annotations: Path | None = typer.Option(
        None,
        help="The VIA CSV/JSON, COCO JSON, LabelMe folder or mask folder (default: found in "
        "SOURCE).",
        show_default=False,
    ),
    output: Path | None = typer.Option(
        None,
        "--output",
        "-o",
        help="Dataset folder to write (default: data/cityscapes, or data/<SOURCE name>).",
        show_default=False,
    ),
    classes: str | None = typer.Option(
        None,
        help="Class names in id order (1, 2, ...; 0 is the background), as a comma list or a "
        "file of one name per line (default: in order of first appearance).",
        show_default=False,
    ),
    ignore: str | None = typer.Option(
        None, help="A class to leave out of loss and metrics (painted 255).", show_default=False
    ),
    palette: Path | None = typer.Option(
        None,
        help="JSON {class: \\[r, g, b]}: colours for the classes (and, with --format masks, "
        "the colours colour masks use).",
        show_default=False,
    ),
    background: Background = typer.Option(
        OWN.background, help="Score class 0 like the others, or treat it as void."
    ),
    class_attr: str | None = typer.Option(
        None,
        help="VIA: the region attribute holding the class (default: the only one, or one "
        "named class, label or name).",
        show_default=False,
    ),
    val_ratio: float = typer.Option(
        PREPARE.val_ratio,
        min=0.0,
        max=0.9,
        help="Share of images moved to val (Cityscapes: of the original train, see --split-by).",
    ),
    test_ratio: float | None = typer.Option(
        None,
        min=0.0,
        max=0.9,
        help=f"Own data: share of images for test (default {OWN.test_ratio}). Cityscapes' "
        "test is its original val.",
        show_default=False,
    ),
    group_by: str | None = typer.Option(
        None,
        help="Own data: a regex on file names; images whose match (or first group) is the "
        "same stay in one split, like Cityscapes cities.",
        show_default=False,
    ),
    labels: LabelSource = typer.Option(
        PREPARE.labels,
        help="Cityscapes: read *_labelIds.png, or make labelIds from *_polygons.json exactly "
        "as cityscapesScripts' json2labelImg does (for edited polygons).",
    ),
    gt: GroundTruth = typer.Option(
        PREPARE.annotations,
        "--gt",
        help="Cityscapes: fine annotations (gtFine_trainvaltest.zip) or coarse (gtCoarse.zip).",
    ),
    split_by: SplitBy = typer.Option(
        PREPARE.split_by,
        help="Cityscapes: move whole cities to val (no street on both sides), or single "
        "images (for a set of one city).",
    ),
    seed: int = typer.Option(PREPARE.seed, help="Seed for the split and sampling."),
    limit: int | None = typer.Option(
        PREPARE.limit,
        min=1,
        help="Cityscapes: keep at most N images per split (sampled reproducibly).",
    ),
    fraction: float | None = typer.Option(
        PREPARE.fraction, min=0.0, max=1.0, help="Cityscapes: keep this fraction of each split."
    ),
    verify: bool = typer.Option(
        PREPARE.verify, "--verify/--no-verify", help="Cityscapes: check the zips' checksums."
    ),
    size: list[str] | None = typer.Option(
        None,
        "--size",
        help="Also store copies at this training HEIGHTxWIDTH (repeatable or a comma list): "
        "`train --size` at that size then skips decoding full-size PNGs.",
        show_default=False,
    ),
    workers: int | None = typer.Option(None, min=1, help="Parallel workers (default: CPUs)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Turn Cityscapes zips, or your own annotated images, into a train-ready dataset."""
    from cityseg.dataset.sized import parse_sizes

    sizes = parse_sizes(size or [])
    if format is DataFormat.cityscapes:
        if any(v is not None for v in (classes, ignore, palette, class_attr, test_ratio, group_by)):
            raise UsageError(
                "--classes, --ignore, --palette, --class-attr, --test-ratio and --group-by "
                "are for own data (--format via|labelme|coco|masks)"
            )
        from cityseg.dataset.prepare import prepare_dataset

        output = output or PREPARE.output
        report = prepare_dataset(
            raw,
            output,
            val_ratio=val_ratio,
            split_by=split_by,
            labels=labels,
            annotations=gt,
            seed=seed,
            limit=limit,
            fraction=fraction,
            verify=verify,
            sizes=sizes,
            workers=workers,
            show_progress=not quiet,
            log=_note,
        )
    else:
        cityscapes_only = (split_by, labels, gt) != (
            PREPARE.split_by,
            PREPARE.labels,
            PREPARE.annotations,
        )
        if limit is not None or fraction is not None or cityscapes_only:
            raise UsageError(
                "--limit, --fraction, --split-by, --labels and --gt are for --format cityscapes"
            )
        from cityseg.dataset.own.classes import parse_class_list
        from cityseg.dataset.own.options import OwnDataOptions
        from cityseg.dataset.own.prepare import prepare_own

        options = OwnDataOptions(
            format=format,
            annotations=annotations,
            class_attr=class_attr,
            classes=None if classes is None else parse_class_list(classes),
            ignore=ignore,
            palette=palette,
            background=background,
            val_ratio=val_ratio,
            test_ratio=OWN.test_ratio if test_ratio is None else test_ratio,
            seed=seed,
            group_by=group_by,
        )
        output = output or Path("data") / (raw.resolve().name or "dataset")
        report = prepare_own(
            raw, output, options, sizes=sizes, workers=workers, show_progress=not quiet, log=_note
        )
    _print_prepared(report, output, "cities" if format is DataFormat.cityscapes else "groups")


def _print_prepared(report: PrepareReport, output: Path, grouping: str) -> None:
    if report.up_to_date:
        out.print(f"[green]{escape(str(output))} is already prepared[/]; nothing to do.")
        return
    table = Table(title=f"Prepared {escape(str(output))}")
    for column in ("split", grouping, "images", "disk"):
        table.add_column(column, justify="left" if column == "split" else "right")
    for row in report.splits:
        table.add_row(row.split, str(row.cities), str(row.images), _human_bytes(row.bytes))
    out.print(table)
    for name, schemes in report.sized.items():
        where = escape(str(output / "sized" / name))
        out.print(f"training-size copies {name} ({', '.join(schemes)} masks): {where}")
    out.print(f"manifest: {escape(str(output / 'manifest.json'))}")


@app.command()
def remap(
    inputs: list[Path] = typer.Argument(
        ...,
        help="labelIds PNGs, folders (searched recursively) or a prepared dataset.",
        show_default=False,
        metavar="INPUT...",
    ),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Output folder, or a .png file for a single input."
    ),
    scheme: str = typer.Option(
        REMAP.scheme, help="categories (8 classes), trainids (19 + 255 ignore), or a JSON file."
    ),
    colour: bool = typer.Option(
        REMAP.colour,
        "--colour/--no-colour",
        "--color/--no-color",
        help="Also write the palette PNG (<name>_colour.png).",
    ),
    unknown: UnknownPolicy = typer.Option(
        REMAP.unknown, help="An id the scheme does not map: fail, or write void."
    ),
    glob: str = typer.Option(REMAP.glob, help="File pattern when an input is a folder."),
    workers: int | None = typer.Option(None, min=1, help="Parallel workers (default: CPUs)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Map labelIds PNGs to class-id PNGs (exact, via a 256-entry lookup table)."""
    from cityseg.dataset.remap import remap_paths
    from cityseg.dataset.schemes import get_scheme

    report = remap_paths(
        inputs,
        output,
        get_scheme(scheme),
        pattern=glob,
        colour=colour,
        unknown=unknown,
        workers=workers,
        show_progress=not quiet,
    )
    where = f"{report.output} (manifest updated)" if report.dataset else str(report.output)
    out.print(f"[green]Remapped {report.written} mask(s)[/] to {report.scheme}: {escape(where)}")


@app.command()
def demo(
    directory: Path = typer.Argument(SYNTHETIC.output, help="Where the demo writes everything."),
    format: DemoFormat = typer.Option(
        DemoFormat.cityscapes,
        "--format",
        "-f",
        help="Synthetic Cityscapes zips, or a synthetic two-class VIA project (own data).",
    ),
    data_only: bool = typer.Option(
        False, "--data-only", help="Only write the synthetic raw data, then stop."
    ),
    images_per_city: int | None = typer.Option(
        None,
        "--images-per-city",
        "--images",
        min=1,
        help=f"Cityscapes: images per city ({SYNTHETIC.images_per_city}); VIA: photos (64).",
        show_default=False,
    ),
    height: int | None = typer.Option(
        None, min=16, help="Image height (cityscapes 128, via 96).", show_default=False
    ),
    width: int | None = typer.Option(
        None, min=16, help="Image width (cityscapes 256, via 128).", show_default=False
    ),
    seed: int = typer.Option(SYNTHETIC.seed),
    epochs: int | None = typer.Option(
        None,
        min=1,
        help="Training epochs (cityscapes 6, via 12; ~5-10 s each on a CPU).",
        show_default=False,
    ),
    no_train: bool = typer.Option(False, "--no-train", help="Stop after prepare."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Run the pipeline on generated data (no download needed)."""
    from cityseg.demo import DemoSettings, run_demo

    settings = DemoSettings(
        format=format,
        images=images_per_city,
        height=height,
        width=width,
        seed=seed,
        epochs=epochs,
        data_only=data_only,
        train_model=not no_train,
        show_progress=not quiet,
    )
    run_demo(directory, settings, log=_note)


@app.command()
def train(
    data: Path = typer.Option(TRAIN.data, help="Prepared dataset (from `cityseg prepare`)."),
    arch: str = typer.Option(TRAIN.arch, help="unet, fpn, linknet, pspnet or unet-scratch."),
    backbone: str = typer.Option(TRAIN.backbone, help="Any segmentation-models backbone."),
    weights: str = typer.Option(
        TRAIN.weights, help="Encoder weights: imagenet (needs internet once), none, or a file."
    ),
    scheme: str = typer.Option(
        TRAIN.scheme, help="Mask scheme prepared in the dataset (auto: the one it was made with)."
    ),
    size: str = typer.Option(f"{TRAIN.height}x{TRAIN.width}", help="Input HEIGHTxWIDTH."),
    epochs: int = typer.Option(TRAIN.epochs, min=1),
    batch: int = typer.Option(TRAIN.batch, min=1, help="Global batch size (all devices)."),
    lr: float = typer.Option(TRAIN.lr, min=0.0, help="Peak learning rate."),
    optimizer: Optimizer = typer.Option(TRAIN.optimizer),
    schedule: Schedule = typer.Option(TRAIN.schedule, help="Learning-rate schedule."),
    patience: int = typer.Option(
        TRAIN.patience, min=0, help="Early-stopping patience in epochs (0: off)."
    ),
    loss: str = typer.Option(
        TRAIN.loss, help="cce, dice, weighted-dice, focal, focal-dice or jaccard."
    ),
    aug: str = typer.Option(TRAIN.aug, help="Augmentation preset: none, soft or hard."),
    cache: str | None = typer.Option(
        TRAIN.cache, help="Cache decoded data: 'memory' or a file prefix (small sets)."
    ),
    seed: int = typer.Option(TRAIN.seed),
    precision: Precision = typer.Option(TRAIN.precision, help="auto: mixed on a GPU."),
    strategy: Strategy = typer.Option(
        TRAIN.strategy,
        help="Distribution: auto = multiworker when TF_CONFIG names several workers, "
        "else mirrored over several GPUs, else one device.",
    ),
    worker_timeout: float = typer.Option(
        TRAIN.worker_timeout,
        min=1.0,
        help="Seconds a multi-worker run waits for every TF_CONFIG worker to join.",
    ),
    project: Path = typer.Option(TRAIN.project, help="Folder holding the runs."),
    name: str | None = typer.Option(TRAIN.name, help="Run name (default: the arch)."),
    base_filters: int = typer.Option(
        TRAIN.base_filters, min=4, help="unet-scratch width (64 = the classic U-Net)."
    ),
    steps_per_epoch: int | None = typer.Option(
        TRAIN.steps_per_epoch, min=1, help="Cap training steps per epoch (quick runs)."
    ),
    resume: Path | None = typer.Option(
        None, help="Continue the run in this folder from its last/ checkpoint."
    ),
    list_choices: bool = typer.Option(
        False, "--list", help="List architectures, backbones, losses and presets, then exit."
    ),
) -> None:
    """Train a segmentation model; writes runs/train/<name>/ with best/ and last/ bundles."""
    if list_choices:
        from cityseg.training.choices import describe_choices

        for line in describe_choices():
            out.print(line, highlight=False)
        return
    from cityseg.runs import parse_size
    from cityseg.training.train import train as train_run

    height, width = parse_size(size)
    config = TrainConfig(
        data=data,
        scheme=scheme,
        arch=arch,
        backbone=backbone,
        weights=weights,
        base_filters=base_filters,
        height=height,
        width=width,
        epochs=epochs,
        batch=batch,
        lr=lr,
        optimizer=optimizer,
        schedule=schedule,
        patience=patience,
        loss=loss,
        aug=aug,
        cache=cache,
        seed=seed,
        precision=precision,
        strategy=strategy,
        project=project,
        name=name,
        steps_per_epoch=steps_per_epoch,
        worker_timeout=worker_timeout,
    )
    report = train_run(config, resume=resume, log=_note)
    best = "-" if report.best_score is None else f"{report.best_score:.4f}"
    if not report.wrote_run:
        out.print(f"Trained {report.epochs_completed} epoch(s); the chief wrote the run folder.")
        return
    out.print(
        f"[green]Trained {report.epochs_completed} epoch(s)[/]; best {report.monitor} {best} "
        f"at epoch {report.best_epoch}. Bundles: {escape(str(report.run_dir / 'best'))}, "
        f"{escape(str(report.run_dir / 'last'))}"
    )


DATA_HELP = f"Prepared dataset (default: the one the model's run trained on, else {TRAIN.data})."


@app.command()
def evaluate(
    model: Path | None = typer.Option(None, help=MODEL_HELP),
    data: Path | None = typer.Option(None, help=DATA_HELP, show_default=False),
    split: str = typer.Option("test", help="train, val or test."),
    predictions: Path | None = typer.Option(
        None, help="Score a folder of class-id PNGs named by key instead of a model."
    ),
    write_labelids: Path | None = typer.Option(
        None, help="Also write predictions as official {key}_pred_labelIds.png files here."
    ),
    project: Path = typer.Option(Path("runs/eval"), help="Folder holding evaluation runs."),
    name: str | None = typer.Option(None, help="Run name (default: the training run's)."),
    batch: int = typer.Option(4, min=1, help="Images per model call."),
    tta: TTA = typer.Option(TTA.none, help="Test-time augmentation."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Score a model (or a folder of predictions), including the official Cityscapes IoU."""
    from cityseg.evaluation.evaluate import evaluate as evaluate_run
    from cityseg.runs import resolve_data

    model = _evaluated_model(model, predictions)
    report = evaluate_run(
        model=model,
        data=resolve_data(data, model, _note),
        split=split,
        predictions=predictions,
        write_labelids=write_labelids,
        project=project,
        name=name,
        batch=batch,
        tta_flip=tta is TTA.flip,
        show_progress=not quiet,
        log=_note,
    )
    metrics = report.metrics
    scores = metrics["scores"]
    table = Table(title=f"{metrics['split']} split, {metrics['images']} images")
    for column in ("class", "IoU", "dice", "precision", "recall"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for class_name, values in scores["per_class"].items():
        table.add_row(
            class_name, *(_score(values.get(k)) for k in ("iou", "dice", "precision", "recall"))
        )
    out.print(table)
    count = f"({len(scores['per_class'])} classes)"
    out.print(f"mean IoU {count:<19}{_score(scores.get('mean_iou'))}")
    if scores.get("void_classes"):
        out.print(f"mean IoU (non-void)         {_score(scores.get('mean_iou_non_void'))}")
    out.print(f"pixel accuracy              {_score(scores.get('pixel_accuracy'))}")
    official = metrics.get("official", {})
    if "mean_iou" in official:
        out.print(f"official Cityscapes category IoU  [bold]{_score(official['mean_iou'])}[/]")
    out.print(f"written: {escape(str(report.out_dir))}")


def _evaluated_model(model: Path | None, predictions: Path | None) -> Path | None:
    """The model evaluate will run, resolved here so its run's dataset can be the default;
    none when scoring --predictions, which must not pay for loading TensorFlow."""
    if predictions is not None:
        return model
    from cityseg.inference.predictor import resolve_model

    return resolve_model(model, TRAIN.project, _note)


def _score(value: object) -> str:
    return "-" if value is None else f"{float(str(value)):.4f}"


@app.command()
def predict(
    inputs: list[str] = typer.Argument(
        ...,
        help="PNG/JPEG files or glob patterns (taken as given), or folders: searched "
        "recursively for photos, skipping label/mask PNGs (named *_labelIds, *_color, "
        "*_gtFine_*..., or grayscale/palette), a prepared dataset's labelIds/ and masks/, "
        "cityseg predict outputs and hidden files.",
        show_default=False,
        metavar="INPUT...",
    ),
    output: str = typer.Option(
        ...,
        "--output",
        "-o",
        help="Output folder, or a .png/.jpg file for exactly one input image.",
        metavar="PATH",
    ),
    model: Path | None = typer.Option(None, help=MODEL_HELP),
    project: Path = typer.Option(TRAIN.project, help="Where to look for the newest run."),
    format: OutputFormat = typer.Option(OutputFormat.colour, help="What to write."),
    alpha: float = typer.Option(0.5, help="Overlay opacity of the mask, 0..1."),
    legend: bool = typer.Option(False, "--legend", help="Draw the class legend."),
    tta: TTA = typer.Option(TTA.none, help="Test-time augmentation."),
    batch: int = typer.Option(4, min=1, help="Images per model call."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Write colour masks (or ids, overlays, labelIds) for images, at each image's size."""
    from cityseg.inference.predict import predict_paths

    report = predict_paths(
        inputs,
        output,
        model=model,
        project=project,
        format=format,
        alpha=alpha,
        legend=legend,
        tta_flip=tta is TTA.flip,
        batch=batch,
        show_progress=not quiet,
        log=_note,
    )
    out.print(f"[green]Wrote {len(report.written)} {format.value} mask(s)[/] to {escape(output)}")
    if report.failed:
        raise CitysegError(
            f"{len(report.failed)} input(s) could not be read (see the "
            "warnings above); the others were written"
        )


@app.command()
def serve(
    model: Path | None = typer.Option(None, help=MODEL_HELP),
    data: Path | None = typer.Option(
        None,
        help="Prepared dataset to browse (default: the model's training run's, else "
        f"{TRAIN.data}, if prepared; else none).",
        show_default=False,
    ),
    host: str = typer.Option(SERVE.host, help="Bind address; 0.0.0.0 exposes it."),
    port: int = typer.Option(SERVE.port, min=1, max=65535),
    workers: int = typer.Option(1, min=1, help="Server processes (each loads the model)."),
    project: Path = typer.Option(TRAIN.project, help="Where to look for the newest run."),
    max_body_mb: float = typer.Option(
        SERVE.max_body_bytes / 1024**2, min=0.001, help="Largest request body, MB."
    ),
    max_pixels: int = typer.Option(SERVE.max_pixels, min=1, help="Largest image, pixels."),
    max_queue: int = typer.Option(
        SERVE.max_queue, min=0, help="Inference requests queued before 503."
    ),
) -> None:
    """Serve the prediction API (OpenAPI at /docs) and a web page to browse the dataset."""
    import uvicorn

    from cityseg.inference.predictor import resolve_model
    from cityseg.runs import find_data
    from cityseg.serve.app import SETTINGS_ENV, ServeSettings, create_app, settings_to_env

    model = resolve_model(model, project, _note)
    settings = ServeSettings(
        model=model,
        data=find_data(data, model, _note),
        project=project,
        max_body_bytes=int(max_body_mb * 1024 * 1024),
        max_pixels=max_pixels,
        max_queue=max_queue,
    )
    app_instance = create_app(settings)  # checks the model and data before binding
    _note(f"serving on http://{host}:{port} (API docs at /docs); Ctrl-C stops")
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


@app.command()
def export(
    formats: list[ExportFormat] = typer.Option(
        ..., "--format", "-f", help="What to export to; repeat for several."
    ),
    model: Path | None = typer.Option(
        None, help="Keras bundle folder (default: the newest run's best/)."
    ),
    output: Path | None = typer.Option(
        None,
        "--output",
        "-o",
        help="Export folder (for several formats: their parent; default: the run's export/).",
    ),
    data: Path | None = typer.Option(
        None, help=f"{DATA_HELP} For calibration and parity.", show_default=False
    ),
    size: str | None = typer.Option(None, help="Input HEIGHTxWIDTH (default: the bundle's)."),
    calib: int = typer.Option(
        100, min=1, help="Training images to calibrate int8 on (tflite-int8)."
    ),
    parity: int = typer.Option(
        20, min=0, help="Validation images for the parity report; 0 skips it."
    ),
    project: Path = typer.Option(TRAIN.project, help="Where to look for the newest run."),
) -> None:
    """Export a bundle to SavedModel, TFLite (fp32/fp16/int8) or ONNX, with a parity report."""
    from cityseg.deploy.export import EXPORT_NAME, export_model
    from cityseg.inference.predictor import resolve_model
    from cityseg.runs import parse_size, resolve_data

    bundle = resolve_model(model, project, _note)
    reports = export_model(
        bundle,
        [f.value for f in formats],
        output,
        data=resolve_data(data, bundle, _note),
        size=parse_size(size) if size else None,
        calib=calib,
        parity=parity,
        log=_note,
    )
    for report in reports:
        out.print(
            f"[green]Exported {report.format}[/] ({_human_bytes(report.bytes)}, "
            f"{report.record['size_ratio']:.2f}x the Keras weights) to "
            f"{escape(str(report.folder))}"
        )
    results = [(r.format, r.record["parity"]) for r in reports if r.record["parity"]]
    if not results:
        return
    first = results[0][1]
    table = Table(
        title=f"parity on {first['images']} val images: Keras mIoU "
        f"{first['miou']['keras']:.4f}, p50 {first['latency_ms']['keras']['p50']:.1f} ms"
    )
    for column in ("format", "agreement", "mIoU", "drop", "p50 ms", "speed-up", "parity"):
        table.add_column(column, justify="left" if column == "format" else "right")
    for fmt, result in results:
        table.add_row(
            fmt,
            f"{result['pixel_agreement']:.4f}",
            f"{result['miou']['export']:.4f}",
            f"{result['miou']['drop']:+.4f}",
            f"{result['latency_ms']['export']['p50']:.1f}",
            f"{result['speedup_p50']:.2f}x",
            "[green]passed[/]" if result["passed"] else "[yellow]FAILED[/]",
        )
    out.print(table)
    needs = "; ".join(
        f"{fmt} agreement >= {r['tolerance']['min_pixel_agreement']}, drop <= "
        f"{r['tolerance']['max_miou_drop']}"
        for fmt, r in results
    )
    _note(f"parity needs: {needs}. The full reports: each folder's {EXPORT_NAME}")


@app.command()
def benchmark(
    model: list[Path] | None = typer.Option(
        None, help="Models to time, repeatable (default: the newest run's best/)."
    ),
    size: str | None = typer.Option(None, help="Input HEIGHTxWIDTH (default: the model's)."),
    runs: int = typer.Option(30, min=1, help="Timed calls per runtime."),
    batch: int = typer.Option(1, min=1, help="Images per call."),
    exports: bool = typer.Option(True, help="Also time each bundle's exports (run/export/*)."),
    json_out: Path | None = typer.Option(
        None, "--json", help="Write the results as JSON to this file; - prints only the JSON."
    ),
    project: Path = typer.Option(TRAIN.project, help="Where to look for the newest run."),
) -> None:
    """Time each runtime (Keras, TFLite, ONNX) on this machine; FLOPs and parameters."""
    import json

    from cityseg.deploy.benchmark import benchmark_models
    from cityseg.fsutil import atomic_write_json
    from cityseg.inference.predictor import newest_bundle
    from cityseg.runs import parse_size

    models = list(model or [newest_bundle(project)])
    result = benchmark_models(
        models,
        size=parse_size(size) if size else None,
        runs=runs,
        batch=batch,
        include_exports=exports,
        log=_note,
    )
    if json_out == Path("-"):
        out.print_json(json.dumps(result))
        return
    height, width = result["input_size"]
    table = Table(
        title=f"{height}x{width}, batch {batch}, {runs} runs, {result['threads']} CPU threads"
    )
    for column in ("format", "size", "p50 ms", "p95 ms", "images/s", "model"):
        table.add_column(column, justify="left" if column in ("format", "model") else "right")
    for row in result["results"]:
        table.add_row(
            row["format"],
            _human_bytes(row["bytes"]),
            f"{row['latency_ms']['p50']:.1f}",
            f"{row['latency_ms']['p95']:.1f}",
            f"{row['images_per_second']:.1f}",
            escape(row["model"]),
        )
    out.print(table)
    if result["keras"]:
        compute = result["keras"]
        out.print(f"Keras model: {compute['parameters']:,} parameters, {compute['gflops']} GFLOPs")
    if json_out is not None:
        atomic_write_json(json_out, result)
        _note(f"written: {json_out}")


def _note(message: str) -> None:
    """Library messages quote user names (files, classes): never read them as markup."""
    err.print(escape(message), highlight=False)


def _human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code: 1 for a user error, 2 for a usage error."""
    debug = os.environ.get("CITYSEG_DEBUG", "") not in ("", "0")
    try:
        app(args=argv, prog_name="cityseg")
    except SystemExit as exc:  # typer's standalone mode ends every run this way
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except KeyboardInterrupt:
        err.print("[yellow]Interrupted.[/]")
        return 130
    except CitysegError as exc:
        if debug:
            raise
        err.print(f"[bold red]Error:[/] {escape(str(exc))}", highlight=False)
        return exc.exit_code
    except OSError as exc:
        if debug:
            raise
        where = f": {exc.filename}" if exc.filename else ""
        err.print(f"[bold red]Error:[/] {escape(exc.strerror or str(exc))}{escape(where)}")
        return 1
    return 0


def main() -> None:
    sys.exit(run())
