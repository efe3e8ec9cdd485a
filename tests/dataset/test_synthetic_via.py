"""The generated VIA project must look like a real VIA 2 export and agree with its labels.

`cityseg demo --format via` and the VIA tests trust these files the way a user's own
project would be trusted, so a JSON cell VIA would not write, a file size that is off or
a mask that differs from the painted pixels here would hide the same bug downstream.
"""

from __future__ import annotations

import csv
import io
import json
import math
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from PIL import Image, ImageDraw

from cityseg.dataset.annotations.rasterise import polygon_mask, rasterise, shape_points
from cityseg.dataset.annotations.via import CSV_COLUMNS, read_via
from cityseg.dataset.synthetic_via import (
    CLASS_HUES,
    CSV_NAME,
    ViaProject,
    ViaSpec,
    write_via_project,
)
from cityseg.errors import UsageError

SPEC = ViaSpec()
CLASS_IDS = {name: i + 1 for i, name in enumerate(SPEC.classes)}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> ViaProject:
    return write_via_project(tmp_path_factory.mktemp("via"), SPEC)


def _rows(project: ViaProject) -> list[list[str]]:
    with project.csv.open(newline="", encoding="utf-8") as f:
        return list(csv.reader(f))[1:]


def _shapes(project: ViaProject) -> dict[str, list[tuple[dict[str, Any], str]]]:
    """Per image, (shape attributes, class) parsed with csv + json alone, not cityseg."""
    out: dict[str, list[tuple[dict[str, Any], str]]] = {}
    for row in _rows(project):
        regions = out.setdefault(row[0], [])
        if row[3] != "0":
            regions.append((json.loads(row[5]), json.loads(row[6])["class"]))
    return out


def test_files_are_jpeg_photos(project: ViaProject) -> None:
    assert project.csv == project.folder / CSV_NAME == project.folder / "via_export_csv.csv"
    names = [f"IMG_{i:04d}.jpg" for i in range(1, SPEC.images + 1)]
    assert sorted(p.name for p in project.folder.iterdir()) == [*names, CSV_NAME]
    assert list(project.masks) == names
    for name in names:
        with Image.open(project.folder / name) as image:
            assert image.format == "JPEG"
            assert image.mode == "RGB"
            assert image.size == (SPEC.width, SPEC.height)
            image.load()


def test_csv_is_written_as_via2_exports(project: ViaProject) -> None:
    text = project.csv.read_text(encoding="utf-8")
    lines = text.splitlines()
    assert lines[0] == ",".join(CSV_COLUMNS)
    assert "\r" not in text
    by_image: dict[str, list[list[str]]] = {}
    for line in lines[1:]:
        (row,) = list(csv.reader([line]))
        assert len(row) == len(CSV_COLUMNS)
        by_image.setdefault(row[0], []).append(row)
        size = (project.folder / row[0]).stat().st_size
        assert row[1] == str(size)
        if row[3] == "0":
            assert line == f'{row[0]},{size},"{{}}",0,0,"{{}}","{{}}"'
            continue
        again = io.StringIO()
        csv.writer(again, quoting=csv.QUOTE_MINIMAL, lineterminator="").writerow(row)
        assert again.getvalue() == line.replace(',"{}",', ",{},", 1)
        for cell in (row[5], row[6]):
            assert cell == json.dumps(json.loads(cell), separators=(",", ":"))
        assert json.loads(row[6]) == {"class": json.loads(row[6])["class"]}
    for rows in by_image.values():
        count = int(rows[0][3])
        assert [r[4] for r in rows] == [str(i) for i in range(max(count, 1))]
        assert all(r[3] == str(count) for r in rows)


