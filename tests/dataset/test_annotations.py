"""Annotation readers and the rasteriser, checked against pycocotools and Pillow references.

Every test writes real files into tmp_path. pycocotools is only the reference here: the
package's own RLE decoding and polygon filling must agree with it pixel for pixel.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from PIL import Image, ImageDraw

from cityseg.dataset.annotations.coco import read_coco
from cityseg.dataset.annotations.labelme import read_labelme
from cityseg.dataset.annotations.rasterise import RasterStats, polygon_mask, rasterise
from cityseg.dataset.annotations.shapes import Circle, Ellipse, Polygon, Rect, Region
from cityseg.dataset.annotations.via import CSV_COLUMNS, read_via
from cityseg.errors import DataError

# pycocotools (the reference) calls numpy's __array__ the pre-2.0 way.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

POLY = {"name": "polygon", "all_points_x": [10, 40, 30], "all_points_y": [5, 8, 30]}
SHAPES: list[dict[str, Any]] = [
    POLY,
    {"name": "polyline", "all_points_x": [50, 70, 60, 52], "all_points_y": [5, 5, 20, 18]},
    {"name": "rect", "x": 5, "y": 40, "width": 20, "height": 10},
    {"name": "circle", "cx": 60, "cy": 50, "r": 8},
    {"name": "ellipse", "cx": 30, "cy": 60, "rx": 10, "ry": 4, "theta": 0.5},
    {"name": "point", "cx": 3, "cy": 3},
]


def write_csv(path: Path, rows: list[list[Any]], first: str = "filename") -> Path:
    """As VIA writes it: compact JSON cells, always quoted, inner quotes doubled."""

    def cell(value: Any) -> str:
        if isinstance(value, dict):
            return '"' + json.dumps(value, separators=(",", ":")).replace('"', '""') + '"'
        return str(value)

    lines = [",".join([first, *CSV_COLUMNS[1:]])] + [",".join(map(cell, row)) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def via_rows(shapes: list[dict[str, Any]], attrs: dict[str, Any] | None = None) -> list[list[Any]]:
    attrs = attrs or {"class": "car"}
    rows = [["a.jpg", 100, {}, len(shapes), i, s, attrs] for i, s in enumerate(shapes)]
    return [*rows, ["empty.jpg", 50, {}, 0, 0, {}, {}]]


def via_json(shapes: list[dict[str, Any]], as_dict: bool = False) -> dict[str, Any]:
    regions: Any = [{"shape_attributes": s, "region_attributes": {"label": "dog"}} for s in shapes]
    if as_dict:
        regions = {str(i): r for i, r in enumerate(regions)}
    empty = {"filename": "empty.jpg", "size": 50, "regions": [], "file_attributes": {}}
    return {
        "a.jpg100": {"filename": "a.jpg", "size": 100, "regions": regions, "file_attributes": {}},
        "empty.jpg50": empty,
    }


def check_via_shapes(result: Any, label: str, theta: float = 0.5) -> None:
    assert [image.file_name for image in result.images] == ["a.jpg", "empty.jpg"]
    regions, empty = result.images[0].regions, result.images[1].regions
    assert empty == [] and result.skipped == {"point": 1}
    assert [r.label for r in regions] == [label] * 5
    assert regions[0].shape == Polygon(((10, 5), (40, 8), (30, 30)))
    assert regions[1].shape == Polygon(((50, 5), (70, 5), (60, 20), (52, 18)))
    assert regions[2].shape == Rect(5, 40, 20, 10)
    assert regions[3].shape == Circle(60, 50, 8)
    assert regions[4].shape == Ellipse(30, 60, 10, 4, theta)


def test_via2_csv_reads_every_shape_and_the_region_less_row(tmp_path: Path) -> None:
    result = read_via(write_csv(tmp_path / "via.csv", via_rows(SHAPES)))
    check_via_shapes(result, "car")
    assert result.images[0].regions[0].source == f"{tmp_path / 'via.csv'}:2"


def test_via1_csv_hash_header_and_ellipse_without_theta(tmp_path: Path) -> None:
    shapes = [*SHAPES[:4], {k: v for k, v in SHAPES[4].items() if k != "theta"}, SHAPES[5]]
    path = write_csv(tmp_path / "via1.csv", via_rows(shapes), first="#filename")
    check_via_shapes(read_via(path), "car", theta=0.0)
    text = path.read_text()
    assert '"{""class"":""car""}"' in text and 'empty.jpg,50,"{}",0,0,"{}","{}"' in text


@pytest.mark.parametrize("layout", ["list", "via1-dict", "project"])
def test_via_json_exports(tmp_path: Path, layout: str) -> None:
    data = via_json(SHAPES, as_dict=layout == "via1-dict")
    if layout == "project":
        data = {"_via_settings": {}, "_via_img_metadata": data, "_via_attributes": {}}
    path = tmp_path / "via.json"
    path.write_text(json.dumps(data))
    result = read_via(path)
    check_via_shapes(result, "dog")
    assert result.images[0].regions[2].source == f"{path}: a.jpg100/regions/2"


def test_via1_dict_regions_follow_their_numeric_keys(tmp_path: Path) -> None:
    data = via_json(SHAPES[:3] * 4, as_dict=True)
    regions = data["a.jpg100"]["regions"]
    data["a.jpg100"]["regions"] = {k: regions[k] for k in sorted(regions)}  # "10" before "2"
    (tmp_path / "v.json").write_text(json.dumps(data))
    shapes = [r.shape for r in read_via(tmp_path / "v.json").images[0].regions]
    assert shapes == [r.shape for r in read_via_shapes(tmp_path, SHAPES[:3] * 4)]


def read_via_shapes(tmp_path: Path, shapes: list[dict[str, Any]]) -> list[Region]:
    return read_via(write_csv(tmp_path / "ref.csv", via_rows(shapes))).images[0].regions


@pytest.mark.parametrize(
    ("attrs", "class_attr", "label"),
    [
        ({"type": "road"}, None, "road"),
        ({"type": "road", "name": "car", "note": "x"}, None, "car"),
        ({"type": "road", "label": "car"}, "type", "road"),
        ({"kind": {"bus": True, "car": False}}, None, "bus"),
        ({"kind": 3}, None, "3"),
    ],
)
def test_via_class_attribute(
    tmp_path: Path, attrs: dict[str, Any], class_attr: str | None, label: str
) -> None:
    path = write_csv(tmp_path / "v.csv", via_rows([POLY], attrs))
    assert read_via(path, class_attr).images[0].regions[0].label == label


@pytest.mark.parametrize(
    ("attrs", "class_attr", "message"),
    [
        ({"type": "a", "colour": "b"}, None, "which region attribute is the class (found: type"),
        ({"class": "a", "label": "b"}, None, "(found: class, label)"),
        ({"type": "a"}, "class", "no region attribute 'class' (found: type)"),
        ({"kind": {"bus": True, "car": True}}, None, "exactly one option ticked"),
        ({"kind": ""}, None, "'kind' has no class value"),
    ],
)
def test_via_class_attribute_errors(
    tmp_path: Path, attrs: dict[str, Any], class_attr: str | None, message: str
) -> None:
    path = write_csv(tmp_path / "v.csv", via_rows([POLY], attrs))
    with pytest.raises(DataError, match=rf"^{tmp_path}.*{__import__('re').escape(message)}"):
        read_via(path, class_attr)


def write_labelme(path: Path, shapes: list[dict[str, Any]], data: bytes | None = None) -> Path:
    doc: dict[str, Any] = {
        "version": "5.4.1",
        "flags": {},
        "shapes": [{"group_id": None, "flags": {}, "description": "", **s} for s in shapes],
        "imagePath": "..\\images\\" + path.stem + ".png",
        "imageData": base64.b64encode(data).decode() if data else None,
        "imageHeight": 80,
        "imageWidth": 100,
    }
    path.write_text(json.dumps(doc))
    return path


LABELME_SHAPES: list[dict[str, Any]] = [
    {"label": "road", "points": [[10, 5], [40, 8.5], [30, 30]], "shape_type": "polygon"},
    {"label": "car", "points": [[50, 40], [20, 30]], "shape_type": "rectangle"},
    {"label": "sign", "points": [[60, 50], [63, 54]], "shape_type": "circle"},
    {"label": "lane", "points": [[0, 0], [5, 5], [9, 1]], "shape_type": "linestrip"},
    {"label": "pole", "points": [[1, 1]], "shape_type": "point"},
]


def test_labelme_folder_with_embedded_image(tmp_path: Path) -> None:
    png = tmp_path / "x.png"
    Image.new("RGB", (100, 80), (1, 2, 3)).save(png)
    (tmp_path / "ann" / "sub").mkdir(parents=True)
    write_labelme(tmp_path / "ann" / "b.json", LABELME_SHAPES[:1])
    write_labelme(tmp_path / "ann" / "sub" / "a.json", LABELME_SHAPES, png.read_bytes())
    result = read_labelme(tmp_path / "ann")
    b, a = result.images
    assert (b.file_name, a.file_name) == ("../images/b.png", "../images/a.png")
    assert (a.width, a.height, a.source) == (100, 80, str(tmp_path / "ann" / "sub" / "a.json"))
    assert a.image_data == png.read_bytes() and b.image_data is None
    assert [r.shape for r in a.regions] == [
        Polygon(((10, 5), (40, 8.5), (30, 30))),
        Rect(20, 30, 30, 10),
        Circle(60, 50, 5),
    ]
    assert [r.label for r in a.regions] == ["road", "car", "sign"]
    assert result.skipped == {"linestrip": 1, "point": 1}
    assert read_labelme(tmp_path / "ann", load_image_data=False).images[1].image_data is None


def test_labelme_rasterises_rect_and_circle_like_pixel_centres(tmp_path: Path) -> None:
    image = read_labelme(write_labelme(tmp_path / "a.json", LABELME_SHAPES[1:3])).images[0]
    out = rasterise(image.regions, 80, 100, {"car": 1, "sign": 2})
    assert (out == 1).sum() == 30 * 10 and (out[30:40, 20:50] == 1).all()
    rows, cols = np.nonzero(out == 2)
    centre_dist = np.hypot(cols + 0.5 - 60, rows + 0.5 - 50)
    assert centre_dist.max() < 5 and abs((out == 2).sum() - np.pi * 25) < 6


def write_coco(path: Path, width: int = 64, height: int = 48) -> Path:
    """Overlapping objects of every segmentation kind, in one image, plus an empty image."""
    from pycocotools import mask as coco_mask

    crowd = np.zeros((height, width), np.uint8)
    crowd[10:30, 5:25] = 1
    crowd[12:14, 40:60] = 1
    compressed = coco_mask.encode(np.asfortranarray(crowd))
    flat = np.zeros((height, width), np.uint8)
    flat[30:45, 20:50] = 1
    bits = flat.flatten(order="F")
    starts = np.flatnonzero(np.diff(np.r_[0, bits, 2 - bits[-1]]))
    counts = np.diff(np.r_[0, starts]).tolist()
    polys = [[3.2, 4.7, 30.6, 2.1, 25.5, 20.4, 8, 18], [40, 20, 60.3, 22.8, 52.1, 40.9]]
    anns: list[dict[str, Any]] = [
        {"segmentation": polys, "category_id": 7, "iscrowd": 0},
        {"segmentation": {"counts": counts, "size": [height, width]}, "category_id": 3},
        {"segmentation": {"counts": compressed["counts"].decode(), "size": [height, width]}},
        {"segmentation": [[-5, -5, 30, 10, 10, 60]], "category_id": 3, "iscrowd": 0},
    ]
    anns[2].update(category_id=9, iscrowd=1)
    doc = {
        "images": [
            {"id": 1, "file_name": "a.jpg", "width": width, "height": height},
            {"id": 2, "file_name": "b.jpg", "width": 10, "height": 5},
        ],
        "annotations": [{"id": i + 1, "image_id": 1, "area": 1, **a} for i, a in enumerate(anns)],
        "categories": [{"id": c, "name": n} for c, n in ((7, "car"), (3, "road"), (9, "bus"))],
    }
    path.write_text(json.dumps(doc))
    return path


def reference_mask(path: Path, image_id: int, class_of: dict[int, int]) -> np.ndarray:
    """pycocotools' `annToMask` for each object, painted in annotation order."""
    from pycocotools.coco import COCO

    coco = COCO(str(path))
    info = coco.imgs[image_id]
    out = np.zeros((info["height"], info["width"]), np.uint8)
    for ann in coco.loadAnns(coco.getAnnIds(imgIds=[image_id])):
        out[coco.annToMask(ann) == 1] = class_of[ann["category_id"]]
    return out


