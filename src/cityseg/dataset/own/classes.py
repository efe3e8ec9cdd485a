"""The class list of an own dataset: names, ids, palette, ignore and void, decided once.

Class 0 is always the background (every pixel no region covers). The other ids follow
`--classes` when given, else the order in which labels first appear, so the same files
give the same ids on every machine. An ignore class is painted 255, the value training
and evaluation leave out, so it never becomes a class of its own.
"""

from __future__ import annotations

import colorsys
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cityseg.config import Background
from cityseg.dataset.annotations._common import load_json
from cityseg.errors import DataError, UsageError

BACKGROUND = "background"
IGNORE_VALUE = 255
BACKGROUND_ALIASES = frozenset({"background", "_background_", "__background__"})
"""Names tools give class 0 in their own class lists (LabelMe's labels.txt, VOC)."""
IGNORE_ALIASES = frozenset({"__ignore__"})
"""LabelMe's labels.txt name for regions to leave out of training."""
Colour = tuple[int, int, int]


@dataclass(frozen=True)
class ClassTable:
    names: tuple[str, ...]
    """Index = class id; names[0] is the background."""
    palette: np.ndarray
    ignore: str | None
    background: Background
    origin: str
    """How the list was decided, for the summary line ("given by --classes", ...)."""

    @property
    def ids(self) -> dict[str, int]:
        """Region label -> the value painted for it (255 for the ignore class)."""
        table = {name: index for index, name in enumerate(self.names) if index}
        if self.ignore is not None:
            table[self.ignore] = IGNORE_VALUE
        return table

    def check(self, label: str, source: str) -> None:
        if label not in self.ids:
            known = ", ".join(self.names[1:]) + (
                f" (ignored: {self.ignore})" if self.ignore else ""
            )
            raise DataError(
                f"{source}: class {label!r} is not one of: {known}; "
                "add it to --classes or pass it as --ignore"
            )

    def to_manifest(self) -> dict[str, Any]:
        return {
            "classes": list(self.names),
            "palette": self.palette.tolist(),
            "ignore_index": IGNORE_VALUE,
            "ignore_class": self.ignore,
            "void_classes": [0] if self.background is Background.void else [],
        }


def resolve_classes(
    found: Sequence[str],
    *,
    given: Sequence[str] | None = None,
    ignore: str | None = None,
    palette: Mapping[str, Colour] | None = None,
    background: Background = Background.cls,
    found_order: str = "in order of first appearance",
) -> ClassTable:
    """The table for labels `found` (in `found_order`) or the `given` list."""
    origin = "given by --classes" if given is not None else found_order
    names = list(given) if given is not None else list(found)
    if ignore is None:
        ignore = next((n for n in names if n in IGNORE_ALIASES), None)
    names = [n for n in names if n not in BACKGROUND_ALIASES and n != ignore]
    _check_names(names)
    if not names:
        raise DataError("the annotations hold no region of any class; nothing to learn")
    table = (BACKGROUND, *names)
    colours = class_palette(table, palette or {})
    return ClassTable(table, colours, ignore, background, origin)


def _check_names(names: Sequence[str]) -> None:
    seen: set[str] = set()
    for name in names:
        if not name or name != name.strip():
            raise UsageError(f"class name {name!r} is empty or has surrounding spaces")
        if name in seen:
            raise UsageError(f"class {name!r} is listed twice")
        seen.add(name)
    if len(names) >= IGNORE_VALUE - 1:
        raise UsageError(f"{len(names)} classes: masks are uint8, at most 253 besides background")


def parse_class_list(value: str) -> list[str]:
    """`--classes`: a comma list, or a file with one name per line or a JSON list."""
    path = Path(value)
    if not path.is_file():
        return [name.strip() for name in value.split(",") if name.strip()]
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        try:
            names = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from exc
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise DataError(f"{path}: a classes JSON file must hold a list of names")
        return [n.strip() for n in names]
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def read_palette(path: Path) -> dict[str, Colour]:
    """`--palette FILE`: JSON {class name: [r, g, b]}."""
    if not path.is_file():
        raise UsageError(f"palette file {path} does not exist")
    raw = load_json(path)
    if not isinstance(raw, dict) or not raw:
        raise DataError(f"{path}: a palette must be a JSON object of name: [r, g, b]")
    return {str(name): _colour(value, f"{path}: {name}") for name, value in raw.items()}


def _colour(value: Any, source: str) -> Colour:
    ok = isinstance(value, list) and len(value) == 3
    if not ok or not all(isinstance(c, int) and not isinstance(c, bool) for c in value):
        raise DataError(f"{source}: a colour must be [r, g, b] integers, got {value!r}")
    if not all(0 <= c <= 255 for c in value):
        raise DataError(f"{source}: colour values must be 0..255, got {value!r}")
    return (value[0], value[1], value[2])


def class_palette(names: Sequence[str], given: Mapping[str, Colour]) -> np.ndarray:
    """Given colours where named, black for an unnamed background, distinct ones for the rest."""
    taken = set(given.values())
    generated = iter(distinct_colours(len(names), taken | {(0, 0, 0)}))
    colours = [
        given.get(name) or ((0, 0, 0) if index == 0 else next(generated))
        for index, name in enumerate(names)
    ]
    return np.array(colours, dtype=np.uint8).reshape(len(names), 3)


def distinct_colours(count: int, avoid: set[Colour]) -> list[Colour]:
    """Hues a golden-ratio step apart, alternating saturation and value: neighbours differ
    strongly however many classes there are, and the list is the same on every run."""
    colours: list[Colour] = []
    step = 0
    while len(colours) < count:
        hue = (step * 0.618033988749895) % 1.0
        sat = 0.85 if step % 2 == 0 else 0.55
        val = 0.95 if (step // 2) % 2 == 0 else 0.7
        r, g, b = (round(c * 255) for c in colorsys.hsv_to_rgb(hue, sat, val))
        step += 1
        if (r, g, b) not in avoid:
            colours.append((r, g, b))
            avoid = avoid | {(r, g, b)}
    return colours
