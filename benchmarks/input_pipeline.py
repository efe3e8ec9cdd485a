"""Input speed: cityseg's tf.data pipeline against a one-image-at-a-time Python loop.

The baseline is what the earlier notebooks' `keras.utils.Sequence` did for every batch:
read each full-size PNG pair with OpenCV, resize (bilinear image, nearest mask), apply
the "soft" albumentations preset, stack into a float32 batch, one image after another.
cityseg's `make_dataset(training=True, aug="soft")` does the same work with TensorFlow's
threads (parallel decode and augmentation, prefetch). Three comparisons, same run:

(a) tf.data vs the loop, both on the full-size files: parallelism alone. Decoding a
    2048x1024 PNG pair is ~85% of the CPU an image costs and OpenCV and TensorFlow
    decode equally fast, so this gains about the number of idle cores and no more.
(b) tf.data reading `cityseg prepare --size` copies vs the loop on the full-size files:
    what a user gets against what the notebooks did. This is the >= 2x target on 2 cores.
    The copies hold exactly the pixels the full-size path resizes to (same functions).
(c) the loop reading the copies too: how much of (b) is the copies (c / loop) and how
    much is still tf.data's parallelism (b / c).

Two datasets are prepared from the same generated zips, one plain and one with `--size`
copies of every training size, since `make_dataset` reads copies whenever they exist.
Each stream is warmed once, then timed over the same number of batches with nothing
consuming them, so the figures are the input side's ceiling; during training the model
competes for the same cores. CPU ms per image (all threads) is printed beside each rate:
unlike the rates, it barely moves when other programs share the cores.

    python benchmarks/input_pipeline.py [--scenes 40] [--source 1024x2048] [--batches 30]
"""

from __future__ import annotations

import argparse
import itertools
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from cityseg.dataset.entries import split_entries
from cityseg.dataset.manifest import MANIFEST_NAME, iter_entries, read_manifest, sized_record
from cityseg.dataset.prepare import prepare_dataset
from cityseg.dataset.synthetic import SyntheticSpec, write_raw_dataset
from cityseg.images import read_image, read_mask, resize_image, resize_mask
from cityseg.training.augment import build_augmentation
from cityseg.training.pipeline import DataConfig, make_dataset

TRAIN_CITIES = ("aachen", "bochum", "bremen", "cologne", "darmstadt")
Rate = tuple[float, float]


def size(text: str) -> tuple[int, int]:
    """HxW, as Cityscapes sizes are usually written the other way round (2048x1024)."""
    height, width = (int(part) for part in text.lower().split("x"))
    return height, width