def test_coco_masks_equal_pycocotools_exactly(tmp_path: Path) -> None:
    path = write_coco(tmp_path / "instances.json")
    dataset = read_coco(path)
    assert dataset.class_ids == {"car": 1, "road": 2, "bus": 3}
    a, b = dataset.images
    mask = dataset.mask(a)
    assert mask.dtype == np.uint8 and mask.shape == (48, 64)
    assert set(np.unique(mask)) == {0, 1, 2, 3}
    np.testing.assert_array_equal(mask, reference_mask(path, 1, {7: 1, 3: 2, 9: 3}))
    assert not dataset.mask(b).any() and dataset.mask(b).shape == (5, 10)


def test_coco_given_class_ids(tmp_path: Path) -> None:
    path = write_coco(tmp_path / "instances.json")
    dataset = read_coco(path, {"road": 5, "bus": 6, "car": 1})
    np.testing.assert_array_equal(
        dataset.mask(dataset.images[0]), reference_mask(path, 1, {7: 1, 3: 5, 9: 6})
    )
    with pytest.raises(DataError, match=r"instances.json: category 'bus' is not one of: car, road"):
        read_coco(path, {"car": 1, "road": 2})


def test_polygon_mask_equals_pycocotools_on_random_polygons() -> None:
    """Self-intersecting, off-image and fractional polygons: every pixel must agree."""
    from pycocotools import mask as coco_mask

    rng = np.random.default_rng(0)
    for i in range(300):
        h, w = (int(v) for v in rng.integers(4, 70, 2))
        xy = rng.uniform(-0.5 * max(h, w), 1.5 * max(h, w), (int(rng.integers(3, 12)), 2))
        xy = np.round(xy) if i % 3 == 0 else xy
        rles = coco_mask.frPyObjects([xy.ravel().tolist()], h, w)
        expected = coco_mask.decode(coco_mask.merge(rles)).astype(bool)
        np.testing.assert_array_equal(polygon_mask([tuple(p) for p in xy], h, w), expected)


