"""The one model every annotation reader produces, so rasterising and checks are written once.

Coordinates are continuous image coordinates in pixels: x to the right, y down, the pixel
in column c and row r covering [c, c + 1) x [r, r + 1). `source` strings (file plus line
or key) travel with each item so a later error can say where the bad value came from.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

Point = tuple[float, float]


@dataclass(frozen=True)
class Polygon:
    """A closed polygon; polylines are read as polygons too (VIA draws them as areas)."""

    points: tuple[Point, ...]


@dataclass(frozen=True)
class Rect:
    x: float
    y: float
    width: float
    height: float


@dataclass(frozen=True)
class Circle:
    cx: float
    cy: float
    r: float


@dataclass(frozen=True)
class Ellipse:
    """`theta` is the rotation in radians, clockwise on screen (y points down), as VIA 2."""

    cx: float
    cy: float
    rx: float
    ry: float
    theta: float = 0.0


Shape = Polygon | Rect | Circle | Ellipse


@dataclass(frozen=True)
class Region:
    label: str
    shape: Shape
    source: str = ""


@dataclass(frozen=True)
class ImageAnnotation:
    """One image's regions in paint order (later regions paint over earlier ones).

    `width`/`height` are None where the format does not store them (VIA); `image_data` is
    the image embedded in the annotation file (LabelMe's base64 `imageData`), decoded.
    """

    file_name: str
    regions: list[Region]
    width: int | None
    height: int | None
    source: str
    image_data: bytes | None = field(default=None, repr=False)


@dataclass
class ReadResult:
    """What a reader found, plus counts of regions it skipped and why (e.g. "point")."""

    images: list[ImageAnnotation]
    skipped: Counter[str] = field(default_factory=Counter)

    def labels(self) -> list[str]:
        """The labels in order of first appearance: a stable default class list."""
        seen: dict[str, None] = {}
        for image in self.images:
            for region in image.regions:
                seen.setdefault(region.label, None)
        return list(seen)

    def warnings(self) -> list[str]:
        return [f"skipped {n} {why} region(s)" for why, n in sorted(self.skipped.items())]
