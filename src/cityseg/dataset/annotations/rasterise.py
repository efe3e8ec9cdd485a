"""One rasteriser for every annotation format, pixel-for-pixel equal to pycocotools' polygons.

COCO's `annToMask` is the reference for hand-drawn polygons, so `polygon_mask` is a numpy
port of pycocotools' `rleFrPoly` (maskApi.c): the outline is walked on a 5x finer grid,
its crossings with pixel columns become run starts and ends, and runs toggle the mask in
column-major order. The result is (nearly) "pixel centre (c + .5, r + .5) inside". Rects,
circles and ellipses become polygons first, so every shape follows the same convention.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from cityseg.dataset.annotations.shapes import Circle, Ellipse, Point, Polygon, Rect, Region, Shape
from cityseg.errors import DataError

log = logging.getLogger(__name__)
_SCALE = 5.0


@dataclass
class RasterStats:
    """Counts a caller can report: regions reaching outside the image, polygons skipped."""

    clipped: int = 0
    degenerate: int = 0
    first_degenerate: str | None = None
    """Where the first skipped polygon is, so a summary line can point at an example."""


def rasterise(
    regions: Iterable[Region],
    height: int,
    width: int,
    class_ids: Mapping[str, int],
    stats: RasterStats | None = None,
) -> np.ndarray:
    """Paint `regions` in order onto a uint8 HxW map of class ids, background 0."""
    stats = stats if stats is not None else RasterStats()
    out = np.zeros((height, width), np.uint8)
    for region in regions:
        class_id = class_ids.get(region.label)
        if class_id is None:
            known = ", ".join(class_ids) or "none"
            raise DataError(f"{region.source}: class {region.label!r} is not one of: {known}")
        points = shape_points(region.shape)
        if len(points) < 3:
            stats.degenerate += 1
            stats.first_degenerate = stats.first_degenerate or region.source
            log.debug("%s: polygon with %d point(s) skipped", region.source, len(points))
            continue
        if not inside(points, height, width):
            stats.clipped += 1
        out[polygon_mask(points, height, width)] = class_id
    return out


def shape_points(shape: Shape) -> Sequence[Point]:
    """A shape's outline as polygon vertices; rects use pycocotools' `frBbox` corner order."""
    if isinstance(shape, Polygon):
        return shape.points
    if isinstance(shape, Rect):
        x0, y0, x1, y1 = shape.x, shape.y, shape.x + shape.width, shape.y + shape.height
        return ((x0, y0), (x0, y1), (x1, y1), (x1, y0))
    if isinstance(shape, Circle):
        return ellipse_points(Ellipse(shape.cx, shape.cy, shape.r, shape.r))
    return ellipse_points(shape)


def ellipse_points(e: Ellipse) -> list[Point]:
    """Vertices about 1 px apart, so the polygon strays under 1/8 px from the true curve."""
    n = max(16, math.ceil(2 * math.pi * max(abs(e.rx), abs(e.ry))))
    phi = np.linspace(0.0, 2 * math.pi, n, endpoint=False)
    cos_t, sin_t = math.cos(e.theta), math.sin(e.theta)
    dx, dy = e.rx * np.cos(phi), e.ry * np.sin(phi)
    xs = e.cx + dx * cos_t - dy * sin_t
    ys = e.cy + dx * sin_t + dy * cos_t
    return list(zip(xs.tolist(), ys.tolist(), strict=True))


def polygon_mask(points: Sequence[Point], height: int, width: int) -> np.ndarray:
    """A bool HxW mask of one polygon, equal to pycocotools' `frPyObjects` + `decode`."""
    xy = _clip_far(np.asarray(points, np.float64).reshape(-1, 2), height, width)
    mask = np.zeros(height * width, bool)
    if len(xy) < 3:
        return mask.reshape(width, height).T
    u, v = _outline(np.trunc(_SCALE * xy + 0.5).astype(np.int64))
    cols, rows = _column_crossings(u, v, height, width)
    if len(cols):
        first = int(cols.min()) * height
        toggles = np.bincount(cols * height + rows - first, minlength=height * width - first + 1)
        mask[first:] = (np.cumsum(toggles[: height * width - first]) & 1).astype(bool)
    return mask.reshape(width, height).T