def star_polygons(rng: np.random.Generator, n: int, width: int, height: int) -> list[list[Any]]:
    """Random star-shaped (simple) polygons well inside the image, half on integer points."""
    polys: list[list[Any]] = []
    for i in range(n):
        cx, cy = rng.uniform(35, width - 35), rng.uniform(35, height - 35)
        angles = np.sort(rng.uniform(0, 2 * np.pi, int(rng.integers(3, 12))))
        radii = rng.uniform(8, 30, len(angles))
        pts = [(cx + r * np.cos(a), cy + r * np.sin(a)) for a, r in zip(angles, radii, strict=True)]
        polys.append([(round(x), round(y)) for x, y in pts] if i % 2 else pts)
    return polys


def pillow_compare(polys: list[list[Any]], masks: list[np.ndarray], size: tuple[int, int]) -> float:
    """Worst pixel agreement with Pillow's `ImageDraw.polygon`; differences only at edges."""
    worst = 1.0
    for pts, mask in zip(polys, masks, strict=True):
        fill, line = Image.new("L", size), Image.new("L", size)
        ImageDraw.Draw(fill).polygon([tuple(p) for p in pts], fill=1)
        ImageDraw.Draw(line).line([tuple(p) for p in [*pts, pts[0]]], fill=1, width=1)
        near_edge = cv2.dilate(np.array(line), np.ones((3, 3), np.uint8)).astype(bool)
        differ = mask != np.array(fill).astype(bool)
        assert not (differ & ~near_edge).any(), "a pixel differs away from the polygon's edge"
        worst = min(worst, 1 - float(differ.mean()))
    return worst


