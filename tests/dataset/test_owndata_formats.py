"""`cityseg prepare --format via|labelme|coco|masks` against reference rasterisers.

COCO masks must equal pycocotools' `annToMask` painted in annotation order. VIA and LabelMe
have no official rasteriser, so they are compared with an independent one: Pillow's
ImageDraw on the same shapes, where at least 99.5% of pixels must agree and every
disagreement must sit on a shape's edge.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw

from cityseg.dataset.manifest import read_manifest
from cityseg.images import read_image, read_mask

VIA_HEADER = [
    "filename",
    "file_size",
    "file_attributes",
    "region_count",
    "region_id",
    "region_shape_attributes",
    "region_attributes",
]
H, W = 90, 120


def photo(path: Path, height: int = H, width: int = W, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, quality=95) if path.suffix == ".jpg" else Image.fromarray(
        pixels
    ).save(path)
    return path


def prepared_masks(out: Path) -> dict[str, np.ndarray]:
    """Each entry's source name -> its prepared class-id mask."""
    index = read_manifest(out)
    return {
        e["source"]: read_mask(out / e["masks"]["classes"])
        for split in index["splits"].values()
        for e in split
    }


# ----------------------------------------------------------------------------- Pillow reference

Shape = dict[str, Any]


def outline(shape: Shape) -> list[tuple[float, float]]:
    """The shape's outline as polygon vertices, in continuous pixel coordinates."""
    name = shape["name"]
    if name in ("polygon", "polyline"):
        return list(zip(shape["all_points_x"], shape["all_points_y"], strict=True))
    if name == "rect":
        x, y, w, h = shape["x"], shape["y"], shape["width"], shape["height"]
        return [(x, y), (x + w, y), (x + w, y + h), (x, y + h)]
    rx, ry = (shape["r"], shape["r"]) if name == "circle" else (shape["rx"], shape["ry"])
    theta = shape.get("theta", 0.0)
    points = []
    for i in range(720):
        phi = 2 * math.pi * i / 720
        dx, dy = rx * math.cos(phi), ry * math.sin(phi)
        points.append(
            (
                shape["cx"] + dx * math.cos(theta) - dy * math.sin(theta),
                shape["cy"] + dx * math.sin(theta) + dy * math.cos(theta),
            )
        )
    return points


