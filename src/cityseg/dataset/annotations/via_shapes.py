"""VIA's `shape_attributes` and `region_attributes`, shared by its CSV and JSON exports."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from cityseg.dataset.annotations._common import number
from cityseg.dataset.annotations.shapes import Circle, Ellipse, Polygon, Rect, Shape
from cityseg.errors import DataError

_CLASS_NAMES = ("class", "label", "name")
_SHAPE_KEYS = {
    "rect": ("x", "y", "width", "height"),
    "circle": ("cx", "cy", "r"),
    "ellipse": ("cx", "cy", "rx", "ry"),
}
NO_AREA = ("point",)


def parse_shape(attrs: Any, source: str) -> Shape | None:
    """A VIA shape, or None for shapes without area (points), which the caller counts."""
    if not isinstance(attrs, dict) or "name" not in attrs:
        raise DataError(f"{source}: shape attributes have no 'name'")
    name = attrs["name"]
    if name in NO_AREA:
        return None
    if name in ("polygon", "polyline"):
        xs, ys = (_coords(attrs, key, source) for key in ("all_points_x", "all_points_y"))
        if len(xs) != len(ys):
            raise DataError(f"{source}: {len(xs)} all_points_x but {len(ys)} all_points_y")
        return Polygon(tuple(zip(xs, ys, strict=True)))
    if name not in _SHAPE_KEYS:
        known = ", ".join(["polygon", "polyline", *_SHAPE_KEYS, *NO_AREA])
        raise DataError(f"{source}: unknown shape {name!r} (known: {known})")
    values = [_coord(attrs, key, source) for key in _SHAPE_KEYS[name]]
    if name == "rect":
        return Rect(*values)
    if name == "circle":
        return Circle(*values)
    theta = number(attrs.get("theta", 0.0), source, "theta")
    cx, cy, rx, ry = values
    return Ellipse(cx, cy, rx, ry, theta)


def _coord(attrs: dict[str, Any], key: str, source: str) -> float:
    if key not in attrs:
        raise DataError(f"{source}: {attrs['name']} shape is missing {key!r}")
    return number(attrs[key], source, key)


def _coords(attrs: dict[str, Any], key: str, source: str) -> list[float]:
    values = attrs.get(key)
    if not isinstance(values, list):
        raise DataError(f"{source}: {attrs['name']} shape is missing the list {key!r}")
    return [number(v, source, key) for v in values]


def class_attribute(all_attrs: Iterable[dict[str, Any]], chosen: str | None, where: str) -> str:
    """The region attribute holding the class: `chosen`, the only one, or class/label/name.

    Decided once per file from every region's attribute names, so all regions agree.
    """
    names = list(dict.fromkeys(name for attrs in all_attrs for name in attrs))
    found = ", ".join(names) or "none"
    if chosen is not None:
        if chosen not in names:
            raise DataError(f"{where}: no region attribute {chosen!r} (found: {found})")
        return chosen
    candidates = names if len(names) == 1 else [n for n in names if n in _CLASS_NAMES]
    if len(candidates) != 1:
        raise DataError(
            f"{where}: cannot tell which region attribute is the class (found: {found}); "
            "name one with --class-attr"
        )
    return candidates[0]


def class_value(attrs: Any, key: str, source: str) -> str:
    """A text/dropdown/radio value, or the one ticked option of a checkbox attribute."""
    if not isinstance(attrs, dict) or key not in attrs:
        raise DataError(f"{source}: region has no {key!r} attribute")
    value = attrs[key]
    if isinstance(value, dict):
        ticked = [option for option, on in value.items() if on is True]
        if len(ticked) != 1:
            raise DataError(
                f"{source}: {key!r} must have exactly one option ticked, has {ticked or 'none'}"
            )
        value = ticked[0]
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{source}: {key!r} has no class value ({value!r})")
    return value.strip()