def test_via_polygons_agree_with_pillow(tmp_path: Path) -> None:
    polys = star_polygons(np.random.default_rng(1), 40, 200, 160)
    columns = [list(zip(*pts, strict=True)) for pts in polys]
    shapes = [{"name": "polygon", "all_points_x": xs, "all_points_y": ys} for xs, ys in columns]
    regions = read_via(write_csv(tmp_path / "v.csv", via_rows(shapes))).images[0].regions
    masks = [rasterise([r], 160, 200, {"car": 1}) == 1 for r in regions]
    assert pillow_compare(polys, masks, (200, 160)) >= 0.995


def test_labelme_polygons_agree_with_pillow(tmp_path: Path) -> None:
    polys = star_polygons(np.random.default_rng(2), 40, 200, 160)
    shapes = [{"label": "road", "points": [list(p) for p in pts]} for pts in polys]
    regions = read_labelme(write_labelme(tmp_path / "a.json", shapes)).images[0].regions
    masks = [rasterise([r], 160, 200, {"road": 3}) == 3 for r in regions]
    assert pillow_compare(polys, masks, (200, 160)) >= 0.995


def test_rasterise_paints_in_order_and_counts_clipped_and_degenerate(
    caplog: pytest.LogCaptureFixture,
) -> None:
    regions = [
        Region("road", Rect(0, 0, 10, 10), "r0"),
        Region("car", Polygon(((5, 5), (30, 5), (30, 30), (5, 30))), "r1"),
        Region("car", Polygon(((1, 1), (8, 8))), "r2"),
    ]
    stats = RasterStats()
    with caplog.at_level(logging.DEBUG):
        out = rasterise(regions, 20, 20, {"road": 1, "car": 2}, stats)
    assert (stats.clipped, stats.degenerate, stats.first_degenerate) == (1, 1, "r2")
    assert "r2: polygon with 2 point(s) skipped" in caplog.text
    assert (out[:5, :10] == 1).all() and (out[5:10, :5] == 1).all() and (out[5:, 5:] == 2).all()
    assert (out == 0).sum() == 20 * 20 - 10 * 10 - 15 * 15 + 5 * 5
    with pytest.raises(DataError, match=r"^r1: class 'car' is not one of: road, sky$"):
        rasterise(regions, 20, 20, {"road": 1, "sky": 2})


