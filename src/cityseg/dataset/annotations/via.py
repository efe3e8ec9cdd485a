"""VGG Image Annotator (VIA 1.x and 2.x) exports: CSV, annotation JSON and project JSON.

Both formats are first read into the same raw rows (shape and region attribute dicts plus
where they came from), so shape parsing and choosing the class attribute happen once.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cityseg.dataset.annotations._common import field as get_field
from cityseg.dataset.annotations._common import load_json
from cityseg.dataset.annotations.shapes import ImageAnnotation, ReadResult, Region
from cityseg.dataset.annotations.via_shapes import class_attribute, class_value, parse_shape
from cityseg.errors import DataError

CSV_COLUMNS = (
    "filename",
    "file_size",
    "file_attributes",
    "region_count",
    "region_id",
    "region_shape_attributes",
    "region_attributes",
)


@dataclass
class _Raw:
    file_name: str
    source: str
    regions: list[tuple[Any, Any, str]] = field(default_factory=list)


def read_via(path: Path, class_attr: str | None = None) -> ReadResult:
    """Read a VIA CSV (by suffix) or JSON export; images come in the file's order."""
    raws = _read_csv(path) if path.suffix.lower() == ".csv" else _read_json(path)
    regions = [r for raw in raws for r in raw.regions]
    skipped: Counter[str] = Counter()
    images: list[ImageAnnotation] = []
    key = class_attribute((r[1] for r in regions), class_attr, str(path)) if regions else ""
    for raw in raws:
        out: list[Region] = []
        for shape_attrs, region_attrs, source in raw.regions:
            shape = parse_shape(shape_attrs, source)
            if shape is None:
                skipped[str(shape_attrs["name"])] += 1
                continue
            out.append(Region(class_value(region_attrs, key, source), shape, source))
        images.append(ImageAnnotation(raw.file_name, out, None, None, raw.source))
    return ReadResult(images, skipped)


def _read_csv(path: Path) -> list[_Raw]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            return _parse_csv(csv.reader(f), path)
    except FileNotFoundError as exc:
        raise DataError(f"{path}: no such annotation file") from exc
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot read as CSV ({exc})") from exc


def _parse_csv(reader: Any, path: Path) -> list[_Raw]:
    header = next(reader, None)
    if header is None or [h.strip().lstrip("#") for h in header] != list(CSV_COLUMNS):
        raise DataError(f"{path}:1: not a VIA CSV export (expected {','.join(CSV_COLUMNS)})")
    raws: dict[str, _Raw] = {}
    for row in reader:
        source = f"{path}:{reader.line_num}"
        if not row or row == [""]:
            continue
        if len(row) != len(CSV_COLUMNS):
            raise DataError(f"{source}: expected {len(CSV_COLUMNS)} columns, got {len(row)}")
        raw = raws.setdefault(row[0], _Raw(row[0], source))
        shape = _cell(row[5], source, "region_shape_attributes")
        if shape == {} or row[3].strip() == "0":
            continue
        raw.regions.append((shape, _cell(row[6], source, "region_attributes"), source))
    return list(raws.values())


def _cell(text: str, source: str, column: str) -> Any:
    try:
        return json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as exc:
        raise DataError(f"{source}: {column} is not valid JSON ({exc.msg})") from exc


def _read_json(path: Path) -> list[_Raw]:
    data = load_json(path)
    if isinstance(data, dict) and "_via_img_metadata" in data:
        data = data["_via_img_metadata"]
    if not isinstance(data, dict):
        raise DataError(f"{path}: not a VIA JSON export (expected an object keyed by image)")
    raws = []
    for key, entry in data.items():
        where = f"{path}: {key}"
        raw = _Raw(str(get_field(entry, "filename", where)), where)
        for i, region in _regions(get_field(entry, "regions", where), where):
            source = f"{where}/regions/{i}"
            shape = get_field(region, "shape_attributes", source)
            if shape == {}:
                continue
            raw.regions.append((shape, region.get("region_attributes", {}), source))
        raws.append(raw)
    return raws


def _regions(regions: Any, where: str) -> list[tuple[str, Any]]:
    """VIA 2 writes a list; VIA 1 a dict keyed "0", "1", ... (ordered by that number)."""
    if isinstance(regions, list):
        return [(str(i), r) for i, r in enumerate(regions)]
    if isinstance(regions, dict):
        keys = sorted(regions, key=lambda k: (0, int(k), "") if k.isdigit() else (1, 0, k))
        return [(k, regions[k]) for k in keys]
    raise DataError(f"{where}: 'regions' must be a list or an object")
