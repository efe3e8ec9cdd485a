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


def write_manifest(root: Path, manifest: dict[str, Any]) -> None:
    atomic_write_json(root / MANIFEST_NAME, manifest)


def iter_entries(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """All entries of all splits, in split order."""
    return [entry for split in SPLITS for entry in manifest["splits"].get(split, [])]
