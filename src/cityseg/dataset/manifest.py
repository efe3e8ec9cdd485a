"""The prepared dataset's `manifest.json`: the one index every later command reads.

Paths inside are relative to the dataset root so a dataset can be moved or mounted
elsewhere. Ids resolve through this file only, never by joining user strings to paths.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cityseg.errors import DataError
from cityseg.fsutil import atomic_write_json

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")


def is_dataset(path: Path) -> bool:
    return (path / MANIFEST_NAME).is_file()


def read_manifest(root: Path) -> dict[str, Any]:
    path = root / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise DataError(
            f"{root} is not a prepared dataset (no {MANIFEST_NAME}); run `cityseg prepare` first"
        ) from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path} is not valid JSON ({exc}); re-run `cityseg prepare`") from exc
    version = manifest.get("format_version") if isinstance(manifest, dict) else None
    if version != FORMAT_VERSION:
        raise DataError(
            f"{path} has format_version {version!r}; this cityseg reads {FORMAT_VERSION}"
        )
    return manifest


def existing_manifest(root: Path) -> dict[str, Any] | None:
    """The manifest of an earlier prepare, or None: an unreadable one is rewritten anyway."""
    if not is_dataset(root):
        return None
    try:
        return read_manifest(root)
    except DataError:
        return None


def write_manifest(root: Path, manifest: dict[str, Any]) -> None:
    atomic_write_json(root / MANIFEST_NAME, manifest)


def iter_entries(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """All entries of all splits, in split order."""
    return [entry for split in SPLITS for entry in manifest["splits"].get(split, [])]


# ----------------------------------------------------------------------------- sized copies
# A top-level "sized" record lists the training-size copies `cityseg prepare --size` wrote:
#   "sized": {"512x1024": {"height": 512, "width": 1024,
#                          "images": "sized/512x1024/images",
#                          "masks": {"categories": "sized/512x1024/masks/categories"}}}
# with one `<key>.png` per entry of every split in each folder. The record is optional, so
# manifests written before it existed read as datasets without copies.

SIZED = "sized"


def size_name(height: int, width: int) -> str:
    """HxW, the way `--size` spells it, so a record's name is what the user typed."""
    return f"{height}x{width}"


def sized_records(index: dict[str, Any]) -> dict[str, dict[str, Any]]:
    records: dict[str, dict[str, Any]] = index.get(SIZED, {})
    return records


def sized_record(index: dict[str, Any], height: int, width: int) -> dict[str, Any] | None:
    return sized_records(index).get(size_name(height, width))


def sized_image(record: dict[str, Any], key: str) -> str:
    return f"{record['images']}/{key}.png"


def sized_mask(record: dict[str, Any], key: str, scheme: str) -> str | None:
    """The copy of `key`'s `scheme` mask, or None when this size holds no such masks."""
    folder = record.get("masks", {}).get(scheme)
    return None if folder is None else f"{folder}/{key}.png"


# ----------------------------------------------------------------------------- schemes
# Cityscapes datasets hold "categories" (and whatever `cityseg remap` added); own datasets
# hold one scheme, named by their top-level "default_scheme". Scheme records written by
# own-data prepare say which classes are void; Cityscapes' categories has void as class 0.

AUTO_SCHEME = "auto"
CATEGORIES_SCHEME = "categories"


def default_scheme(index: dict[str, Any]) -> str:
    """The scheme a command uses when none is asked for: what the dataset was made with."""
    named = index.get("default_scheme")
    if isinstance(named, str):
        return named
    schemes = list(index.get("schemes", {}))
    return CATEGORIES_SCHEME if CATEGORIES_SCHEME in schemes or not schemes else schemes[0]


def resolve_scheme(index: dict[str, Any], requested: str | None) -> str:
    return default_scheme(index) if requested in (None, AUTO_SCHEME) else str(requested)


def void_classes(name: str, record: dict[str, Any]) -> tuple[int, ...]:
    """Class ids left out of the non-void mean IoU (Cityscapes' void category is 0)."""
    recorded = record.get("void_classes")
    if isinstance(recorded, list):
        return tuple(int(c) for c in recorded)
    return (0,) if name == CATEGORIES_SCHEME else ()


def is_cityscapes(index: dict[str, Any]) -> bool:
    """Own datasets record their format; only Cityscapes ones have labelIds and cities."""
    return index.get("source", {}).get("format", "cityscapes") == "cityscapes"