def _outline(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every point of the upsampled outline, one per step along each edge's major axis."""
    xs, ys = p[:, 0], p[:, 1]
    xe, ye = np.roll(xs, -1), np.roll(ys, -1)
    dx, dy = np.abs(xe - xs), np.abs(ye - ys)
    major_x = dx >= dy
    flip = (major_x & (xs > xe)) | (~major_x & (ys > ye))
    xs, xe = np.where(flip, xe, xs), np.where(flip, xs, xe)
    ys, ye = np.where(flip, ye, ys), np.where(flip, ys, ye)
    steps = np.maximum(dx, dy)
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = np.where(major_x, (ye - ys) / dx, (xe - xs) / dy)
    slope = np.where(steps == 0, 0.0, slope)
    n = steps + 1
    edge = np.repeat(np.arange(len(p)), n)
    d = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
    t = np.where(flip[edge], steps[edge] - d, d)
    on_x = major_x[edge]
    along = np.trunc(np.where(on_x, ys[edge], xs[edge]) + slope[edge] * t + 0.5).astype(np.int64)
    u = np.where(on_x, t + xs[edge], along)
    v = np.where(on_x, along, t + ys[edge])
    return u, v


def _column_crossings(
    u: np.ndarray, v: np.ndarray, height: int, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """Where the outline crosses each pixel column's centre line: (column, first row inside)."""
    moved = np.flatnonzero(u[1:] != u[:-1]) + 1
    u0, u1, v0, v1 = u[moved - 1], u[moved], v[moved - 1], v[moved]
    xd = (np.where(u1 < u0, u1, u1 - 1) + 0.5) / _SCALE - 0.5
    keep = (np.floor(xd) == xd) & (xd >= 0) & (xd <= width - 1)
    yd = (np.where(v1 < v0, v1, v0)[keep] + 0.5) / _SCALE - 0.5
    rows = np.ceil(np.clip(yd, 0, height)).astype(np.int64)
    return xd[keep].astype(np.int64), rows


def inside(points: Sequence[Point], height: int, width: int) -> bool:
    xy = np.asarray(points, np.float64)
    return bool((xy >= 0).all() and (xy[:, 0] <= width).all() and (xy[:, 1] <= height).all())


def _clip_far(xy: np.ndarray, height: int, width: int) -> np.ndarray:
    """Clip (Sutherland-Hodgman) only polygons reaching far outside, to bound the work.

    A stray coordinate like 1e9 would make the upsampled outline impossibly long. Clipping
    moves vertices off pycocotools' 1/5 px grid, so edges inside the image may then differ
    by a pixel; within the 16-image-sizes margin pycocotools is reproduced exactly.
    """
    margin = 16.0 * max(height, width)
    lo, hi = -margin, margin + max(height, width)
    if len(xy) == 0 or (xy.min() >= lo and xy.max() <= hi):
        return xy
    for axis, bound, keep_above in ((0, lo, True), (0, hi, False), (1, lo, True), (1, hi, False)):
        xy = _clip_half_plane(xy, axis, bound, keep_above)
        if len(xy) == 0:
            break
    return xy


def _clip_half_plane(xy: np.ndarray, axis: int, bound: float, keep_above: bool) -> np.ndarray:
    out: list[np.ndarray] = []
    for a, b in zip(xy, np.roll(xy, -1, axis=0), strict=True):
        a_in = (a[axis] >= bound) if keep_above else (a[axis] <= bound)
        b_in = (b[axis] >= bound) if keep_above else (b[axis] <= bound)
        if a_in:
            out.append(a)
        if a_in != b_in:
            out.append(a + (b - a) * ((bound - a[axis]) / (b[axis] - a[axis])))
    return np.asarray(out, np.float64).reshape(-1, 2)
