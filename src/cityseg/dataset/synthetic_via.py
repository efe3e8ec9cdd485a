"""A small, deterministic VIA (VGG Image Annotator) project: photos plus a VIA 2 CSV export.

`cityseg demo --format via` and the tests need a hand-annotation project that nobody has
to download or license, shaped exactly like what a user brings: JPEG "photos" named like
camera files and the CSV that VIA 2's "Export Annotations (as csv)" writes, with every
shape VIA draws (polygon, rect, circle, rotated ellipse), overlapping regions (later ones
paint over earlier ones) and images left without any region.

Regions are decided first, as the VIA shape attributes written to the CSV, and each
object is painted into the photo through the mask cityseg's own rasteriser makes of that
very shape, so image and label agree pixel for pixel before JPEG compression. Each class
has its own saturated hue range while the drawn backgrounds (gradients, stripes, blobs,
noise) stay muted or in other hues, so a tiny model can learn the task in a few epochs
without it being a plain colour threshold: clutter has the classes' shapes too.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from cityseg.dataset.annotations.rasterise import rasterise
from cityseg.dataset.annotations.shapes import Region
from cityseg.dataset.annotations.via import CSV_COLUMNS, read_via
from cityseg.dataset.annotations.via_shapes import parse_shape
from cityseg.errors import UsageError
from cityseg.fsutil import atomic_write_bytes

CSV_NAME = "via_export_csv.csv"
"""The file name VIA 2 gives its CSV export."""

JPEG_QUALITY = 90

MIN_SIZE = 32
"""Below this the objects (a tenth of the image and up) have too few pixels to learn."""

CLASS_HUES: tuple[tuple[int, int], ...] = ((2, 16), (100, 122), (140, 160), (82, 94))
"""Per class, in order, its OpenCV hue range (0-179): red-orange, blue, magenta, cyan.

Objects are strongly saturated; clutter is either muted (any hue) or yellow-green, hues
no class uses, so colour is a reliable but not the only cue.
"""

ROUND_KINDS = ("circle", "ellipse")
ANGULAR_KINDS = ("rect", "triangle", "pentagon")
"""Classes alternate between these shape families: the 1st ("ball") round, the 2nd
("sign") angular, and so on; triangles and pentagons are VIA polygons."""

_EMPTY_IMAGES = 2
_OVERLAP_CHANCE = 0.35


@dataclass(frozen=True)
class ViaSpec:
    """What to generate; checked on creation so a bad demo option fails before any write."""

    images: int = 24
    height: int = 96
    width: int = 128
    seed: int = 0
    classes: tuple[str, ...] = ("ball", "sign")

    def __post_init__(self) -> None:
        if self.height < MIN_SIZE or self.width < MIN_SIZE:
            raise UsageError(
                f"VIA demo images must be at least {MIN_SIZE}x{MIN_SIZE} pixels "
                f"(got width {self.width}, height {self.height})"
            )
        if not 1 <= self.images <= 9999:
            raise UsageError(f"the VIA demo needs 1 to 9999 images (got {self.images})")
        if self.seed < 0:
            raise UsageError(f"the seed must be zero or positive (got {self.seed})")
        names = [str(name).strip() for name in self.classes]
        if not 1 <= len(names) <= len(CLASS_HUES) or len(set(names)) != len(names):
            raise UsageError(
                f"the VIA demo needs 1 to {len(CLASS_HUES)} distinct class names "
                f"(got {list(self.classes)})"
            )
        if not all(names):
            raise UsageError("class names must not be empty")
        # VIA readers strip class values, so the names are stored stripped too.
        object.__setattr__(self, "classes", tuple(names))


@dataclass(frozen=True)
class ViaProject:
    """The written project; `masks` maps file name to uint8 HxW class ids (0 background)."""

    folder: Path
    csv: Path
    masks: dict[str, np.ndarray] = field(repr=False)


@dataclass
class _Object:
    """One planned region: its VIA shape attributes and class, plus where it sits."""

    attrs: dict[str, Any]
    label: str
    class_index: int


def write_via_project(folder: Path, spec: ViaSpec = ViaSpec()) -> ViaProject:
    """Write `spec.images` JPEGs and their VIA 2 CSV into `folder`; return the ground truth.

    The returned masks are what `read_via` + `rasterise` make of the CSV, i.e. exactly
    what `cityseg prepare` will produce, and they are checked against the painted pixels.
    """
    rng = np.random.default_rng(spec.seed)
    class_ids = {name: i + 1 for i, name in enumerate(spec.classes)}
    counts = _object_counts(rng, spec.images)
    queue = _kind_queue(rng, spec)
    folder.mkdir(parents=True, exist_ok=True)
    lines = [",".join(CSV_COLUMNS)]
    painted: dict[str, np.ndarray] = {}
    for index, count in enumerate(counts):
        name = f"IMG_{index + 1:04d}.jpg"
        objects = _plan_objects(rng, spec, count, queue)
        image, painted[name] = _render(rng, spec, objects, class_ids)
        data = _encode_jpeg(image)
        atomic_write_bytes(folder / name, data)
        lines.extend(_csv_lines(name, len(data), objects))
    csv_path = folder / CSV_NAME
    atomic_write_bytes(csv_path, ("\n".join(lines) + "\n").encode("utf-8"))
    masks = _read_back(csv_path, spec, class_ids)
    if masks.keys() != painted.keys() or any(
        not np.array_equal(masks[k], painted[k]) for k in masks
    ):  # pragma: no cover - would mean the CSV does not say what was painted
        raise RuntimeError(f"{csv_path} does not read back to the painted masks")
    return ViaProject(folder, csv_path, masks)


def _read_back(csv_path: Path, spec: ViaSpec, class_ids: dict[str, int]) -> dict[str, np.ndarray]:
    """The ground truth through cityseg's own reader and rasteriser, as `prepare` sees it."""
    result = read_via(csv_path)
    return {
        image.file_name: rasterise(image.regions, spec.height, spec.width, class_ids)
        for image in result.images
    }