def test_shapes_are_stored_as_via_stores_them(project: ViaProject) -> None:
    keys = {
        "polygon": ["name", "all_points_x", "all_points_y"],
        "rect": ["name", "x", "y", "width", "height"],
        "circle": ["name", "cx", "cy", "r"],
        "ellipse": ["name", "cx", "cy", "rx", "ry", "theta"],
    }
    kinds: Counter[str] = Counter()
    for regions in _shapes(project).values():
        for attrs, _ in regions:
            name = attrs["name"]
            assert list(attrs) == keys[name]
            if name == "polygon":
                xs, ys = attrs["all_points_x"], attrs["all_points_y"]
                assert len(xs) == len(ys)
                assert all(isinstance(v, int) for v in xs + ys)
                name = {3: "triangle", 5: "pentagon"}[len(xs)]
            elif name == "rect":
                assert all(isinstance(attrs[k], int) for k in keys["rect"][1:])
            else:
                assert isinstance(attrs["cx"], int) and isinstance(attrs["cy"], int)
            kinds[name] += 1
    assert set(kinds) == {"triangle", "pentagon", "rect", "circle", "ellipse"}
    thetas = [a["theta"] for r in _shapes(project).values() for a, _ in r if "theta" in a]
    assert any(abs(t) > 0.1 for t in thetas)


def test_csv_reads_back_with_every_image_and_region(project: ViaProject) -> None:
    result = read_via(project.csv)
    assert not result.skipped
    assert [image.file_name for image in result.images] == list(project.masks)
    region_rows = [row for row in _rows(project) if row[3] != "0"]
    assert sum(len(image.regions) for image in result.images) == len(region_rows)
    assert 2 <= sum(not image.regions for image in result.images) < len(result.images)
    assert all(len(image.regions) <= 3 for image in result.images)
    assert sorted(result.labels()) == sorted(SPEC.classes)


def test_masks_are_what_cityseg_rasterises(project: ViaProject) -> None:
    for image in read_via(project.csv).images:
        mask = project.masks[image.file_name]
        assert mask.dtype == np.uint8 and mask.shape == (SPEC.height, SPEC.width)
        expected = rasterise(image.regions, SPEC.height, SPEC.width, CLASS_IDS)
        np.testing.assert_array_equal(mask, expected)
        if not image.regions:
            assert not mask.any()
    present = np.unique(np.concatenate([m.ravel() for m in project.masks.values()]))
    assert present.tolist() == [0, 1, 2]


def test_later_regions_paint_over_earlier_ones(project: ViaProject) -> None:
    overlaps = 0
    for image in read_via(project.csv).images:
        h, w = SPEC.height, SPEC.width
        masks = [polygon_mask(shape_points(r.shape), h, w) for r in image.regions]
        covered = np.zeros((h, w), bool)
        for region, mask in reversed(list(zip(image.regions, masks, strict=True))):
            overlaps += bool((mask & covered).any())
            owned = mask & ~covered
            assert (project.masks[image.file_name][owned] == CLASS_IDS[region.label]).all()
            covered |= mask
    assert overlaps >= 2


_FINE = 8
"""Pillow fills both end pixels of a span, so it draws on an 8x finer grid that is then
sampled at pixel centres: its own edge rule then moves the result by 1/8 px at most."""