def pillow_mask(shapes: list[tuple[Shape, int]], height: int, width: int) -> np.ndarray:
    """Pillow fills a polygon's outline pixels too (its pixel centres sit at integer
    coordinates): draw on an 8x finer grid and sample it at pixel centres (c + .5, r + .5),
    so Pillow's extra outline is 1/8 px instead of a whole pixel."""
    scale = 8
    canvas = Image.new("L", (width * scale, height * scale), 0)
    draw = ImageDraw.Draw(canvas)
    for shape, value in shapes:
        draw.polygon([(x * scale, y * scale) for x, y in outline(shape)], fill=value)
    fine = np.asarray(canvas)
    return fine[scale // 2 :: scale, scale // 2 :: scale][:height, :width]


def assert_close_to_pillow(ours: np.ndarray, reference: np.ndarray) -> None:
    """>= 99.5% equal, and every differing pixel next to an edge of the reference."""
    differ = ours != reference
    assert differ.mean() <= 0.005, f"{differ.mean():.4%} of pixels differ"
    padded = np.pad(reference, 1, mode="edge")
    edge = np.zeros_like(differ)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            shifted = padded[
                1 + dy : 1 + dy + reference.shape[0], 1 + dx : 1 + dx + reference.shape[1]
            ]
            edge |= shifted != reference
    assert not (differ & ~edge).any(), "pixels away from any edge differ"


# ----------------------------------------------------------------------------- VIA

VIA_SHAPES: list[tuple[Shape, str]] = [
    ({"name": "rect", "x": 10, "y": 8, "width": 40, "height": 30}, "box"),
    ({"name": "polygon", "all_points_x": [30, 100, 70], "all_points_y": [20, 35, 80]}, "tri"),
    ({"name": "circle", "cx": 90, "cy": 60, "r": 18.5}, "box"),
    ({"name": "ellipse", "cx": 40, "cy": 65, "rx": 25, "ry": 10, "theta": 0.6}, "tri"),
    ({"name": "polyline", "all_points_x": [5, 25, 15], "all_points_y": [50, 55, 85]}, "box"),
]
CLASS_IDS = {"box": 1, "tri": 2}


def expected_via() -> np.ndarray:
    return pillow_mask([(s, CLASS_IDS[c]) for s, c in VIA_SHAPES], H, W)


def via_csv(path: Path, rows: dict[str, list[tuple[Shape, str]]], *, version: int = 2) -> Path:
    header = list(VIA_HEADER)
    if version == 1:
        header[0] = "#filename"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for name, regions in rows.items():
            if not regions:
                writer.writerow([name, 100, "{}", 0, 0, "{}", "{}"])
            for i, (shape, label) in enumerate(regions):
                writer.writerow(
                    [
                        name,
                        100,
                        "{}",
                        len(regions),
                        i,
                        json.dumps(shape),
                        json.dumps({"class": label}),
                    ]
                )
    return path


def via_json(
    path: Path, rows: dict[str, list[tuple[Shape, str]]], *, version: int, project: bool
) -> Path:
    data: dict[str, Any] = {}
    for name, regions in rows.items():
        items = [{"shape_attributes": s, "region_attributes": {"class": c}} for s, c in regions]
        data[f"{name}100"] = {
            "filename": name,
            "size": 100,
            "regions": items if version == 2 else {str(i): r for i, r in enumerate(items)},
            "file_attributes": {},
        }
    path.write_text(
        json.dumps({"_via_img_metadata": data, "_via_settings": {}} if project else data)
    )
    return path


@pytest.mark.parametrize(
    "kind", ["csv2", "csv1", "json2", "json1", "project"], ids=lambda k: f"via-{k}"
)
def test_via_exports_match_pillow(tmp_path: Path, cli, kind: str) -> None:
    src = tmp_path / "photos"
    for name in ("a.jpg", "b.jpg", "empty.jpg"):
        photo(src / "sub" / name if name == "b.jpg" else src / name)
    rows = {"a.jpg": VIA_SHAPES, "b.jpg": VIA_SHAPES[::-1], "empty.jpg": []}
    ann = tmp_path / f"export.{'csv' if kind.startswith('csv') else 'json'}"
    if kind.startswith("csv"):
        via_csv(ann, rows, version=int(kind[-1]))
    else:
        via_json(ann, rows, version=1 if kind == "json1" else 2, project=kind == "project")
    out = tmp_path / "data"
    result = cli(
        "prepare",
        src,
        "--format",
        "via",
        "--annotations",
        ann,
        "-o",
        out,
        "-q",
        "--classes",
        "box,tri",
        "--val-ratio",
        "0",
        "--test-ratio",
        "0",
    )
    assert result.exit_code == 0, result.stderr
    masks = prepared_masks(out)
    assert set(masks) == {"a.jpg", "sub/b.jpg", "empty.jpg"}
    assert_close_to_pillow(masks["a.jpg"], expected_via())
    reverse = pillow_mask([(s, CLASS_IDS[c]) for s, c in VIA_SHAPES[::-1]], H, W)
    assert_close_to_pillow(masks["sub/b.jpg"], reverse)
    assert not masks["empty.jpg"].any(), "an image listed without regions is all background"
    scheme = read_manifest(out)["schemes"]["classes"]
    assert scheme["classes"] == ["background", "box", "tri"]


def test_later_regions_paint_over_earlier_ones(tmp_path: Path, cli) -> None:
    src = tmp_path / "photos"
    photo(src / "a.png")
    big = {"name": "rect", "x": 0, "y": 0, "width": W, "height": H}
    small = {"name": "rect", "x": 10, "y": 10, "width": 20, "height": 20}
    via_csv(src / "via.csv", {"a.png": [(big, "sky"), (small, "sun")]})
    out = tmp_path / "data"
    assert cli("prepare", src, "--format", "via", "-o", out, "-q").exit_code == 0
    mask = prepared_masks(out)["a.png"]
    assert (mask[10:30, 10:30] == 2).all() and (mask[40:, 40:] == 1).all()


# ----------------------------------------------------------------------------- LabelMe


def labelme_file(
    path: Path, image_path: str, shapes: list[dict[str, Any]], data: bytes | None
) -> None:
    body = {
        "version": "5.4.1",
        "flags": {},
        "shapes": shapes,
        "imagePath": image_path,
        "imageData": None if data is None else base64.b64encode(data).decode(),
        "imageHeight": H,
        "imageWidth": W,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(body))


LABELME_SHAPES = [
    {"label": "cat", "points": [[10, 10], [60, 15], [40, 70]], "shape_type": "polygon"},
    {"label": "dog", "points": [[70, 20], [110, 60]], "shape_type": "rectangle"},
    {"label": "cat", "points": [[85, 70], [85, 85]], "shape_type": "circle"},
    {"label": "dog", "points": [[5, 80], [20, 85]], "shape_type": "line"},
]


def labelme_reference() -> np.ndarray:
    shapes: list[tuple[Shape, int]] = [
        ({"name": "polygon", "all_points_x": [10, 60, 40], "all_points_y": [10, 15, 70]}, 1),
        ({"name": "rect", "x": 70, "y": 20, "width": 40, "height": 40}, 2),
        ({"name": "circle", "cx": 85, "cy": 70, "r": 15}, 1),
    ]
    return pillow_mask(shapes, H, W)


def test_labelme_folder_matches_pillow_with_embedded_and_linked_images(tmp_path: Path, cli) -> None:
    src = tmp_path / "project"
    photo(src / "images" / "one.jpg")
    labelme_file(src / "json" / "one.json", "../images/one.jpg", LABELME_SHAPES, None)
    buffer = io.BytesIO()
    Image.fromarray(np.full((H, W, 3), 90, np.uint8)).save(buffer, "PNG")
    labelme_file(src / "json" / "two.json", "two.png", LABELME_SHAPES, buffer.getvalue())
    out = tmp_path / "data"
    result = cli(
        "prepare",
        src,
        "--format",
        "labelme",
        "-o",
        out,
        "-q",
        "--val-ratio",
        "0",
        "--test-ratio",
        "0",
    )
    assert result.exit_code == 0, result.stderr
    assert "skipped 2 line region(s)" in result.stderr
    masks = prepared_masks(out)
    assert set(masks) == {"images/one.jpg", "json/two.png"}
    for mask in masks.values():
        assert_close_to_pillow(mask, labelme_reference())
    embedded = read_manifest(out)["splits"]["train"]
    two = next(e for e in embedded if e["source"] == "json/two.png")
    assert (read_image(out / two["image"]) == 90).all()


# ----------------------------------------------------------------------------- COCO


def test_coco_masks_equal_pycocotools(tmp_path: Path, cli) -> None:
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO

    src = tmp_path / "coco"
    photo(src / "images" / "x.png")
    photo(src / "images" / "y.png", seed=1)
    crowd = np.zeros((H, W), np.uint8, order="F")
    crowd[30:60, 50:100] = 1
    compressed = mask_utils.encode(np.asfortranarray(crowd))
    compressed["counts"] = compressed["counts"].decode()
    uncompressed_counts = []
    flat = crowd.flatten(order="F")
    value, run = 0, 0
    for pixel in flat:
        if pixel != value:
            uncompressed_counts.append(run)
            value, run = pixel, 0
        run += 1
    uncompressed_counts.append(run)
    annotations = [
        {
            "id": 1,
            "image_id": 1,
            "category_id": 7,
            "iscrowd": 0,
            "segmentation": [[5, 5, 60, 8, 30, 50], [70, 60, 110, 62, 100, 85.5, 75, 80]],
        },
        {
            "id": 2,
            "image_id": 1,
            "category_id": 3,
            "iscrowd": 1,
            "segmentation": {"counts": compressed["counts"], "size": [H, W]},
        },
        {
            "id": 3,
            "image_id": 1,
            "category_id": 7,
            "iscrowd": 0,
            "segmentation": [[40.2, 20.7, 90.1, 25.3, 95.8, 70.4, 45.5, 66.6]],
        },
        {
            "id": 4,
            "image_id": 2,
            "category_id": 3,
            "iscrowd": 1,
            "segmentation": {"counts": uncompressed_counts, "size": [H, W]},
        },
        {
            "id": 5,
            "image_id": 2,
            "category_id": 7,
            "iscrowd": 0,
            "segmentation": [[-10, -10, 50, -5, 40, 130, -3, 100]],
        },
    ]
    coco = {
        "images": [
            {"id": 1, "file_name": "x.png", "width": W, "height": H},
            {"id": 2, "file_name": "y.png", "width": W, "height": H},
        ],
        "categories": [{"id": 7, "name": "person"}, {"id": 3, "name": "crowd"}],
        "annotations": annotations,
    }
    ann = src / "instances.json"
    ann.write_text(json.dumps(coco))
    out = tmp_path / "data"
    result = cli(
        "prepare",
        src,
        "--format",
        "coco",
        "--annotations",
        ann,
        "-o",
        out,
        "-q",
        "--val-ratio",
        "0",
        "--test-ratio",
        "0",
    )
    assert result.exit_code == 0, result.stderr
    reference = COCO(str(ann))
    class_of = {7: 1, 3: 2}  # the categories in the file's order
    masks = prepared_masks(out)
    for image_id, name in ((1, "images/x.png"), (2, "images/y.png")):
        expected = np.zeros((H, W), np.uint8)
        for a in reference.loadAnns(reference.getAnnIds(imgIds=[image_id])):
            expected[reference.annToMask(a) > 0] = class_of[a["category_id"]]
        np.testing.assert_array_equal(masks[name], expected)
    assert read_manifest(out)["schemes"]["classes"]["classes"] == ["background", "person", "crowd"]
    assert "1 region(s) reached outside their image" in result.stderr


# ----------------------------------------------------------------------------- mask folders


def test_class_id_and_colour_mask_folders(tmp_path: Path, cli) -> None:
    src = tmp_path / "seg"
    ids = np.zeros((H, W), np.uint8)
    ids[10:40, 10:50], ids[50:80, 60:100], ids[0:5, :] = 1, 2, 255
    for name in ("p1", "p2"):
        photo(src / "images" / f"{name}.jpg")
        Image.fromarray(ids).save(
            (src / "masks").mkdir(exist_ok=True) or src / "masks" / f"{name}.png"
        )
    out = tmp_path / "ids"
    result = cli(
        "prepare",
        src,
        "--format",
        "masks",
        "-o",
        out,
        "-q",
        "--classes",
        "road,car",
        "--val-ratio",
        "0",
        "--test-ratio",
        "0",
    )
    assert result.exit_code == 0, result.stderr
    for mask in prepared_masks(out).values():
        np.testing.assert_array_equal(mask, ids)

    palette = {"background": [0, 0, 0], "road": [128, 64, 128], "car": [0, 0, 142]}
    colours = np.array(list(palette.values()), np.uint8)[np.where(ids == 255, 0, ids)]
    colour_src = tmp_path / "colour"
    photo(colour_src / "images" / "c1.png")
    (colour_src / "labels").mkdir()
    Image.fromarray(colours).save(colour_src / "labels" / "c1.png")
    (tmp_path / "palette.json").write_text(json.dumps(palette))
    out = tmp_path / "colour-data"
    result = cli(
        "prepare",
        colour_src,
        "--format",
        "masks",
        "--palette",
        tmp_path / "palette.json",
        "-o",
        out,
        "-q",
        "--val-ratio",
        "0",
        "--test-ratio",
        "0",
    )
    assert result.exit_code == 0, result.stderr
    np.testing.assert_array_equal(prepared_masks(out)["c1.png"], np.where(ids == 255, 0, ids))
    scheme = read_manifest(out)["schemes"]["classes"]
    assert scheme["classes"] == ["background", "road", "car"] and scheme["palette"][2] == [
        0,
        0,
        142,
    ]


# ------------------------------------------------------------ images as users have them


def test_exif_orientation_grey_rgba_16_bit_and_mixed_sizes(tmp_path: Path, cli) -> None:
    src = tmp_path / "odd"
    src.mkdir()
    upright = np.zeros((60, 40, 3), np.uint8)
    upright[:10] = 255  # a white band at the top of the upright photo
    stored = np.rot90(upright, k=1)  # what the camera stored: 40x60, turned
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW to display
    Image.fromarray(np.ascontiguousarray(stored)).save(
        src / "turned.jpg", exif=exif.tobytes(), quality=98
    )
    Image.fromarray(np.full((30, 50), 77, np.uint8)).save(src / "grey.png")
    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[..., :3], rgba[..., 3] = 200, 10
    Image.fromarray(rgba, "RGBA").save(src / "rgba.png")
    Image.fromarray(np.full((25, 35), 40000, np.uint16)).save(src / "deep.png")
    band = {"name": "rect", "x": 0, "y": 0, "width": 40, "height": 10}
    rows = {n: [(band, "band")] for n in ("turned.jpg", "grey.png", "rgba.png", "deep.png")}
    via_csv(src / "via.csv", rows)
    out = tmp_path / "data"
    result = cli(
        "prepare", src, "--format", "via", "-o", out, "-q", "--val-ratio", "0", "--test-ratio", "0"
    )
    assert result.exit_code == 0, result.stderr
    index = read_manifest(out)
    entries = {e["source"]: e for e in index["splits"]["train"]}
    turned = read_image(out / entries["turned.jpg"]["image"])
    assert turned.shape == (60, 40, 3), "EXIF orientation is applied"
    assert turned[:8].mean() > 200 and turned[20:].mean() < 30
    mask = read_mask(out / entries["turned.jpg"]["masks"]["classes"])
    assert mask.shape == (60, 40) and (mask[:10] == 1).all() and not mask[10:].any()
    assert (read_image(out / entries["grey.png"]["image"]) == 77).all()
    assert (read_image(out / entries["rgba.png"]["image"]) == 200).all()
    deep = read_image(out / entries["deep.png"]["image"])
    assert deep.dtype == np.uint8 and abs(int(deep.mean()) - 40000 // 257) <= 1
    sizes = {read_mask(out / e["masks"]["classes"]).shape for e in entries.values()}
    assert len(sizes) == 4, "mixed sizes are kept; training resizes"