def test_far_out_coordinates_are_clipped_not_exhausting_memory() -> None:
    mask = polygon_mask([(-1e9, -1e9), (10, -1e9), (10, 1e9), (-1e9, 1e9)], 8, 16)
    assert mask[:, :10].all() and not mask[:, 10:].any()


def test_csv_row_with_wrong_column_count_names_file_and_line(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "v.csv", via_rows([POLY, POLY]))
    lines = path.read_text().splitlines()
    lines[2] = lines[2].rsplit(",", 1)[0]
    path.write_text("\n".join(lines))
    with pytest.raises(DataError, match=rf"^{path}:3: expected 7 columns, got 6$"):
        read_via(path)
    path.write_text(path.read_text().replace('""name""', "name", 1))
    with pytest.raises(DataError, match=rf"^{path}:2: region_shape_attributes is not valid JSON"):
        read_via(path)
    path.write_text("name,size\na,1\n")
    with pytest.raises(DataError, match=rf"^{path}:1: not a VIA CSV export"):
        read_via(path)


@pytest.mark.parametrize("reader", ["via", "labelme", "coco"])
def test_malformed_json_names_the_file(tmp_path: Path, reader: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"a.jpg": {"filename": "a.jpg",\n "regions": [}')
    readers: dict[str, Callable[[Path], object]] = {
        "via": read_via,
        "labelme": read_labelme,
        "coco": read_coco,
    }
    read = readers[reader]
    with pytest.raises(DataError, match=rf"^{path}:2: not valid JSON"):
        read(path)


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ({"name": "rect", "x": 1, "y": 2, "width": 3}, "rect shape is missing 'height'"),
        ({"name": "polygon", "all_points_x": [1, 2, 3]}, "missing the list 'all_points_y'"),
        ({"name": "circle", "cx": 1, "cy": "2", "r": 3}, "cy must be a number, got '2'"),
        ({"name": "star", "cx": 1}, "unknown shape 'star' (known: polygon, polyline, rect"),
        ({"cx": 1}, "shape attributes have no 'name'"),
    ],
)
def test_bad_via_shapes_name_their_key(tmp_path: Path, shape: dict[str, Any], message: str) -> None:
    path = tmp_path / "v.json"
    path.write_text(json.dumps(via_json([POLY, shape])))
    with pytest.raises(DataError) as info:
        read_via(path)
    assert str(info.value).startswith(f"{path}: a.jpg100/regions/1: ")
    assert message in str(info.value)


def test_bad_labelme_and_coco_name_their_key(tmp_path: Path) -> None:
    shapes: list[dict[str, Any]] = [LABELME_SHAPES[0], {"label": "car", "shape_type": "rectangle"}]
    path = write_labelme(tmp_path / "a.json", shapes)
    with pytest.raises(DataError, match=rf"^{path}: shapes\[1\]: missing 'points'$"):
        read_labelme(path)
    write_labelme(path, [{"label": "x", "points": [[1, 2]], "shape_type": "mask"}])
    with pytest.raises(DataError, match=r"shapes\[0\]: unknown shape_type 'mask' \(known: poly"):
        read_labelme(path)
    coco = write_coco(tmp_path / "c.json")
    doc = json.loads(coco.read_text())
    doc["annotations"][1]["segmentation"]["counts"][0] += 1
    doc["annotations"][0]["segmentation"].append([1, 2, 3])
    coco.write_text(json.dumps(doc))
    # Reading checks every segmentation, so prepare fails before writing anything.
    with pytest.raises(DataError, match=rf"^{coco}: annotations\[0\]: a polygon must be a flat"):
        read_coco(coco)
    doc["annotations"][0]["segmentation"][-1] = [1, 2, 3, 4]
    coco.write_text(json.dumps(doc))
    with pytest.raises(DataError, match=rf"^{coco}: annotations\[1\]: bad RLE \(counts cover 3073"):
        read_coco(coco)
    doc["annotations"][1]["segmentation"]["counts"][0] -= 1
    coco.write_text(json.dumps(doc))
    dataset = read_coco(coco)
    dataset.mask(dataset.images[0])
    assert dataset.skipped == {"polygon with fewer than 3 points": 1}