def _pillow_mask(regions: list[tuple[dict[str, Any], str]]) -> np.ndarray:
    """An independent rasterisation: Pillow's scanline fill, sampled at (c + .5, r + .5)."""
    canvas = Image.new("L", (SPEC.width * _FINE, SPEC.height * _FINE), 0)
    draw = ImageDraw.Draw(canvas)
    for attrs, label in regions:
        fill, name = CLASS_IDS[label], attrs["name"]
        if name == "polygon":
            points = list(zip(attrs["all_points_x"], attrs["all_points_y"], strict=True))
        elif name == "rect":
            x, y, w, h = attrs["x"], attrs["y"], attrs["width"], attrs["height"]
            points = [(x, y), (x + w, y), (x + w, y + h), (x, y + h)]
        elif name == "circle":
            box = [attrs["cx"] - attrs["r"], attrs["cy"] - attrs["r"]]
            box += [attrs["cx"] + attrs["r"], attrs["cy"] + attrs["r"]]
            draw.ellipse([v * _FINE for v in box], fill=fill)
            continue
        else:
            phi = np.linspace(0, 2 * math.pi, 720, endpoint=False)
            t, dx, dy = attrs["theta"], attrs["rx"] * np.cos(phi), attrs["ry"] * np.sin(phi)
            xs = attrs["cx"] + dx * math.cos(t) - dy * math.sin(t)
            ys = attrs["cy"] + dx * math.sin(t) + dy * math.cos(t)
            points = list(zip(xs.tolist(), ys.tolist(), strict=True))
        draw.polygon([(x * _FINE, y * _FINE) for x, y in points], fill=fill)
    return np.asarray(canvas)[_FINE // 2 :: _FINE, _FINE // 2 :: _FINE]


def test_ground_truth_agrees_with_pillow(project: ViaProject) -> None:
    same, either = 0, 0
    for name, regions in _shapes(project).items():
        ours, theirs = project.masks[name], _pillow_mask(regions)
        assert ours.shape == theirs.shape
        assert (ours == theirs).mean() >= 0.99, name
        foreground = (ours > 0) | (theirs > 0)
        same += int((foreground & (ours == theirs)).sum())
        either += int(foreground.sum())
    assert same / either >= 0.98


def test_object_pixels_have_their_class_colour(project: ViaProject) -> None:
    kernel = np.ones((5, 5), np.uint8)
    for name, mask in project.masks.items():
        bgr = cv2.imread(str(project.folder / name))
        hsv = cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV).astype(int)
        for class_id, (low, high) in enumerate(CLASS_HUES[: len(SPEC.classes)], start=1):
            inner = cv2.erode((mask == class_id).astype(np.uint8), kernel) > 0
            if inner.sum() < 10:
                continue
            hue, sat = np.median(hsv[..., 0][inner]), np.median(hsv[..., 1][inner])
            assert low - 6 <= hue <= high + 6, (name, class_id, hue)
            assert sat >= 110, (name, class_id, sat)
        background = cv2.erode((mask == 0).astype(np.uint8), kernel) > 0
        looks_like_object = np.zeros_like(background)
        for low, high in CLASS_HUES[: len(SPEC.classes)]:
            in_hue = (hsv[..., 0] >= low) & (hsv[..., 0] <= high)
            looks_like_object |= in_hue & (hsv[..., 1] >= 150)
        assert (looks_like_object & background).sum() <= 0.02 * background.sum(), name


def test_same_seed_same_bytes_other_seed_differs(project: ViaProject, tmp_path: Path) -> None:
    again = write_via_project(tmp_path / "again", SPEC)
    other = write_via_project(tmp_path / "other", ViaSpec(seed=1))
    for path in sorted(project.folder.iterdir()):
        assert (again.folder / path.name).read_bytes() == path.read_bytes(), path.name
    assert other.csv.read_bytes() != project.csv.read_bytes()
    differ = [
        (other.folder / name).read_bytes() != (project.folder / name).read_bytes()
        for name in project.masks
    ]
    assert all(differ)


def test_other_specs(tmp_path: Path) -> None:
    one = write_via_project(tmp_path / "one", ViaSpec(images=1, height=32, width=48, seed=3))
    assert len(one.masks) == 1 and next(iter(one.masks.values())).any()
    spec = ViaSpec(images=6, seed=5, classes=(" cup", "plate", "fork "))
    three = write_via_project(tmp_path / "three", spec)
    assert spec.classes == ("cup", "plate", "fork")
    assert set(read_via(three.csv).labels()) == {"cup", "plate", "fork"}
    assert max(int(m.max()) for m in three.masks.values()) <= 3


@pytest.mark.parametrize(
    "kwargs",
    [
        {"height": 31},
        {"width": 16},
        {"images": 0},
        {"seed": -1},
        {"classes": ()},
        {"classes": ("ball", "ball")},
        {"classes": ("ball", " ")},
        {"classes": ("a", "b", "c", "d", "e")},
    ],
)
def test_bad_specs_fail_in_one_line(kwargs: dict[str, Any]) -> None:
    with pytest.raises(UsageError) as info:
        ViaSpec(**kwargs)
    assert "\n" not in str(info.value)


def test_import_stays_light() -> None:
    code = "import sys, cityseg.dataset.synthetic_via; assert 'tensorflow' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