def _object_counts(rng: np.random.Generator, images: int) -> list[int]:
    """1-3 objects per image, except a couple of images (never all) left without regions."""
    counts = rng.integers(1, 4, size=images).tolist()
    empty = rng.choice(images, size=min(_EMPTY_IMAGES, images - 1), replace=False)
    for index in empty.tolist():
        counts[index] = 0
    return [int(c) for c in counts]


def _class_kinds(class_index: int) -> tuple[str, ...]:
    return ROUND_KINDS if class_index % 2 == 0 else ANGULAR_KINDS


def _kind_queue(rng: np.random.Generator, spec: ViaSpec) -> list[tuple[int, str]]:
    """Every (class, shape kind) once, shuffled: the first objects drawn, so all appear."""
    pairs = [(i, kind) for i in range(len(spec.classes)) for kind in _class_kinds(i)]
    order = rng.permutation(len(pairs)).tolist()
    return [pairs[i] for i in order]


def _plan_objects(
    rng: np.random.Generator, spec: ViaSpec, count: int, queue: list[tuple[int, str]]
) -> list[_Object]:
    """`count` shapes; some are centred near the previous one so that they overlap."""
    objects: list[_Object] = []
    size = min(spec.height, spec.width)
    centre = (0.0, 0.0)
    for _ in range(count):
        if queue:
            class_index, kind = queue.pop(0)
        else:
            class_index = int(rng.integers(len(spec.classes)))
            kinds = _class_kinds(class_index)
            kind = kinds[int(rng.integers(len(kinds)))]
        if objects and rng.random() < _OVERLAP_CHANCE:
            jitter = rng.uniform(-0.18, 0.18, size=2) * size
            centre = (centre[0] + float(jitter[0]), centre[1] + float(jitter[1]))
        else:
            centre = (
                float(rng.uniform(0.12, 0.88) * spec.width),
                float(rng.uniform(0.12, 0.88) * spec.height),
            )
        attrs = _shape(rng, kind, centre, size)
        objects.append(_Object(attrs, spec.classes[class_index], class_index))
    return objects


