"""Training-size copies: every image and mask of a prepared dataset stored again at HxW.

Training at 512x1024 from 2048x1024 PNGs spends most of its input CPU decoding pixels it
throws away at once, and with 2 cores no amount of parallelism gets past that. `cityseg
prepare --size 512x1024` pays the decode and resize once: it writes `sized/512x1024/`
beside the full-size files (which stay, since evaluation scores full-size labels) and
records it in the manifest's "sized" record (see `cityseg.dataset.manifest`), and `make_dataset`
reads the copies whenever the training size and scheme match.

The copies are resized with the pipeline's own `resize_image` and `resize_mask`, so a
copy holds exactly the pixels that resizing on the fly would produce: training reads the
same data either way, only cheaper. Files are written atomically and existing ones are
skipped, so an interrupted run resumes like the rest of `prepare`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cityseg import images
from cityseg.config import default_workers
from cityseg.dataset import manifest
from cityseg.errors import UsageError
from cityseg.images import resize_image, resize_mask
from cityseg.progress import run_parallel

Size = tuple[int, int]


def parse_sizes(values: Iterable[str]) -> list[Size]:
    """`--size` values (repeatable, each possibly a comma list) -> unique (H, W), in order.

    Each size is read as `cityseg train --size` reads it, so a size accepted by one is
    accepted by the other.
    """
    from cityseg.runs import parse_size

    sizes: list[Size] = []
    for value in values:
        parts = [part for part in value.split(",") if part.strip()]
        if not parts:
            raise UsageError(f"--size must look like HEIGHTxWIDTH (e.g. 512x1024), got {value!r}")
        for part in parts:
            size = parse_size(part)
            if size not in sizes:
                sizes.append(size)
    return sizes


def recorded_sizes(index: dict[str, Any] | None) -> list[Size]:
    if index is None:
        return []
    return [(r["height"], r["width"]) for r in manifest.sized_records(index).values()]


def record_sizes(index: dict[str, Any], sizes: Sequence[Size]) -> None:
    """Record `sizes` in `index`, each holding masks of every scheme the index has.

    Called on a manifest about to be written, before the copies exist: the manifest is
    written last, so it never lists a copy that an interrupted run did not finish.
    """
    if not sizes:
        return
    records = index.setdefault(manifest.SIZED, {})
    for height, width in sorted(sizes):
        name = manifest.size_name(height, width)
        folder = f"{manifest.SIZED}/{name}"
        records[name] = {
            "height": height,
            "width": width,
            "images": f"{folder}/images",
            "masks": {scheme: f"{folder}/masks/{scheme}" for scheme in index.get("schemes", {})},
        }


def record_scheme(index: dict[str, Any], scheme: str) -> None:
    """Add `scheme`'s masks to every recorded size (remap adds a scheme)."""
    for name, record in manifest.sized_records(index).items():
        record.setdefault("masks", {})[scheme] = f"{manifest.SIZED}/{name}/masks/{scheme}"


@dataclass(frozen=True)
class Copy:
    """One source file and the sizes still to write from it: decoded once for all sizes."""

    source: Path
    targets: tuple[tuple[Path, int, int], ...]
    mask: bool


def plan_copies(
    root: Path,
    index: dict[str, Any],
    *,
    schemes: Iterable[str] | None = None,
    with_images: bool = True,
    overwrite: bool = False,
) -> list[Copy]:
    """The copies the manifest records but the disk lacks (all of them with `overwrite`).

    `schemes` limits masks to those schemes and `with_images=False` skips images: remap
    refreshes one scheme's masks and nothing else.
    """
    wanted = None if schemes is None else set(schemes)
    targets: dict[tuple[Path, bool], list[tuple[Path, int, int]]] = defaultdict(list)
    for record in manifest.sized_records(index).values():
        size = (record["height"], record["width"])
        for entry in manifest.iter_entries(index):
            key = entry["key"]
            if with_images:
                targets[(root / entry["image"], False)].append(
                    (root / manifest.sized_image(record, key), *size)
                )
            for scheme, source in entry.get("masks", {}).items():
                copy = manifest.sized_mask(record, key, scheme)
                if copy is not None and (wanted is None or scheme in wanted):
                    targets[(root / source, True)].append((root / copy, *size))
    return [
        Copy(source, tuple(missing), mask)
        for (source, mask), found in targets.items()
        if (missing := [t for t in found if overwrite or not t[0].is_file()])
    ]


def copies_present(root: Path, index: dict[str, Any]) -> bool:
    return not plan_copies(root, index)


def write_copy(copy: Copy) -> None:
    if copy.mask:
        mask = images.read_mask(copy.source)
        for target, height, width in copy.targets:
            images.write_mask(target, resize_mask(mask, height, width))
    else:
        image = images.read_image(copy.source)
        for target, height, width in copy.targets:
            images.write_rgb(target, resize_image(image, height, width))


def write_copies(
    copies: Sequence[Copy], *, workers: int | None = None, show_progress: bool = True
) -> int:
    """Write every copy on a thread pool (OpenCV's codecs release the GIL); returns files."""
    if copies:
        run_parallel(
            write_copy,
            copies,
            "resize copies",
            workers=workers or default_workers(),
            show_progress=show_progress,
        )
    return sum(len(copy.targets) for copy in copies)
