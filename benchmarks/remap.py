"""Remap speed: the 256-entry lookup table against `np.vectorize` over a dict.

The baseline is what the earlier notebooks did. Both run in this process on the same
1024x2048 labelIds masks (Cityscapes' size, drawn by cityseg.dataset.synthetic), so the ratios
hold on any machine even when absolute times do not. Targets: >= 50x on the array,
>= 5x end to end per file (PNG read + remap + PNG write).

    python benchmarks/remap.py [--masks 6] [--repeats 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np

from cityseg.config import UnknownPolicy
from cityseg.dataset import labels
from cityseg.dataset.remap import RemapJob, remap_array, remap_file, run_jobs
from cityseg.dataset.schemes import CATEGORIES
from cityseg.dataset.synthetic import draw_scene

T = TypeVar("T")

LABEL_TO_CATEGORY = {label.id: label.category_id for label in labels.PNG_LABELS}


def vectorize_remap(mask: np.ndarray) -> np.ndarray:
    """The notebooks' way: a Python dict lookup per pixel through np.vectorize."""
    return np.vectorize(LABEL_TO_CATEGORY.get)(mask).astype(np.uint8)


def vectorize_file(source: Path, target: Path) -> None:
    mask = cv2.imread(str(source), cv2.IMREAD_UNCHANGED)
    assert mask is not None, source
    cv2.imwrite(str(target), vectorize_remap(mask))


def each(items: Iterable[T], work: Callable[[T], None]) -> None:
    for item in items:
        work(item)


def best_of(repeats: int, work: Callable[[], object]) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--masks", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    masks = [draw_scene(rng, 1024, 2048).label_ids for _ in range(args.masks)]
    for mask in masks:  # the two ways must agree before their speed means anything
        assert np.array_equal(vectorize_remap(mask), remap_array(mask, CATEGORIES))

    array_base = best_of(args.repeats, lambda: [vectorize_remap(m) for m in masks])
    array_ours = best_of(args.repeats, lambda: [remap_array(m, CATEGORIES) for m in masks])

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        sources = []
        for index, mask in enumerate(masks):
            sources.append(root / f"m{index}_gtFine_labelIds.png")
            cv2.imwrite(str(sources[-1]), mask)
        jobs = [RemapJob(s, root / f"ours_{s.name}", None) for s in sources]
        file_base = best_of(
            args.repeats,
            lambda: each(sources, lambda s: vectorize_file(s, root / f"base_{s.name}")),
        )
        file_ours = best_of(
            args.repeats,
            lambda: each(jobs, lambda j: remap_file(j, CATEGORIES, UnknownPolicy.error)),
        )
        folder_ours = best_of(args.repeats, lambda: run_jobs(jobs, CATEGORIES, show_progress=False))

    n = len(masks)
    print(f"remap benchmark: {n} masks of 1024x2048, best of {args.repeats}")
    print(
        f"  array      vectorize {1000 * array_base / n:8.1f} ms/mask   "
        f"lookup {1000 * array_ours / n:6.2f} ms/mask   ratio {array_base / array_ours:6.0f}x"
        "  (target >= 50x)"
    )
    print(
        f"  per file   vectorize {1000 * file_base / n:8.1f} ms/file   "
        f"lookup {1000 * file_ours / n:6.2f} ms/file   ratio {file_base / file_ours:6.1f}x"
        "  (target >= 5x; read + remap + write, one thread)"
    )
    print(
        f"  folder     vectorize {n / file_base:8.1f} files/s    "
        f"lookup {n / folder_ours:6.1f} files/s    ratio {file_base / folder_ours:6.1f}x"
        "  (thread pool, as `cityseg remap` runs)"
    )


if __name__ == "__main__":
    main()