def _shape(
    rng: np.random.Generator, kind: str, centre: tuple[float, float], size: int
) -> dict[str, Any]:
    """VIA 2 shape attributes, rounded as VIA stores them (whole pixels for clicked points)."""
    cx, cy = round(centre[0]), round(centre[1])
    radius = float(rng.uniform(0.1, 0.25) * size)
    if kind == "circle":
        return {"name": "circle", "cx": cx, "cy": cy, "r": _num(radius)}
    if kind == "ellipse":
        ry = radius * float(rng.uniform(0.45, 0.85))
        theta = float(rng.uniform(-math.pi, math.pi))
        return {
            "name": "ellipse",
            **{"cx": cx, "cy": cy, "rx": _num(radius), "ry": _num(ry)},
            "theta": _num(theta, 3),
        }
    if kind == "rect":
        w, h = (int(round(v)) for v in rng.uniform(0.2, 0.5, size=2) * size)
        return {"name": "rect", "x": cx - w // 2, "y": cy - h // 2, "width": w, "height": h}
    return _ngon(rng, 3 if kind == "triangle" else 5, centre, radius * 1.2)


def _ngon(
    rng: np.random.Generator, sides: int, centre: tuple[float, float], radius: float
) -> dict[str, Any]:
    """A jittered regular polygon with integer vertices, as VIA stores clicked points."""
    start = float(rng.uniform(0, 2 * math.pi))
    step = 2 * math.pi / sides
    angles = start + step * (np.arange(sides) + rng.uniform(-0.15, 0.15, sides))
    radii = radius * rng.uniform(0.85, 1.1, sides)
    xs = np.rint(centre[0] + radii * np.cos(angles)).astype(int).tolist()
    ys = np.rint(centre[1] + radii * np.sin(angles)).astype(int).tolist()
    return {"name": "polygon", "all_points_x": xs, "all_points_y": ys}


def _num(value: float, digits: int = 2) -> float | int:
    """Round like VIA's JSON: a whole number is written without a decimal point."""
    rounded = round(value, digits)
    return int(rounded) if rounded == int(rounded) else rounded


def _render(
    rng: np.random.Generator, spec: ViaSpec, objects: list[_Object], class_ids: dict[str, int]
) -> tuple[np.ndarray, np.ndarray]:
    """The RGB photo and the class map painted with it, object by object in CSV order."""
    h, w = spec.height, spec.width
    canvas = _background(rng, h, w)
    label = np.zeros((h, w), np.uint8)
    for i, obj in enumerate(objects):
        mask = rasterise([_region(obj, f"object {i}")], h, w, class_ids) > 0
        _paint(rng, canvas, mask, _class_colour(rng, obj.class_index))
        label[mask] = class_ids[obj.label]
    return _finish(rng, canvas), label


def _region(obj: _Object, source: str) -> Region:
    """The region `read_via` will make of this object, parsed by the same function."""
    shape = parse_shape(obj.attrs, source)
    if shape is None:  # pragma: no cover - every planned shape has an area
        raise RuntimeError(f"{source}: planned shape {obj.attrs['name']!r} has no area")
    return Region(obj.label, shape, source)


def _hsv_rgb(hue: float, sat: float, val: float) -> np.ndarray:
    """One OpenCV HSV colour (hue 0-179) as float RGB."""
    pixel = np.array([[[hue, sat, val]]], np.uint8)
    rgb: np.ndarray = cv2.cvtColor(pixel, cv2.COLOR_HSV2RGB)
    return np.asarray(rgb[0, 0], np.float32)


def _clutter_colour(rng: np.random.Generator) -> np.ndarray:
    """Muted colours of any hue, or yellow-greens that no class uses."""
    if rng.random() < 0.7:
        return _hsv_rgb(rng.uniform(0, 180), rng.uniform(0, 90), rng.uniform(50, 230))
    return _hsv_rgb(rng.uniform(24, 72), rng.uniform(80, 200), rng.uniform(80, 220))


def _class_colour(rng: np.random.Generator, class_index: int) -> np.ndarray:
    low, high = CLASS_HUES[class_index]
    return _hsv_rgb(rng.uniform(low, high), rng.uniform(165, 250), rng.uniform(140, 245))


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A float RGB scene: a two-colour gradient in a random direction, then clutter."""
    c0, c1 = _clutter_colour(rng), _clutter_colour(rng)
    angle = float(rng.uniform(0, 2 * math.pi))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    t = xx * math.cos(angle) + yy * math.sin(angle)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    canvas = c0 * (1 - t[..., None]) + c1 * t[..., None]
    for _ in range(int(rng.integers(2, 7))):
        _clutter(rng, canvas)
    return np.ascontiguousarray(canvas, np.float32)


def _clutter(rng: np.random.Generator, canvas: np.ndarray) -> None:
    """One stripe, blob or box in a background colour: shapes alone do not give classes."""
    h, w = canvas.shape[:2]
    colour = tuple(float(c) for c in _clutter_colour(rng))
    x0, x1 = (int(v) for v in rng.integers(-w // 4, w + w // 4, size=2))
    y0, y1 = (int(v) for v in rng.integers(-h // 4, h + h // 4, size=2))
    kind = int(rng.integers(3))
    if kind == 0:
        thickness = int(rng.integers(2, 8))
        cv2.line(canvas, (x0, y0), (x1, y1), colour, thickness, cv2.LINE_AA)
    elif kind == 1:
        axes = (int(rng.integers(4, w // 5)), int(rng.integers(4, h // 5)))
        angle = float(rng.uniform(0, 180))
        cv2.ellipse(canvas, (x0, y0), axes, angle, 0, 360, colour, -1, cv2.LINE_AA)
    else:
        x1, y1 = x0 + int(rng.integers(6, w // 4)), y0 + int(rng.integers(6, h // 4))
        cv2.rectangle(canvas, (x0, y0), (x1, y1), colour, -1, cv2.LINE_AA)


def _paint(
    rng: np.random.Generator, canvas: np.ndarray, mask: np.ndarray, colour: np.ndarray
) -> None:
    """Fill exactly the mask's pixels with `colour`, shaded by a gentle linear light."""
    if not mask.any():
        return
    rows, cols = np.nonzero(mask)
    angle = float(rng.uniform(0, 2 * math.pi))
    along = (cols - cols.mean()) * math.cos(angle) + (rows - rows.mean()) * math.sin(angle)
    extent = max(float(np.abs(along).max()), 1.0)
    shade = 1.0 + float(rng.uniform(0.05, 0.2)) * along / extent
    canvas[rows, cols] = colour[None, :] * shade[:, None].astype(np.float32)


def _finish(rng: np.random.Generator, canvas: np.ndarray) -> np.ndarray:
    """Overall exposure and sensor noise over the whole photo, then 8-bit RGB."""
    h, w = canvas.shape[:2]
    exposure = float(rng.uniform(0.88, 1.08))
    noise = rng.normal(0.0, float(rng.uniform(3.0, 8.0)), size=(h, w, 3))
    return np.clip(canvas * exposure + noise, 0, 255).round().astype(np.uint8)


def _encode_jpeg(image: np.ndarray) -> bytes:
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, buffer = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:  # pragma: no cover - OpenCV fails only on unsupported dtypes
        raise RuntimeError(f"cannot encode an array of shape {image.shape} as JPEG")
    return buffer.tobytes()


def _csv_lines(name: str, size: int, objects: list[_Object]) -> list[str]:
    """VIA 2's CSV rows for one image: one per region, or the `"{}"` row when it has none."""
    prefix = f"{name},{size},{_cell({})}"
    if not objects:
        return [f"{prefix},0,0,{_cell({})},{_cell({})}"]
    return [
        f"{prefix},{len(objects)},{i},{_cell(obj.attrs)},{_cell({'class': obj.label})}"
        for i, obj in enumerate(objects)
    ]


def _cell(obj: dict[str, Any]) -> str:
    """A JSON cell as VIA writes it: compact JSON, always quoted, inner quotes doubled.

    For the non-empty cells this is byte for byte what `csv.writer` (QUOTE_MINIMAL) writes;
    VIA also quotes `{}`, which QUOTE_MINIMAL would not, so the quoting is done here.
    """
    text = json.dumps(obj, separators=(",", ":"))
    return '"' + text.replace('"', '""') + '"'
