"""LabelMe: one JSON file per image, found in a folder (recursively) or given singly.

`file_name` is `imagePath` as LabelMe wrote it (backslashes made "/"): relative to the
folder holding the JSON file, which is the annotation's `source`. An embedded base64
`imageData` is decoded eagerly, so a corrupt one fails while reading, naming its file;
pass `load_image_data=False` to keep memory flat when the images exist on disk.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cityseg.dataset.annotations._common import field, load_json, number
from cityseg.dataset.annotations.shapes import (
    Circle,
    ImageAnnotation,
    Point,
    Polygon,
    ReadResult,
    Rect,
    Region,
    Shape,
)
from cityseg.errors import DataError

NO_AREA = ("line", "linestrip", "point", "points")
AREA = ("polygon", "rectangle", "circle")


def read_labelme(
    path: Path, load_image_data: bool = True, exclude: Sequence[Path] = ()
) -> ReadResult:
    """Read every `*.json` under a folder (sorted), or one LabelMe file.

    Hidden files and folders, and those under `exclude` (a dataset being written inside
    the folder, whose manifest is JSON too), are not annotations.
    """
    files = sorted(_annotation_files(path, exclude)) if path.is_dir() else [path]
    if not files:
        raise DataError(f"{path}: no LabelMe *.json files found")
    result = ReadResult([])
    for file in files:
        result.images.append(read_labelme_file(file, result.skipped, load_image_data))
    return result


def _annotation_files(folder: Path, exclude: Sequence[Path]) -> list[Path]:
    skip = [p.resolve() for p in exclude]
    found = []
    for file in folder.rglob("*.json"):
        hidden = any(part.startswith(".") for part in file.relative_to(folder).parts)
        resolved = file.resolve()
        if not hidden and not any(s == resolved or s in resolved.parents for s in skip):
            found.append(file)
    return found


def read_labelme_file(
    path: Path, skipped: Counter[str], load_image_data: bool = True
) -> ImageAnnotation:
    data = load_json(path)
    where = str(path)
    image_path = str(field(data, "imagePath", where)).replace("\\", "/")
    shapes = field(data, "shapes", where)
    if not isinstance(shapes, list):
        raise DataError(f"{where}: 'shapes' must be a list")
    regions = []
    for i, item in enumerate(shapes):
        source = f"{where}: shapes[{i}]"
        kind = (item.get("shape_type") if isinstance(item, dict) else None) or "polygon"
        if kind in NO_AREA:
            skipped[str(kind)] += 1
            continue
        label = field(item, "label", source)
        if not isinstance(label, str) or not label.strip():
            raise DataError(f"{source}: 'label' must be a non-empty string, got {label!r}")
        regions.append(Region(label.strip(), _shape(kind, item, source), source))
    image_data = _image_data(data.get("imageData"), where) if load_image_data else None
    height, width = (_size(data.get(key), where, key) for key in ("imageHeight", "imageWidth"))
    return ImageAnnotation(image_path, regions, width, height, where, image_data)


def _shape(kind: str, item: dict[str, Any], source: str) -> Shape:
    points = _points(field(item, "points", source), source)
    if kind == "polygon":
        return Polygon(tuple(points))
    if kind not in AREA:
        raise DataError(f"{source}: unknown shape_type {kind!r} (known: {', '.join(AREA)})")
    if len(points) != 2:
        raise DataError(f"{source}: a {kind} needs 2 points, has {len(points)}")
    (x0, y0), (x1, y1) = points
    if kind == "rectangle":
        return Rect(min(x0, x1), min(y0, y1), abs(x1 - x0), abs(y1 - y0))
    return Circle(x0, y0, math.hypot(x1 - x0, y1 - y0))


def _points(value: Any, source: str) -> list[Point]:
    if not isinstance(value, list) or not all(isinstance(p, list) and len(p) == 2 for p in value):
        raise DataError(f"{source}: 'points' must be a list of [x, y] pairs")
    return [(number(x, source, "x"), number(y, source, "y")) for x, y in value]


def _size(value: Any, where: str, key: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise DataError(f"{where}: {key!r} must be a positive integer, got {value!r}")
    return value


def _image_data(value: Any, where: str) -> bytes | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise DataError(f"{where}: 'imageData' must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise DataError(f"{where}: 'imageData' is not valid base64 ({exc})") from exc
