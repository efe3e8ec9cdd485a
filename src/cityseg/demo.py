"""`cityseg demo`: the whole pipeline on generated Cityscapes-format data.

New users can see every step work, and see what each step writes, before they download
11 GB of Cityscapes. The data comes from `cityseg.synthetic`, so the demo needs no
network and runs on a laptop CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from cityseg.config import TrainConfig
from cityseg.prepare import prepare_dataset
from cityseg.synthetic import SyntheticSpec, write_raw_dataset

Log = Callable[[str], None]


def run_demo(
    directory: Path,
    *,
    data_only: bool = False,
    images_per_city: int = 3,
    height: int = 128,
    width: int = 256,
    seed: int = 0,
    epochs: int = 6,
    train_model: bool = True,
    show_progress: bool = True,
    log: Log = print,
) -> None:
    raw = directory / "raw"
    spec = SyntheticSpec(height=height, width=width, images_per_city=images_per_city, seed=seed)
    written = write_raw_dataset(raw, spec)
    count = sum(len(keys) for keys in written.keys.values())
    steps = 5 if train_model else 2
    log(f"[1/{steps}] synthetic raw zips ({count} scenes, {height}x{width}): {raw}")
    if data_only:
        log(f"next: cityseg prepare {raw} -o {directory / 'data' / 'cityscapes'}")
        return
    data = directory / "data" / "cityscapes"
    prepared = prepare_dataset(
        raw, data, seed=seed, verify=False, show_progress=show_progress, log=log
    )
    sizes = ", ".join(f"{row.split} {row.images}" for row in prepared.splits)
    log(f"[2/{steps}] prepared dataset ({sizes}): {data}")
    if not train_model:
        return
    from cityseg.train import train

    config = TrainConfig(
        data=data,
        arch="fpn",
        backbone="efficientnetb0",
        weights="none",
        height=height,
        width=width,
        epochs=epochs,
        batch=4,
        lr=3e-3,
        aug="soft",
        patience=0,
        seed=seed,
        project=directory / "runs" / "train",
        name="demo",
    )
    trained = train(config, log=log)
    score = "-" if trained.best_score is None else f"{trained.best_score:.3f}"
    log(
        f"[3/5] trained fpn-efficientnetb0 for {trained.epochs_completed} epochs, best "
        f"{trained.monitor} {score}: {trained.run_dir / 'best'}"
    )
    from cityseg.evaluate import evaluate
    from cityseg.manifest import read_manifest
    from cityseg.predict import predict_paths

    bundle = trained.run_dir / "best"
    scored = evaluate(
        model=bundle,
        data=data,
        split="test",
        project=directory / "runs" / "eval",
        show_progress=show_progress,
    )
    official = scored.metrics.get("official", {}).get("mean_iou")
    log(
        f"[4/5] evaluated on the test split: mIoU {scored.metrics['scores']['mean_iou']:.3f}, "
        f"official category IoU {official if official is None else f'{official:.3f}'}: "
        f"{scored.out_dir}"
    )
    test_images = [data / entry["image"] for entry in read_manifest(data)["splits"]["test"]]
    masks = directory / "predictions"
    predicted = predict_paths(
        test_images, masks, model=bundle, legend=True, show_progress=show_progress
    )
    log(f"[5/5] colour masks for {len(predicted.written)} test images: {masks}")
    log(f"next: cityseg predict YOUR_IMAGE.png -o mask.png --model {bundle}")
