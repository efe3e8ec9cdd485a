"""The convergence check: does each architecture learn the demo's scenes from scratch?

The data and the recipe are `cityseg demo --images-per-city 8 --epochs 30`'s: synthetic
Cityscapes scenes at 128x256, prepared with the demo's seed; random initial weights, batch
4, lr 3e-3, soft augmentation, no early stopping. Only the architecture changes. A
square-only model (SegFormer) trains on random 128x128 crops and is scored with its
default sliding window. Each model is scored on the test split (the original val
images) with `cityseg evaluate`'s code; FPN-EfficientNetB0 reached test mIoU 0.888 on it.

    python benchmarks/convergence.py [--models fpn:efficientnetb0 lraspp segformer-b0]
        [--epochs 30] [--images-per-city 8] [--dir cityseg-convergence]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import cityseg
from cityseg.training.models import square_only

SIZE = (128, 256)


def train_and_score(name: str, data: Path, runs: Path, epochs: int) -> dict[str, Any]:
    arch, _, backbone = name.partition(":")
    extra: dict[str, Any] = {"backbone": backbone} if backbone else {}
    if square_only(arch):
        extra["crop"] = (SIZE[0], SIZE[0])
    start = time.perf_counter()
    run = cityseg.train(
        data=data, project=runs, name=name.replace(":", "-"), arch=arch, weights="none",
        size=SIZE, epochs=epochs, batch=4, lr=3e-3, aug="soft", patience=0, seed=0,
        verbose=False, **extra,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    report = run.best.evaluate(data, "test", project=runs.parent / "eval")
    assert run.report is not None
    return {
        "model": name,
        "val": run.report.best_score,
        "test": report.mean_iou,
        "minutes": seconds / 60,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["fpn:efficientnetb0"])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--images-per-city", type=int, default=8)
    parser.add_argument("--dir", type=Path, default=Path("cityseg-convergence"))
    args = parser.parse_args()

    data = args.dir / "data" / "cityscapes"
    if not (data / "manifest.json").is_file():
        cityseg.demo(args.dir, images=args.images_per_city, train=False, verbose=False)
    rows = []
    for name in args.models:
        rows.append(train_and_score(name, data, args.dir / "runs" / "train", args.epochs))
        row = rows[-1]
        print(f"done {name}: test mIoU {row['test']:.3f} in {row['minutes']:.1f} min", flush=True)
    print(f"\n{'model':<28} {'best val mIoU':>13} {'test mIoU':>9} {'train min':>9}")
    for row in rows:
        val = "-" if row["val"] is None else f"{row['val']:.3f}"
        print(f"{row['model']:<28} {val:>13} {row['test']:>9.3f} {row['minutes']:>9.1f}")
    print(f"\n{args.epochs} epochs, {args.images_per_city} images per city, size 128x256")


if __name__ == "__main__":
    main()