def make_raw(raw: Path, scenes: int, source: tuple[int, int]) -> None:
    """Zips whose train split holds `scenes` images (rounded up to whole cities)."""
    per_city = -(-scenes // len(TRAIN_CITIES))
    spec = SyntheticSpec(
        height=source[0], width=source[1], images_per_city=per_city, cities={"train": TRAIN_CITIES}
    )
    write_raw_dataset(raw, spec)


def prepare(raw: Path, output: Path, sizes: list[tuple[int, int]] | None = None) -> float:
    """Prepare (or top up) `output`; returns the seconds it took."""
    started = time.perf_counter()
    prepare_dataset(
        raw, output, val_ratio=0.0, verify=False, sizes=sizes or [], show_progress=False
    )
    return time.perf_counter() - started


def python_batches(
    root: Path, config: DataConfig, *, copies: bool
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The baseline: an endless, shuffled, sequential stream of augmented batches, from
    the full-size files or (`copies`) the training-size copies, where resizing is a no-op."""
    at = (config.height, config.width) if copies else None
    entries = split_entries(root, "train", config.scheme, at)
    assert all(entry["sized"] == copies for entry in entries)
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


def pipeline(root: Path, config: DataConfig, *, copies: bool) -> Iterator[object]:
    entries = split_entries(root, "train", config.scheme, (config.height, config.width))
    assert all(entry["sized"] == copies for entry in entries)
    return iter(make_dataset(root, "train", config, training=True).repeat())


def rate(stream: Iterator[object], count: int, batch_size: int) -> Rate:
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


def time_streams(full: Path, sized: Path, config: DataConfig, batches: int) -> dict[str, Rate]:
    """The four streams of one size, each built just before it is timed and dropped right
    after, so no idle prefetching iterator competes for the cores with the next one."""
    streams: dict[str, Callable[[], Iterator[object]]] = {
        "loop full": lambda: python_batches(full, config, copies=False),
        "tf full": lambda: pipeline(full, config, copies=False),
        "tf copies": lambda: pipeline(sized, config, copies=True),
        "loop copies": lambda: python_batches(sized, config, copies=True),
    }
    return {name: rate(build(), batches, config.batch_size) for name, build in streams.items()}


def cell(measured: Rate) -> str:
    return f"{measured[0]:>6.1f}/s ({measured[1]:>4.0f} ms)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=40, help="training images to generate")
    parser.add_argument("--source", type=size, default=(1024, 2048), help="stored HxW")
    parser.add_argument("--sizes", default="256x512,512x1024", help="training HxW list")
    parser.add_argument("--batches", type=int, default=30, help="timed batches per run")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--aug", default="soft")
    parser.add_argument("--data", type=Path, help="a folder to keep the data in for reruns")
    args = parser.parse_args()
    sizes = [size(text) for text in args.sizes.split(",")]

    with tempfile.TemporaryDirectory() as folder:
        base = args.data or Path(folder)
        raw, full, sized = base / "raw", base / "full", base / "sized"
        if not (raw / "gtFine_trainvaltest.zip").is_file():
            started = time.perf_counter()
            make_raw(raw, args.scenes, args.source)
            print(f"(generated the zips in {time.perf_counter() - started:.0f} s)")
        prepare(raw, full)
        prepare(raw, sized)
        images = len(iter_entries(read_manifest(sized)))
        fresh = [hw for hw in sizes if sized_record(read_manifest(sized), *hw) is None]
        seconds = prepare(raw, sized, sizes)  # the one-off cost this benchmark is about
        if fresh:
            print(
                f"(`prepare --size {','.join(f'{h}x{w}' for h, w in fresh)}` on the prepared "
                f"dataset: {seconds:.1f} s for {images} images, once)"
            )
        assert (full / MANIFEST_NAME).is_file()
        print(
            f"input pipeline benchmark: {images} training PNG pairs of "
            f"{args.source[0]}x{args.source[1]}, aug={args.aug}, batch {args.batch_size}, "
            f"{args.batches} timed batches after 1 warm-up; {os.cpu_count()} CPU cores"
        )
        print("images/s of PNG decode (+ resize) + augment + batch; nothing consumes batches;")
        print(f"CPU ms per image in brackets; load average now {os.getloadavg()[0]:.2f}")
        print(
            f"{'size':>8} | {'loop, full-size':>20} | {'tf.data, full-size':>20} {'(a)':>6} | "
            f"{'tf.data, copies':>20} {'(b)':>6} | {'loop, copies':>20} {'(c)':>6}"
        )
        for height, width in sizes:
            config = DataConfig(
                height=height, width=width, batch_size=args.batch_size, aug=args.aug
            )
            timed = time_streams(full, sized, config, args.batches)
            loop = timed["loop full"][0]
            print(
                f"{f'{height}x{width}':>8} | {cell(timed['loop full']):>20} | "
                f"{cell(timed['tf full']):>20} {timed['tf full'][0] / loop:>5.2f}x | "
                f"{cell(timed['tf copies']):>20} {timed['tf copies'][0] / loop:>5.2f}x | "
                f"{cell(timed['loop copies']):>20} {timed['loop copies'][0] / loop:>5.2f}x"
            )
        print("(a), (b), (c): images/s against the loop over the full-size files")


if __name__ == "__main__":
    main()
