"""A prepared split's entries, resolved to files for one scheme and checked up front.

Training, export calibration, multi-worker sharding and loss weighting all start from "the
images and masks of this split, for this scheme, at this size": one place answers it, so
a missing file or scheme is found before anything slow starts, whoever asks.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from cityseg.config import default_workers
from cityseg.dataset import manifest as manifest_lib
from cityseg.dataset.manifest import MANIFEST_NAME, SPLITS, read_manifest
from cityseg.errors import DataError, UsageError
from cityseg.images import read_mask

IGNORE_VALUE = 255
"""A mask value that is not a class (trainids' ignore); never counted as a class pixel."""


def _scheme_name(manifest: dict[str, Any], scheme: str) -> str:
    """Accept a user scheme's JSON path as well as its name, as `cityseg remap` does."""
    if scheme in manifest.get("schemes", {}) or Path(scheme).suffix.lower() != ".json":
        return scheme
    from cityseg.dataset.schemes import get_scheme

    return get_scheme(scheme).name


def split_entries(
    root: Path, split: str, scheme: str, size: tuple[int, int] | None = None
) -> list[dict[str, Any]]:
    """The split's manifest entries, checked up front: a missing file or scheme found
    mid-epoch would surface as a TensorFlow traceback an hour into training.

    Each entry comes back with a `mask` key, its mask path for `scheme`, so callers need
    not resolve the scheme's name again. With a training `size` (H, W) that `prepare
    --size` recorded with `scheme`'s masks, `image` and `mask` point at those copies and
    `sized` is True; otherwise they are the full-size files and `sized` is False.
    """
    return _resolve(Path(root), split, scheme, size)[1]


def _resolve(
    root: Path, split: str, scheme: str, size: tuple[int, int] | None = None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(the manifest's record of the scheme plus its `name`, the split's entries)."""
    if split not in SPLITS:
        raise UsageError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    manifest = read_manifest(root)
    name = _scheme_name(manifest, scheme)
    entries: list[dict[str, Any]] = list(manifest.get("splits", {}).get(split, []))
    if not entries:
        raise DataError(
            f"the {split} split of {root} has no images; re-run `cityseg prepare` "
            "(for val: with --val-ratio above 0)"
        )
    record = manifest.get("schemes", {}).get(name)
    if record is None or any(name not in e.get("masks", {}) for e in entries):
        raise DataError(
            f"{root} has no {name!r} masks for the {split} split; "
            f"run `cityseg remap {root} --scheme {scheme}` first"
        )
    entries = [{**e, "mask": e["masks"][name], "sized": False} for e in entries]
    copies = None if size is None else manifest_lib.sized_record(manifest, *size)
    if copies is not None and name in copies.get("masks", {}):
        entries = [_sized_entry(e, copies, name) for e in entries]
    for entry in entries:
        for relative in (entry["image"], entry["mask"]):
            if not (root / relative).is_file():
                raise DataError(
                    f"{root / relative} is listed in {root / MANIFEST_NAME} but missing; "
                    "re-run `cityseg prepare` to restore it"
                )
    return {**record, "name": name}, entries


def _sized_entry(entry: dict[str, Any], record: dict[str, Any], scheme: str) -> dict[str, Any]:
    mask = manifest_lib.sized_mask(record, entry["key"], scheme)
    return {
        **entry,
        "image": manifest_lib.sized_image(record, entry["key"]),
        "mask": mask,
        "sized": True,
    }


def class_pixel_counts(
    root: Path, split: str, scheme: str, num_classes: int | None = None
) -> np.ndarray:
    """Pixels of each class over the split's masks at their stored size, for loss weights.

    Counted at the stored size rather than the training size because frequencies barely
    depend on it and this way one count serves every `--size`. `num_classes` defaults to
    the scheme's class count in the manifest; 255 (ignore) is skipped; any other id at or
    beyond `num_classes` means the masks do not belong to this scheme, and is an error.
    """
    root = Path(root)
    record, entries = _resolve(root, split, scheme)
    if num_classes is None:
        num_classes = len(record.get("classes", []))
    if not 1 <= num_classes <= IGNORE_VALUE:
        raise UsageError(f"num_classes must be between 1 and {IGNORE_VALUE} (got {num_classes})")

    def count_one(entry: dict[str, Any]) -> np.ndarray:
        # cv2's PNG decoder releases the GIL, so a thread pool decodes in parallel.
        path = root / entry["mask"]
        counts = np.bincount(read_mask(path).ravel(), minlength=256)
        extra = np.flatnonzero(counts[num_classes:IGNORE_VALUE])
        if extra.size:
            raise DataError(
                f"{path} holds class id {int(extra[0]) + num_classes}, but scheme "
                f"{record['name']!r} has {num_classes} classes; "
                f"re-run `cityseg remap {root} --scheme {scheme}`"
            )
        return counts[:num_classes].astype(np.int64)

    total = np.zeros(num_classes, dtype=np.int64)
    with ThreadPoolExecutor(max_workers=default_workers()) as pool:
        for counts in pool.map(count_one, entries):
            total += counts
    return total
