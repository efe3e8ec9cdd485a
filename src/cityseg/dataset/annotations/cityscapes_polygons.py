"""Cityscapes `*_polygons.json` -> labelIds, exactly as cityscapesScripts' json2labelImg.

The official labelIds PNGs were made from these JSON files by cityscapesScripts'
`json2labelImg.createLabelImage(annotation, "ids")`; anyone who edits the polygons (or
uses gtCoarse) needs the same conversion, or their labels drift from the benchmark's by
a pixel along every edge. So this module does what that function does, step by step,
with the same drawing code, Pillow's `ImageDraw.polygon`, on the same "L" image:

- the image starts as 'unlabeled' (0) and objects are drawn in file order, later on top;
- an object with a truthy `deleted` is skipped before its label is even looked at;
- a label not in the table but ending in "group" loses that suffix ("cargroup" -> car);
- a label with a negative id ('license plate') is not drawn; any other unknown label is
  an error, as it is in json2labelImg;
- coordinates go to Pillow as the JSON holds them, ints as ints and floats as floats.

Where json2labelImg would crash or draw nonsense (a polygon of fewer than two points, a
NaN, a coordinate beyond a C int) this module raises a one-line `DataError` instead.
cityscapesScripts is a test-only dependency: the label table is cityseg's own.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from cityseg.dataset.annotations._common import field, load_json, number
from cityseg.dataset.labels import LABELS
from cityseg.errors import DataError

Coordinate = int | float
"""As the JSON holds it: Pillow sees exactly the values json2labelImg passes it."""

LABEL_ID_BY_NAME: dict[str, int] = {label.name: label.id for label in LABELS}
MAX_PIXELS = 100_000_000
"""A Cityscapes label image is 2 MP; a size far beyond this is corrupt, not a photo."""
_C_INT = 2**31
"""Pillow turns coordinates into C ints; beyond this the cast is undefined behaviour."""


@dataclass(frozen=True)
class CityscapesObject:
    """One entry of `objects`, its label as written (before the 'group' fallback)."""

    label: str
    polygon: tuple[tuple[Coordinate, Coordinate], ...]
    deleted: bool
    source: str
    """Where it is, for messages: `file: objects[i]`."""


@dataclass(frozen=True)
class CityscapesAnnotation:
    height: int
    width: int
    objects: tuple[CityscapesObject, ...]
    source: str


def read_polygons_file(path: Path) -> CityscapesAnnotation:
    """Parse one `*_polygons.json` on disk; errors name the file (and line, for bad JSON)."""
    return parse_annotation(load_json(path), str(path))


def parse_polygons(data: bytes | str, source: str) -> CityscapesAnnotation:
    """Parse JSON bytes (from a zip member, say); errors read `source:line` like a file's."""
    try:
        document = json.loads(data)
    except json.JSONDecodeError as exc:
        raise DataError(f"{source}:{exc.lineno}: not valid JSON ({exc.msg})") from exc
    except UnicodeDecodeError as exc:
        raise DataError(f"{source}: not UTF-8 text ({exc.reason})") from exc
    return parse_annotation(document, source)


def parse_annotation(document: Any, source: str) -> CityscapesAnnotation:
    """Check a decoded annotation's shape; labels are resolved when drawing, as upstream."""
    height = _size(field(document, "imgHeight", source), source, "imgHeight")
    width = _size(field(document, "imgWidth", source), source, "imgWidth")
    if height * width > MAX_PIXELS:
        raise DataError(
            f"{source}: {width}x{height} is beyond {MAX_PIXELS} pixels; not a Cityscapes image"
        )
    objects = field(document, "objects", source)
    if not isinstance(objects, list):
        raise DataError(f"{source}: 'objects' must be a list, got {type(objects).__name__}")
    parsed = tuple(_object(item, f"{source}: objects[{i}]") for i, item in enumerate(objects))
    return CityscapesAnnotation(height, width, parsed, source)


def _size(value: Any, source: str, key: str) -> int:
    size = number(value, source, repr(key))
    if not size.is_integer() or size < 1:
        raise DataError(f"{source}: {key!r} must be a positive integer, got {value!r}")
    return int(size)


def _object(item: Any, source: str) -> CityscapesObject:
    label = str(field(item, "label", source))  # as CsPoly does: 5 is "5", an unknown label
    points = field(item, "polygon", source)
    if not isinstance(points, list) or not all(isinstance(p, list) and len(p) == 2 for p in points):
        raise DataError(f"{source}: 'polygon' must be a list of [x, y] pairs")
    polygon = tuple((_coordinate(x, source), _coordinate(y, source)) for x, y in points)
    # json2labelImg tests `if obj.deleted:`, so any truthy value deletes, not only 1.
    return CityscapesObject(label, polygon, bool(item.get("deleted", 0)), source)


def _coordinate(value: Any, source: str) -> Coordinate:
    number(value, source, "a 'polygon' coordinate")
    if not math.isfinite(value) or abs(value) >= _C_INT:
        raise DataError(f"{source}: 'polygon' coordinate {value!r} is not a finite pixel position")
    return value


def label_id(obj: CityscapesObject) -> int:
    """The labelId json2labelImg draws for `obj` (negative: not drawn)."""
    name = obj.label
    if name not in LABEL_ID_BY_NAME and name.endswith("group"):
        name = name[: -len("group")]
    if name not in LABEL_ID_BY_NAME:
        raise DataError(f"{obj.source}: label {obj.label!r} is not a Cityscapes label")
    return LABEL_ID_BY_NAME[name]


def rasterise_annotation(annotation: CityscapesAnnotation) -> np.ndarray:
    """The HxW uint8 labelIds image of `createLabelImage(annotation, "ids")`."""
    image = Image.new("L", (annotation.width, annotation.height), LABEL_ID_BY_NAME["unlabeled"])
    drawer = ImageDraw.Draw(image)
    for obj in annotation.objects:
        if obj.deleted:
            continue
        value = label_id(obj)
        if value < 0:
            continue
        if len(obj.polygon) < 2:  # Pillow raises TypeError, so json2labelImg crashes
            raise DataError(
                f"{obj.source}: a {obj.label!r} polygon needs at least 2 points, "
                f"has {len(obj.polygon)}"
            )
        drawer.polygon(list(obj.polygon), fill=value)
    return np.array(image, dtype=np.uint8)


def polygons_to_label_ids(data: bytes | str, source: str) -> np.ndarray:
    """Parse and rasterise in one call (prepare checks the size against the image between)."""
    return rasterise_annotation(parse_polygons(data, source))
