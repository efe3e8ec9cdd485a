"""COCO instances JSON to per-image class maps, equal to pycocotools' `annToMask` per object.

Objects are painted in the file's annotation order (later over earlier). Class indices
are 0 for background and 1..N for the categories in the order they are listed, unless a
`class_ids` mapping (category name -> index) is given. Masks are made on demand, one
image at a time, so a large dataset never holds more than one mask.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cityseg.dataset.annotations._common import field as get_field
from cityseg.dataset.annotations._common import load_json, number
from cityseg.dataset.annotations.rasterise import RasterStats, inside, polygon_mask
from cityseg.dataset.annotations.rle import RleError, decode_counts, string_to_counts
from cityseg.errors import DataError


@dataclass(frozen=True)
class CocoImage:
    id: int
    file_name: str
    width: int
    height: int
    source: str


@dataclass
class CocoDataset:
    images: list[CocoImage]
    class_ids: dict[str, int]
    objects: dict[int, list[tuple[int, Any, str]]]  # image id -> (class id, segmentation, key)
    skipped: Counter[str] = field(default_factory=Counter)

    def mask(self, image: CocoImage, stats: RasterStats | None = None) -> np.ndarray:
        """The image's uint8 HxW class map; objects later in the file paint over earlier.

        Polygons skipped or reaching outside the image are counted in `stats` when given
        (one per thread when images are painted in parallel), else in `skipped`.
        """
        out = np.zeros((image.height, image.width), np.uint8)
        for class_id, segmentation, source in self.objects.get(image.id, []):
            out[self._object_mask(segmentation, image, source, stats)] = class_id
        return out

    def _object_mask(
        self, segmentation: Any, image: CocoImage, source: str, stats: RasterStats | None
    ) -> np.ndarray:
        h, w = image.height, image.width
        if isinstance(segmentation, list):
            mask = np.zeros((h, w), bool)
            for poly in segmentation:
                points = _polygon(poly, source)
                if len(points) < 3:
                    if stats is None:
                        self.skipped["polygon with fewer than 3 points"] += 1
                    else:
                        stats.degenerate += 1
                    continue
                if stats is not None and not inside(points, h, w):
                    stats.clipped += 1
                mask |= polygon_mask(points, h, w)
            return mask
        return _rle_mask(segmentation, image, source)


def read_coco(path: Path, class_ids: Mapping[str, int] | None = None) -> CocoDataset:
    """Read and check the file, every segmentation included; masks are made later, on demand."""
    data = load_json(path)
    where = str(path)
    categories = _categories(get_field(data, "categories", where), where)
    known = dict(class_ids or {name: i + 1 for i, name in enumerate(categories.values())})
    category_class = {}
    for cat_id, name in categories.items():
        if name not in known:
            raise DataError(f"{where}: category {name!r} is not one of: {', '.join(known)}")
        category_class[cat_id] = known[name]
    items = get_field(data, "images", where)
    images = [_image(item, f"{where}: images[{i}]") for i, item in enumerate(items)]
    by_id = {image.id: image for image in images}
    objects: dict[int, list[tuple[int, Any, str]]] = {}
    for i, ann in enumerate(get_field(data, "annotations", where)):
        source = f"{where}: annotations[{i}]"
        image_id, cat_id = get_field(ann, "image_id", source), get_field(ann, "category_id", source)
        if image_id not in by_id:
            raise DataError(f"{source}: image_id {image_id!r} is not in 'images'")
        if cat_id not in category_class:
            raise DataError(f"{source}: category_id {cat_id!r} is not in 'categories'")
        segmentation = get_field(ann, "segmentation", source)
        _check_segmentation(segmentation, by_id[image_id], source)
        objects.setdefault(image_id, []).append((category_class[cat_id], segmentation, source))
    return CocoDataset(images, known, objects)


def _check_segmentation(segmentation: Any, image: CocoImage, source: str) -> None:
    """Fail while reading, not while painting: a bad object must stop prepare before any
    file is written. Polygons are parsed and RLE counts decoded and summed (cheap)."""
    if isinstance(segmentation, list):
        for poly in segmentation:
            _polygon(poly, source)
    elif isinstance(segmentation, dict):
        _rle_counts(segmentation, image, source)
    else:
        raise DataError(f"{source}: 'segmentation' must be a list of polygons or an RLE object")


def _categories(items: Any, where: str) -> dict[Any, str]:
    if not isinstance(items, list):
        raise DataError(f"{where}: 'categories' must be a list")
    out: dict[Any, str] = {}
    for i, item in enumerate(items):
        source = f"{where}: categories[{i}]"
        out[get_field(item, "id", source)] = str(get_field(item, "name", source))
    return out


def _image(item: Any, source: str) -> CocoImage:
    size = [get_field(item, key, source) for key in ("width", "height")]
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size):
        raise DataError(f"{source}: width and height must be positive integers, got {size}")
    file_name = str(get_field(item, "file_name", source))
    return CocoImage(get_field(item, "id", source), file_name, size[0], size[1], source)


def _polygon(poly: Any, source: str) -> list[tuple[float, float]]:
    if not isinstance(poly, list) or len(poly) % 2:
        raise DataError(f"{source}: a polygon must be a flat list of x, y numbers")
    values = [number(v, source, "polygon coordinate") for v in poly]
    return list(zip(values[0::2], values[1::2], strict=True))


def _rle_mask(rle: Any, image: CocoImage, source: str) -> np.ndarray:
    return decode_counts(_rle_counts(rle, image, source), image.height, image.width)


def _rle_counts(rle: Any, image: CocoImage, source: str) -> list[int]:
    """Uncompressed counts that cover the image exactly, or a one-line error."""
    counts, size = get_field(rle, "counts", source), get_field(rle, "size", source)
    if size != [image.height, image.width]:
        expected = [image.height, image.width]
        raise DataError(f"{source}: RLE size {size} is not the image's {expected}")
    try:
        if isinstance(counts, str):
            counts = string_to_counts(counts)
        elif not isinstance(counts, list) or not all(
            isinstance(c, int) and not isinstance(c, bool) for c in counts
        ):
            raise RleError("counts must be a list of integers or a compressed string")
        if any(c < 0 for c in counts):
            raise RleError("counts must not be negative")
        if sum(counts) != image.height * image.width:
            raise RleError(
                f"counts cover {sum(counts)} pixels, the image {image.height}x{image.width}"
            )
        return list(counts)
    except RleError as exc:
        raise DataError(f"{source}: bad RLE ({exc})") from exc
