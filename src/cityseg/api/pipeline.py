"""`cityseg.demo`: the whole pipeline on generated data, as `cityseg demo` runs it.

The demo is how a new user sees every step work before downloading 11 GB of Cityscapes
or annotating photos; from Python it is also the quickest way to a real dataset and a
trained run to try the rest of the API on (`cityseg.Run(directory / "runs/train/demo")`).
"""

from __future__ import annotations

from pathlib import Path

from cityseg.api._common import PathLike
from cityseg.config import SYNTHETIC
from cityseg.demo_pipeline import DemoFormat, DemoSettings, run_demo
from cityseg.logs import api_messages


def demo(
    directory: PathLike = SYNTHETIC.output,
    *,
    format: str | DemoFormat = DemoFormat.cityscapes,
    images: int | None = None,
    height: int | None = None,
    width: int | None = None,
    seed: int = SYNTHETIC.seed,
    epochs: int | None = None,
    data_only: bool = False,
    train: bool = True,
    verbose: bool = True,
) -> None:
    """Write synthetic raw data into `directory`, prepare it, then (unless `train=False`)
    train a small FPN, evaluate it and predict the test images, as `cityseg demo`.

    `format="via"` makes a two-class VIA project (own data) instead of Cityscapes zips;
    `images` is images per city (Cityscapes) or photos (VIA); `data_only` stops after
    writing the raw data. Sizes and epochs default as the command's help says.
    """
    settings = DemoSettings(
        format=DemoFormat(format),
        images=images,
        height=height,
        width=width,
        seed=seed,
        epochs=epochs,
        data_only=data_only,
        train_model=train,
        show_progress=verbose,
    )
    with api_messages(verbose):
        run_demo(Path(directory), settings)
