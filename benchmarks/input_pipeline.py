"""Input speed: cityseg's tf.data pipeline against a one-image-at-a-time Python loop.

The baseline is what the earlier notebooks' `keras.utils.Sequence` did for every batch:
read each PNG pair with OpenCV, resize (bilinear image, nearest mask), apply the "soft"
albumentations preset, stack into a float32 batch, one image after another. cityseg's
`make_dataset(training=True, aug="soft")` does the same work with TensorFlow's threads
(parallel decode and augmentation, prefetch). Both read the same prepared synthetic
dataset of full-size Cityscapes-like PNGs in this process, are warmed once, and are then
timed over the same number of batches with nothing consuming them, so the figures are
the input side's ceiling; during training the model competes for the same cores.
Target: >= 2x on 2 cores.

Decoding a 2048x1024 PNG pair is ~85% of the CPU each image costs, and OpenCV and
TensorFlow decode equally fast, so streaming gains what parallelism gives (about the
number of idle cores) and no more; the `cache=memory` column, which decodes each image
once, shows where larger factors come from. CPU ms per image (all threads) is printed
beside each rate: unlike the rates, it barely moves when other programs share the cores.

    python benchmarks/input_pipeline.py [--scenes 40] [--source 1024x2048] [--batches 30]
"""

from __future__ import annotations

import argparse
import itertools
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np

from cityseg.data import (
    DataConfig,
    build_augmentation,
    make_dataset,
    resize_image,
    resize_mask,
    split_entries,
)
from cityseg.images import read_image, read_mask
from cityseg.prepare import prepare_dataset
from cityseg.synthetic import SyntheticSpec, write_raw_dataset

TRAIN_CITIES = ("aachen", "bochum", "bremen", "cologne", "darmstadt")


def size(text: str) -> tuple[int, int]:
    """HxW, as Cityscapes sizes are usually written the other way round (2048x1024)."""
    height, width = (int(part) for part in text.lower().split("x"))
    return height, width


def make_data(output: Path, raw: Path, scenes: int, source: tuple[int, int]) -> None:
    """A prepared dataset whose train split holds `scenes` (rounded up to whole cities)."""
    per_city = -(-scenes // len(TRAIN_CITIES))
    spec = SyntheticSpec(
        height=source[0], width=source[1], images_per_city=per_city, cities={"train": TRAIN_CITIES}
    )
    write_raw_dataset(raw, spec)
    prepare_dataset(raw, output, val_ratio=0.0, verify=False, show_progress=False)


def python_batches(root: Path, config: DataConfig) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The baseline: an endless, shuffled, sequential stream of augmented batches."""
    entries = split_entries(root, "train", config.scheme)
    augment = build_augmentation(config.aug, seed=config.seed)
    rng = np.random.default_rng(config.seed)
    while True:
        order = rng.permutation(len(entries))
        for start in range(0, len(order) - config.batch_size + 1, config.batch_size):
            images, masks = [], []
            for index in order[start : start + config.batch_size]:
                entry = entries[index]
                image = read_image(root / entry["image"])  # cv2.imdecode + BGR->RGB
                mask = read_mask(root / entry["mask"])
                image = resize_image(image, config.height, config.width)  # cv2.resize
                mask = resize_mask(mask, config.height, config.width)
                if augment is not None:
                    out = augment(image=image, mask=mask)
                    image, mask = out["image"], out["mask"]
                images.append(image)
                masks.append(mask)
            yield np.stack(images).astype(np.float32), np.stack(masks)


def rate(stream: Iterator[object], count: int, batch_size: int) -> tuple[float, float]:
    """(images per second, CPU ms per image) over `count` batches, after one warm-up batch.

    CPU time counts every thread of this process, so it shows the work each image costs
    even when other programs share the cores and wall-clock rates suffer.
    """
    next(stream)  # warm-up: thread pools, TF graph tracing, albumentations import
    start, cpu = time.perf_counter(), time.process_time()
    for _ in itertools.islice(stream, count):
        pass
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    images = count * batch_size
    return images / wall, cpu / images * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=40, help="training images to generate")
    parser.add_argument("--source", type=size, default=(1024, 2048), help="stored HxW")
    parser.add_argument("--sizes", default="256x512,512x1024", help="training HxW list")
    parser.add_argument("--batches", type=int, default=30, help="timed batches per run")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--aug", default="soft")
    parser.add_argument("--data", type=Path, help="a prepared dataset to reuse (or create)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        root = args.data or Path(folder) / "cityscapes"
        if not (root / "manifest.json").is_file():
            started = time.perf_counter()
            make_data(root, Path(folder) / "raw", args.scenes, args.source)
            print(f"(generated and prepared the data in {time.perf_counter() - started:.0f} s)")
        images = len(split_entries(root, "train", "categories"))
        print(
            f"input pipeline benchmark: {images} training PNG pairs of "
            f"{args.source[0]}x{args.source[1]}, aug={args.aug}, batch {args.batch_size}, "
            f"{args.batches} timed batches after 1 warm-up; {os.cpu_count()} CPU cores"
        )
        print("images/s of PNG decode + resize + augment + batch (nothing consumes the batches);")
        print(f"CPU ms per image in brackets; load average now {os.getloadavg()[0]:.2f}")
        print(f"{'size (HxW)':>10} {'python loop':>18} {'tf.data':>18} {'ratio':>6}  cache=memory")
        for text in args.sizes.split(","):
            height, width = size(text)
            config = DataConfig(
                height=height, width=width, batch_size=args.batch_size, aug=args.aug
            )
            base, base_cpu = rate(python_batches(root, config), args.batches, args.batch_size)
            dataset = make_dataset(root, "train", config, training=True)
            ours, ours_cpu = rate(iter(dataset.repeat()), args.batches, args.batch_size)
            # A memory cache skips PNG decoding after the first epoch; fill it with one.
            cached = make_dataset(root, "train", replace(config, cache="memory"), training=True)
            for _ in cached:
                pass
            memory, _ = rate(iter(cached.repeat()), args.batches, args.batch_size)
            print(
                f"{text:>10} {base:>7.1f}/s ({base_cpu:>4.0f} ms) "
                f"{ours:>7.1f}/s ({ours_cpu:>4.0f} ms) {ours / base:>5.2f}x  "
                f"{memory:.0f}/s ({memory / base:.1f}x)"
            )


if __name__ == "__main__":
    main()
