"""Finding a user's images under SOURCE by file name, and naming them in the dataset.

Annotation tools store a bare file name (VIA) or a path relative to where the file was
(LabelMe, COCO), and users move folders around afterwards. Looking a name up in an index
of every image under SOURCE finds them wherever they are, as long as the name says which
image is meant: two images of the same name in different folders is an error, never a
guess.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from cityseg.errors import DataError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})
SPLIT_FOLDERS = {
    "train": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
}
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class ImageIndex:
    """Every image file under `root`, outside `exclude` (the dataset being written)."""

    def __init__(self, root: Path, exclude: Iterable[Path] = ()) -> None:
        self.root = root
        skip = [p.resolve() for p in exclude]
        self.paths = sorted(p for p in _walk(root) if not _inside(p.resolve(), skip))
        self.by_name: dict[str, list[Path]] = defaultdict(list)
        for path in self.paths:
            self.by_name[path.name].append(path)

    def find(self, name: str, near: Path | None = None) -> Path | None:
        """`name` as written in an annotation: relative to `near` or `root`, else by name."""
        clean = name.replace("\\", "/")
        for base in (near, self.root):
            if base is not None and not PurePosixPath(clean).is_absolute():
                candidate = Path(os.path.normpath(base / clean))
                if candidate.is_file():
                    return candidate
        matches = self.by_name.get(PurePosixPath(clean).name, [])
        if len(matches) > 1:
            shown = ", ".join(str(m.relative_to(self.root)) for m in matches[:3])
            raise DataError(
                f"two images are named {PurePosixPath(clean).name!r} in different folders "
                f"({shown}); rename one so annotations say which is meant"
            )
        return matches[0] if matches else None

    def relative(self, path: Path) -> str:
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return path.as_posix()


def _walk(root: Path) -> Iterable[Path]:
    for path in root.rglob("*"):
        hidden = any(part.startswith(".") for part in path.relative_to(root).parts)
        if not hidden and path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
            yield path


def _inside(path: Path, folders: list[Path]) -> bool:
    return any(path == f or f in path.parents for f in folders)


def split_folder(relative: str) -> str | None:
    """train / val / test when a folder on the image's path is named so (`valid` is val)."""
    parts = PurePosixPath(relative).parts[:-1]
    found = [SPLIT_FOLDERS[p.lower()] for p in parts if p.lower() in SPLIT_FOLDERS]
    return found[-1] if found else None


def dataset_keys(names: Iterable[str]) -> dict[str, str]:
    """Relative image path -> a file-name-safe key from its stem, unique or an error."""
    keys: dict[str, str] = {}
    owner: dict[str, str] = {}
    for name in names:
        key = _UNSAFE.sub("_", PurePosixPath(name).stem).strip("._") or "image"
        if key in owner:
            raise DataError(
                f"two images are named {key!r} ({owner[key]} and {name}); "
                "rename one: images are identified by file name"
            )
        owner[key] = name
        keys[name] = key
    return keys
