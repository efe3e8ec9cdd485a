"""`cityseg demo`: the whole pipeline on generated data, Cityscapes-format or a VIA project.

New users can see every step work, and see what each step writes, before they download
11 GB of Cityscapes or annotate photos of their own. The data comes from
`cityseg.dataset.synthetic` (official zips) or `cityseg.dataset.synthetic_via` (JPEGs plus a VIA CSV
export), so the demo needs no network and runs on a laptop CPU.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from cityseg import logs
from cityseg.config import DataFormat, PredictConfig, TrainConfig

logger = logging.getLogger(__name__)
VIA_IMAGES = 64
EPOCHS = {"cityscapes": 6, "via": 12}


class DemoFormat(str, Enum):
    cityscapes = "cityscapes"
    """Synthetic official zips, prepared into the 8 Cityscapes categories."""
    via = "via"
    """A synthetic two-class VIA project (photos and a CSV export), prepared as own data."""


@dataclass(frozen=True)
class DemoSettings:
    format: DemoFormat = DemoFormat.cityscapes
    images: int | None = None
    """Cityscapes: images per city (3); VIA: photos in the project (64)."""
    height: int | None = None
    width: int | None = None
    seed: int = 0
    epochs: int | None = None
    """6 for Cityscapes; 12 for VIA, whose 44 training photos make 11 steps an epoch."""
    data_only: bool = False
    train_model: bool = True
    show_progress: bool = True


def run_demo(directory: Path, settings: DemoSettings = DemoSettings()) -> None:
    steps = 5 if settings.train_model else 2
    make_data = _via_data if settings.format is DemoFormat.via else _cityscapes_data
    found = make_data(directory, settings, steps)
    if found is None or not settings.train_model:
        return
    data, (height, width) = found
    _train_evaluate_predict(directory, data, height, width, settings)


def _cityscapes_data(
    directory: Path, settings: DemoSettings, steps: int
) -> tuple[Path, tuple[int, int]] | None:
    from cityseg.dataset.prepare import prepare_dataset
    from cityseg.dataset.synthetic import SyntheticSpec, write_raw_dataset

    raw = directory / "raw"
    spec = SyntheticSpec(seed=settings.seed)
    spec = SyntheticSpec(
        height=settings.height or spec.height,
        width=settings.width or spec.width,
        images_per_city=settings.images or spec.images_per_city,
        seed=settings.seed,
    )
    written = write_raw_dataset(raw, spec)
    count = sum(len(keys) for keys in written.keys.values())
    logger.info(
        f"[1/{steps}] synthetic raw zips ({count} scenes, {spec.height}x{spec.width}): {raw}"
    )
    data = directory / "data" / "cityscapes"
    if settings.data_only:
        logger.info(f"next: cityseg prepare {raw} -o {data}")
        return None
    prepared = prepare_dataset(
        raw, data, seed=settings.seed, verify=False, show_progress=settings.show_progress
    )
    sizes = ", ".join(f"{row.split} {row.images}" for row in prepared.splits)
    logger.info(f"[2/{steps}] prepared dataset ({sizes}): {data}")
    return data, (spec.height, spec.width)


def _via_data(
    directory: Path, settings: DemoSettings, steps: int
) -> tuple[Path, tuple[int, int]] | None:
    from cityseg.dataset.own.options import OwnDataOptions
    from cityseg.dataset.own.prepare import prepare_own
    from cityseg.dataset.synthetic_via import ViaSpec, write_via_project

    spec = ViaSpec(seed=settings.seed)
    spec = ViaSpec(
        images=settings.images or VIA_IMAGES,
        height=settings.height or spec.height,
        width=settings.width or spec.width,
        seed=settings.seed,
    )
    project = write_via_project(directory / "photos", spec)
    logger.info(
        f"[1/{steps}] a VIA project ({spec.images} photos, {spec.height}x{spec.width}, classes "
        f"{', '.join(spec.classes)}) and its CSV export: {project.csv}"
    )
    data = directory / "data" / "photos"
    if settings.data_only:
        logger.info(f"next: cityseg prepare {project.folder} --format via -o {data}")
        return None
    options = OwnDataOptions(format=DataFormat.via, annotations=project.csv, seed=settings.seed)
    prepared = prepare_own(project.folder, data, options, show_progress=settings.show_progress)
    sizes = ", ".join(f"{row.split} {row.images}" for row in prepared.splits)
    logger.info(f"[2/{steps}] prepared dataset ({sizes}): {data}")
    return data, _trainable(spec.height, spec.width)


def _trainable(height: int, width: int) -> tuple[int, int]:
    """The photo size rounded down to FPN's stride of 32 (training resizes anyway)."""
    return max(32, height // 32 * 32), max(32, width // 32 * 32)


def _train_evaluate_predict(
    directory: Path, data: Path, height: int, width: int, settings: DemoSettings
) -> None:
    from cityseg.dataset.manifest import read_manifest
    from cityseg.evaluation.evaluate import evaluate
    from cityseg.inference.predict import predict_paths
    from cityseg.training.train import train

    config = TrainConfig(
        data=data,
        arch="fpn",
        backbone="efficientnetb0",
        weights="none",
        height=height,
        width=width,
        epochs=settings.epochs or EPOCHS[settings.format.value],
        batch=4,
        lr=3e-3,
        aug="soft",
        patience=0,
        seed=settings.seed,
        project=directory / "runs" / "train",
        name="demo",
    )
    trained = train(config)
    score = "-" if trained.best_score is None else f"{trained.best_score:.3f}"
    bundle = trained.run_dir / "best"
    logger.info(
        f"[3/5] trained fpn-efficientnetb0 for {trained.epochs_completed} epochs, best "
        f"{trained.monitor} {score}: {bundle}"
    )
    with logs.only_warnings():  # each step says one line of its own, below
        scored = evaluate(
            model=bundle,
            data=data,
            split="test",
            project=directory / "runs" / "eval",
            show_progress=settings.show_progress,
        )
    line = f"[4/5] evaluated on the test split: mIoU {_score(scored.scores.mean_iou)}"
    if scored.cityscapes:
        official = None if scored.official is None else scored.official.mean_iou
        line += f", official category IoU {_score(official)}"
    logger.info(f"{line}: {scored.out_dir}")
    test_images = [data / entry["image"] for entry in read_manifest(data)["splits"]["test"]]
    masks = directory / "predictions"
    with logs.only_warnings():
        predicted = predict_paths(
            test_images,
            masks,
            model=bundle,
            config=PredictConfig(legend=True),
            show_progress=settings.show_progress,
        )
    logger.info(f"[5/5] colour masks for {len(predicted.written)} test images: {masks}")
    logger.info(f"next: cityseg predict YOUR_IMAGE.png -o mask.png --model {bundle}")


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
