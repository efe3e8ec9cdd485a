"""`cityseg prepare` on own data: bad input, classes and splits, through the real CLI.

Every test writes real files (JPEGs with Pillow, VIA CSV/JSON, LabelMe and COCO JSON) and
runs `cityseg prepare` in-process. Bad input must stop with one "Error: ..." line naming
what is wrong, never a traceback, and leave nothing behind in the output folder.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pytest
from PIL import Image


class CliResult(Protocol):
    """What the `cli` fixture (tests/conftest.py) returns."""

    exit_code: int
    stdout: str
    stderr: str


Cli = Callable[..., CliResult]
Shape = dict[str, Any]
Region = tuple[Shape, dict[str, Any]]

H, W = 32, 48
VIA_HEADER = (
    "filename",
    "file_size",
    "file_attributes",
    "region_count",
    "region_id",
    "region_shape_attributes",
    "region_attributes",
)


# ----------------------------------------------------------------------------- writing input


def write_jpeg(path: Path, seed: int = 0, size: tuple[int, int] = (H, W)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, "JPEG", quality=90)
    return path


def write_images(root: Path, names: Iterable[str]) -> Path:
    for seed, name in enumerate(names):
        write_jpeg(root / name, seed)
    return root


def polygon(xs: Sequence[float], ys: Sequence[float]) -> Shape:
    return {"name": "polygon", "all_points_x": list(xs), "all_points_y": list(ys)}


def rect(x: float, y: float, width: float, height: float) -> Shape:
    return {"name": "rect", "x": x, "y": y, "width": width, "height": height}


def left(label: str, attr: str = "class") -> Region:
    """The left half of the image."""
    return rect(0, 0, W // 2, H), {attr: label}


def right(label: str, attr: str = "class") -> Region:
    """The right half of the image."""
    return rect(W // 2, 0, W // 2, H), {attr: label}


def via_rows(images: Mapping[str, Sequence[Region]]) -> list[list[Any]]:
    rows: list[list[Any]] = []
    for name, regions in images.items():
        if not regions:
            rows.append([name, 1234, "{}", 0, 0, "{}", "{}"])
        for i, (shape, attrs) in enumerate(regions):
            rows.append([name, 1234, "{}", len(regions), i, json.dumps(shape), json.dumps(attrs)])
    return rows


def write_csv(
    path: Path, rows: Iterable[Sequence[Any]], header: Sequence[str] = VIA_HEADER
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_via_csv(path: Path, images: Mapping[str, Sequence[Region]]) -> Path:
    return write_csv(path, via_rows(images))


def write_via_json(path: Path, images: Mapping[str, Sequence[Region]]) -> Path:
    """A VIA 2 annotation export (the object keyed by file name + size)."""
    data = {
        f"{name}1234": {
            "filename": name,
            "size": 1234,
            "regions": [{"shape_attributes": s, "region_attributes": a} for s, a in regions],
            "file_attributes": {},
        }
        for name, regions in images.items()
    }
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return path


def labelme_shape(
    label: str, points: Sequence[tuple[float, float]], kind: str = "polygon"
) -> Shape:
    return {"label": label, "points": [list(p) for p in points], "shape_type": kind}


def write_labelme(
    path: Path, image_path: str, shapes: Sequence[Shape], size: tuple[int, int] = (H, W)
) -> Path:
    data: dict[str, Any] = {
        "version": "5.4.1",
        "flags": {},
        "shapes": list(shapes),
        "imagePath": image_path,
        "imageData": None,
        "imageHeight": size[0],
        "imageWidth": size[1],
    }
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return path


def coco_data(names: Sequence[str]) -> dict[str, Any]:
    """Each image gets one square polygon of category "a" (id 1)."""
    return {
        "images": [
            {"id": i + 1, "file_name": name, "width": W, "height": H}
            for i, name in enumerate(names)
        ],
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
        "annotations": [
            {
                "id": i + 1,
                "image_id": i + 1,
                "category_id": 1,
                "segmentation": [[4, 4, 20, 4, 20, 20, 4, 20]],
                "area": 256,
                "bbox": [4, 4, 16, 16],
                "iscrowd": 0,
            }
            for i in range(len(names))
        ],
    }


# ----------------------------------------------------------------------------- running, checks


NOTES = ("classes (", "warning: ", "note: ")


def prepare(cli: Cli, source: Path, out: Path, *args: str | Path, fmt: str = "via") -> CliResult:
    return cli("prepare", source, "--format", fmt, "-o", out, "-q", *args)


def error_line(result: CliResult, *needles: str, code: int | None = None) -> str:
    """The one "Error:" line, last on stderr, naming every needle.

    Only the notes printed while reading (the class list, warnings) may come before it.
    """
    assert result.exit_code != 0, result.stdout + result.stderr
    if code is not None:
        assert result.exit_code == code, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("Error: "), result.stderr
    assert all(line.startswith(NOTES) for line in lines[:-1]), result.stderr
    for needle in needles:
        assert needle in lines[-1], (needle, lines[-1])
    return lines[-1]


def assert_nothing_written(out: Path) -> None:
    if out.exists():
        assert not (out / "manifest.json").exists()
        assert not (out / "images").exists()
        assert not (out / "masks").exists()


def ok(result: CliResult) -> CliResult:
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    return result


def mask(out: Path, key: str) -> np.ndarray:
    return np.asarray(Image.open(out / "masks" / "classes" / f"{key}.png"))


def manifest(out: Path) -> dict[str, Any]:
    return json.loads((out / "manifest.json").read_text())


def scheme(out: Path) -> dict[str, Any]:
    return manifest(out)["schemes"]["classes"]


def split_keys(out: Path) -> dict[str, list[str]]:
    return {name: [e["key"] for e in entries] for name, entries in manifest(out)["splits"].items()}


@pytest.fixture
def two(tmp_path: Path) -> Path:
    """SOURCE with IMG_1.jpg and IMG_2.jpg."""
    return write_images(tmp_path / "src", ["IMG_1.jpg", "IMG_2.jpg"])


# ----------------------------------------------------------------------------- 1. VIA CSV rows


def test_csv_row_with_wrong_column_count_names_file_and_line(
    cli: Cli, two: Path, tmp_path: Path
) -> None:
    rows = via_rows({"IMG_1.jpg": [left("a")], "IMG_2.jpg": [left("b")]})
    rows[1] = rows[1][:6]  # line 3 of the file (the header is line 1)
    write_csv(two / "via.csv", rows)
    out = tmp_path / "out"
    error_line(prepare(cli, two, out), "via.csv:3", "7 columns", code=1)
    assert_nothing_written(out)


def test_csv_cell_that_is_not_json_names_file_line_and_column(
    cli: Cli, two: Path, tmp_path: Path
) -> None:
    rows = via_rows({"IMG_1.jpg": [left("a")], "IMG_2.jpg": [left("b")]})
    rows[1][5] = '{"name": "polygon", "all_points_x": [1, 2'
    write_csv(two / "via.csv", rows)
    out = tmp_path / "out"
    error_line(prepare(cli, two, out), "via.csv:3", "region_shape_attributes", code=1)
    assert_nothing_written(out)


def test_csv_with_another_header_is_refused(cli: Cli, two: Path, tmp_path: Path) -> None:
    rows = via_rows({"IMG_1.jpg": [left("a")]})
    write_csv(two / "via.csv", rows, header=("file", *VIA_HEADER[1:]))
    out = tmp_path / "out"
    error_line(prepare(cli, two, out), "via.csv:1", "not a VIA CSV", code=1)
    assert_nothing_written(out)


# ----------------------------------------------------------------------------- 2. JSON files

BROKEN_JSON = '{\n  "a": 1,\n  "b": [1, 2,,\n}\n'
"""Invalid on line 3."""


def test_malformed_via_json_names_file_and_line(cli: Cli, two: Path, tmp_path: Path) -> None:
    (two / "via.json").write_text(BROKEN_JSON)
    out = tmp_path / "out"
    error_line(prepare(cli, two, out), "via.json:3", "not valid JSON", code=1)
    assert_nothing_written(out)


def test_malformed_labelme_json_names_file_and_line(cli: Cli, two: Path, tmp_path: Path) -> None:
    write_labelme(two / "IMG_1.json", "IMG_1.jpg", [labelme_shape("a", [(0, 0), (9, 0), (9, 9)])])
    (two / "IMG_2.json").write_text(BROKEN_JSON)
    out = tmp_path / "out"
    error_line(prepare(cli, two, out, fmt="labelme"), "IMG_2.json:3", "not valid JSON", code=1)
    assert_nothing_written(out)


def test_malformed_coco_json_names_file_and_line(cli: Cli, two: Path, tmp_path: Path) -> None:
    (two / "instances.json").write_text(BROKEN_JSON)
    out = tmp_path / "out"
    error_line(prepare(cli, two, out, fmt="coco"), "instances.json:3", "not valid JSON", code=1)
    assert_nothing_written(out)


def test_labelme_without_shapes_names_the_key(cli: Cli, two: Path, tmp_path: Path) -> None:
    path = write_labelme(two / "IMG_1.json", "IMG_1.jpg", [])
    data = json.loads(path.read_text())
    del data["shapes"]
    path.write_text(json.dumps(data))
    out = tmp_path / "out"
    error_line(prepare(cli, two, out, fmt="labelme"), "IMG_1.json", "'shapes'", code=1)
    assert_nothing_written(out)


def test_coco_annotation_without_segmentation_names_the_key(
    cli: Cli, two: Path, tmp_path: Path
) -> None:
    data = coco_data(["IMG_1.jpg", "IMG_2.jpg"])
    del data["annotations"][1]["segmentation"]
    (two / "instances.json").write_text(json.dumps(data))
    out = tmp_path / "out"
    line = error_line(prepare(cli, two, out, fmt="coco"), "instances.json", "'segmentation'")
    assert "annotations[1]" in line
    assert_nothing_written(out)


def test_via_json_region_without_shape_attributes_names_the_key(
    cli: Cli, two: Path, tmp_path: Path
) -> None:
    path = write_via_json(two / "via.json", {"IMG_1.jpg": [left("a")]})
    data = json.loads(path.read_text())
    del data["IMG_1.jpg1234"]["regions"][0]["shape_attributes"]
    path.write_text(json.dumps(data))
    out = tmp_path / "out"
    error_line(prepare(cli, two, out), "via.json", "'shape_attributes'", code=1)
    assert_nothing_written(out)


# ----------------------------------------------------------------------------- 3. < 3 points


def test_polygon_of_two_points_is_skipped_with_a_warning(
    cli: Cli, two: Path, tmp_path: Path
) -> None:
    thin = (polygon([2, 40], [2, 30]), {"class": "line"})
    write_via_csv(two / "via.csv", {"IMG_1.jpg": [left("a"), thin], "IMG_2.jpg": [right("a")]})
    out = tmp_path / "out"
    result = ok(prepare(cli, two, out))
    warnings = [line for line in result.stderr.splitlines() if "fewer than 3 points" in line]
    assert len(warnings) == 1 and warnings[0].startswith(
        "warning: skipped 1 region(s) with fewer than 3 points (e.g. "
    )
    ids = dict(enumerate(scheme(out)["classes"]))
    assert ids == {0: "background", 1: "a", 2: "line"}
    first = mask(out, "IMG_1")
    assert (first == 2).sum() == 0  # the two-point region is not painted
    assert (first[:, : W // 2] == 1).all() and (first[:, W // 2 :] == 0).all()
    assert (mask(out, "IMG_2")[:, W // 2 :] == 1).all()


# ----------------------------------------------------------------------------- 4. outside


def test_coordinates_outside_the_image_are_clipped_and_counted(
    cli: Cli, two: Path, tmp_path: Path
) -> None:
    wide = (polygon([-10, W + 20, W + 20, -10], [8, 8, 16, 16]), {"class": "a"})
    write_via_csv(two / "via.csv", {"IMG_1.jpg": [wide], "IMG_2.jpg": [left("a")]})
    out = tmp_path / "out"
    result = ok(prepare(cli, two, out))
    assert "note: 1 region(s) reached outside their image and were clipped to it" in result.stderr
    painted = mask(out, "IMG_1")
    assert painted.shape == (H, W)
    assert (painted[8:16, :] == 1).all()  # from the left edge to the right edge
    assert (painted[:8] == 0).all() and (painted[16:] == 0).all()


# ----------------------------------------------------------------------------- 5. unknown class


def test_class_not_in_classes_lists_the_known_ones(cli: Cli, two: Path, tmp_path: Path) -> None:
    write_via_csv(two / "via.csv", {"IMG_1.jpg": [left("car")], "IMG_2.jpg": [left("cat")]})
    out = tmp_path / "out"
    result = prepare(cli, two, out, "--classes", "car,road")
    line = error_line(result, "'cat'", "car, road", "via.csv:3", code=1)
    assert "--classes" in line and "--ignore" in line
    assert_nothing_written(out)


def test_coco_category_not_in_classes_lists_the_known_ones(
    cli: Cli, two: Path, tmp_path: Path
) -> None:
    (two / "instances.json").write_text(json.dumps(coco_data(["IMG_1.jpg", "IMG_2.jpg"])))
    out = tmp_path / "out"
    result = prepare(cli, two, out, "--classes", "a,c", fmt="coco")
    error_line(result, "'b'", "a, c", code=1)
    assert_nothing_written(out)


# ----------------------------------------------------------------------------- 6. missing, extra


def test_missing_and_unannotated_images_are_one_summary_line_each(cli: Cli, tmp_path: Path) -> None:
    source = write_images(
        tmp_path / "src", ["IMG_1.jpg", "IMG_2.jpg", "extra_1.jpg", "extra_2.jpg"]
    )
    regions = {
        "IMG_1.jpg": [left("a")],
        "IMG_2.jpg": [right("a")],
        "gone_1.jpg": [left("a")],
        "gone_2.jpg": [left("a")],
        "gone_3.jpg": [left("a")],
    }
    write_via_csv(source / "via.csv", regions)
    out = tmp_path / "out"
    result = ok(prepare(cli, source, out))
    lines = result.stderr.splitlines()
    missing = [line for line in lines if "not found" in line]
    extra = [line for line in lines if "without annotations" in line]
    assert len(missing) == 1 and missing[0].startswith("warning: 3 annotated image(s)"), lines
    assert "gone_1.jpg" in missing[0]
    assert len(extra) == 1 and extra[0].startswith("warning: 2 image(s) without"), lines
    assert "extra_1.jpg" in extra[0]
    assert sorted(k for keys in split_keys(out).values() for k in keys) == ["IMG_1", "IMG_2"]


# ----------------------------------------------------------------------------- 7. same name


def test_same_image_name_in_two_folders_is_an_error(cli: Cli, tmp_path: Path) -> None:
    source = write_images(tmp_path / "src", ["a/IMG_1.jpg", "b/IMG_1.jpg", "IMG_2.jpg"])
    write_via_csv(source / "via.csv", {"IMG_1.jpg": [left("a")], "IMG_2.jpg": [left("a")]})
    out = tmp_path / "out"
    line = error_line(prepare(cli, source, out), "IMG_1.jpg", code=1)
    assert "a/IMG_1.jpg" in line and "b/IMG_1.jpg" in line
    assert_nothing_written(out)


def test_same_stem_with_two_suffixes_is_an_error(cli: Cli, tmp_path: Path) -> None:
    """IMG_1.jpg and IMG_1.png would both be written as images/IMG_1.png."""
    source = write_images(tmp_path / "src", ["IMG_1.jpg", "other/IMG_1.png"])
    write_via_csv(source / "via.csv", {"IMG_1.jpg": [left("a")], "IMG_1.png": [left("a")]})
    out = tmp_path / "out"
    error_line(prepare(cli, source, out), "'IMG_1'", "rename one", code=1)
    assert_nothing_written(out)


# ----------------------------------------------------------------------------- 8. option misuse


@pytest.mark.parametrize(
    ("fmt", "args", "needle"),
    [
        ("cityscapes", ("--classes", "a,b"), "--classes"),
        ("cityscapes", ("--test-ratio", "0.2"), "--test-ratio"),
        ("via", ("--limit", "3"), "--limit"),
        ("via", ("--split-by", "image"), "--split-by"),
        ("labelme", ("--class-attr", "kind"), "--class-attr"),
        ("via", ("--test-ratio", "0.6", "--val-ratio", "0.5"), "--test-ratio"),
    ],
)
def test_option_misuse_is_a_one_line_usage_error(
    cli: Cli, two: Path, tmp_path: Path, fmt: str, args: tuple[str, ...], needle: str
) -> None:
    write_via_csv(two / "via.csv", {"IMG_1.jpg": [left("a")], "IMG_2.jpg": [left("a")]})
    out = tmp_path / "out"
    error_line(prepare(cli, two, out, *args, fmt=fmt), needle, code=2)
    assert_nothing_written(out)


# ----------------------------------------------------------------------------- 9. class attribute


def test_ambiguous_region_attribute_asks_to_name_one(cli: Cli, two: Path, tmp_path: Path) -> None:
    regions: dict[str, list[Region]] = {
        "IMG_1.jpg": [(rect(0, 0, 24, 32), {"kind": "car", "colour": "red"})],
        "IMG_2.jpg": [(rect(0, 0, 24, 32), {"kind": "road", "colour": "grey"})],
    }
    write_via_csv(two / "via.csv", regions)
    out = tmp_path / "out"
    line = error_line(prepare(cli, two, out), "via.csv", "kind", "colour", "name one", code=1)
    assert "--class-attr" in line
    assert_nothing_written(out)

    ok(prepare(cli, two, out, "--class-attr", "kind"))
    assert scheme(out)["classes"] == ["background", "car", "road"]
    assert (mask(out, "IMG_2")[:, :24] == 2).all()


def test_class_attr_that_no_region_has_lists_those_found(
    cli: Cli, two: Path, tmp_path: Path
) -> None:
    write_via_csv(two / "via.csv", {"IMG_1.jpg": [left("a", attr="kind")]})
    out = tmp_path / "out"
    error_line(prepare(cli, two, out, "--class-attr", "type"), "'type'", "kind", code=1)
    assert_nothing_written(out)


# ----------------------------------------------------------------------------- 10. keep dataset


def test_failed_rerun_leaves_the_first_dataset_intact(cli: Cli, two: Path, tmp_path: Path) -> None:
    csv_path = write_via_csv(two / "via.csv", {"IMG_1.jpg": [left("a")], "IMG_2.jpg": [right("b")]})
    out = tmp_path / "out"
    ok(prepare(cli, two, out, "--classes", "a,b"))
    before = (out / "manifest.json").read_bytes()
    files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())

    write_via_csv(csv_path, {"IMG_1.jpg": [left("a")], "IMG_2.jpg": [right("c")]})
    error_line(prepare(cli, two, out, "--classes", "a,b"), "'c'", code=1)
    assert (out / "manifest.json").read_bytes() == before
    assert sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file()) == files
    assert (mask(out, "IMG_2")[:, W // 2 :] == 2).all()


def test_rerun_failing_on_a_corrupt_image_leaves_the_first_dataset_intact(
    cli: Cli, two: Path, tmp_path: Path
) -> None:
    write_via_csv(two / "via.csv", {"IMG_1.jpg": [left("a")], "IMG_2.jpg": [right("b")]})
    out = tmp_path / "out"
    ok(prepare(cli, two, out))
    before = (out / "manifest.json").read_bytes()

    (two / "IMG_2.jpg").write_bytes(b"this is not a JPEG")
    error_line(prepare(cli, two, out), "IMG_2.jpg", code=1)
    assert (out / "manifest.json").read_bytes() == before


def test_labelme_size_mismatch_writes_nothing(cli: Cli, two: Path, tmp_path: Path) -> None:
    square = [(2, 2), (20, 2), (20, 20), (2, 20)]
    write_labelme(two / "IMG_1.json", "IMG_1.jpg", [labelme_shape("a", square)])
    write_labelme(two / "IMG_2.json", "IMG_2.jpg", [labelme_shape("a", square)], size=(W, H))
    out = tmp_path / "out"
    line = error_line(prepare(cli, two, out, "--workers", "1", fmt="labelme"), "IMG_2.json")
    assert "32x48" in line or "48x32" in line
    assert_nothing_written(out)


# ----------------------------------------------------------------------------- 11. class ids


def test_classes_option_fixes_the_ids(cli: Cli, two: Path, tmp_path: Path) -> None:
    write_via_csv(two / "via.csv", {"IMG_1.jpg": [left("a"), right("b")], "IMG_2.jpg": []})
    out = tmp_path / "out"
    result = ok(prepare(cli, two, out, "--classes", "b,a"))
    assert "classes (given by --classes): 0 background, 1 b, 2 a" in result.stderr
    assert scheme(out)["classes"] == ["background", "b", "a"]
    painted = mask(out, "IMG_1")
    assert (painted[:, : W // 2] == 2).all() and (painted[:, W // 2 :] == 1).all()
    assert (mask(out, "IMG_2") == 0).all()


def test_classes_file_as_labelme_writes_it(cli: Cli, two: Path, tmp_path: Path) -> None:
    write_via_csv(two / "via.csv", {"IMG_1.jpg": [left("a"), right("b")], "IMG_2.jpg": []})
    labels = tmp_path / "labels.txt"
    labels.write_text("_background_\nb\na\n")
    out = tmp_path / "out"
    ok(prepare(cli, two, out, "--classes", labels))
    assert scheme(out)["classes"] == ["background", "b", "a"]
    assert scheme(out)["ignore_class"] is None
    assert (mask(out, "IMG_1")[:, : W // 2] == 2).all()


def test_first_appearance_order_is_printed(cli: Cli, two: Path, tmp_path: Path) -> None:
    regions = {"IMG_1.jpg": [left("car"), right("tree")], "IMG_2.jpg": [left("road"), right("car")]}
    write_via_csv(two / "via.csv", regions)
    out = tmp_path / "out"
    result = ok(prepare(cli, two, out))
    expected = "classes (in order of first appearance): 0 background, 1 car, 2 tree, 3 road"
    assert expected in result.stderr.splitlines()
    assert scheme(out)["classes"] == ["background", "car", "tree", "road"]
    assert (mask(out, "IMG_2")[:, : W // 2] == 3).all()


# ----------------------------------------------------------------------------- 12. ignore, void


def test_ignore_class_is_painted_255_and_recorded(cli: Cli, two: Path, tmp_path: Path) -> None:
    write_via_csv(
        two / "via.csv", {"IMG_1.jpg": [left("a"), right("blur")], "IMG_2.jpg": [left("b")]}
    )
    out = tmp_path / "out"
    result = ok(prepare(cli, two, out, "--ignore", "blur"))
    assert "ignored: blur" in result.stderr
    record = scheme(out)
    assert record["classes"] == ["background", "a", "b"]
    assert record["ignore_class"] == "blur" and record["ignore_index"] == 255
    assert record["void_classes"] == []
    painted = mask(out, "IMG_1")
    assert (painted[:, W // 2 :] == 255).all() and (painted[:, : W // 2] == 1).all()


def test_background_void_is_recorded(cli: Cli, two: Path, tmp_path: Path) -> None:
    write_via_csv(two / "via.csv", {"IMG_1.jpg": [left("a")], "IMG_2.jpg": [left("b")]})
    out = tmp_path / "out"
    ok(prepare(cli, two, out, "--background", "void"))
    assert scheme(out)["void_classes"] == [0]
    assert (mask(out, "IMG_1")[:, W // 2 :] == 0).all()


# ----------------------------------------------------------------------------- 13. palette


def test_palette_file_colours_reach_the_manifest(cli: Cli, two: Path, tmp_path: Path) -> None:
    write_via_csv(two / "via.csv", {"IMG_1.jpg": [left("a")], "IMG_2.jpg": [left("b")]})
    palette = tmp_path / "palette.json"
    palette.write_text(json.dumps({"b": [200, 100, 50], "a": [10, 20, 30]}))
    out = tmp_path / "out"
    ok(prepare(cli, two, out, "--palette", palette))
    record = scheme(out)
    assert record["classes"] == ["background", "a", "b"]
    assert record["palette"] == [[0, 0, 0], [10, 20, 30], [200, 100, 50]]


def test_generated_palette_is_distinct_with_black_background(
    cli: Cli, two: Path, tmp_path: Path
) -> None:
    names = [f"c{i}" for i in range(12)]
    regions = {"IMG_1.jpg": [left(n) for n in names[:6]], "IMG_2.jpg": [left(n) for n in names[6:]]}
    write_via_csv(two / "via.csv", regions)
    out = tmp_path / "out"
    ok(prepare(cli, two, out))
    colours = [tuple(c) for c in scheme(out)["palette"]]
    assert len(colours) == 13
    assert colours[0] == (0, 0, 0)
    assert len(set(colours)) == 13


def test_malformed_palette_names_the_file(cli: Cli, two: Path, tmp_path: Path) -> None:
    write_via_csv(two / "via.csv", {"IMG_1.jpg": [left("a")]})
    palette = tmp_path / "palette.json"
    palette.write_text(json.dumps({"a": [10, 20]}))
    out = tmp_path / "out"
    error_line(prepare(cli, two, out, "--palette", palette), "palette.json", "[r, g, b]", code=1)
    assert_nothing_written(out)


# ----------------------------------------------------------------------------- 14. ratios, seed


@pytest.fixture
def twenty(tmp_path: Path) -> Path:
    names = [f"img_{i:02d}.jpg" for i in range(20)]
    source = tmp_path / "src"
    for i, name in enumerate(names):
        write_jpeg(source / name, i, size=(8, 8))
    write_via_csv(source / "via.csv", {n: [(rect(0, 0, 4, 4), {"class": "a"})] for n in names})
    return source


def test_split_ratios_and_seed(cli: Cli, twenty: Path, tmp_path: Path) -> None:
    ratios = ("--val-ratio", "0.2", "--test-ratio", "0.2")
    runs = {}
    for name, seed in (("one", "3"), ("again", "3"), ("other", "4")):
        out = tmp_path / name
        ok(prepare(cli, twenty, out, *ratios, "--seed", seed, "--workers", "2"))
        runs[name] = split_keys(out)
    assert runs["one"] == runs["again"]
    assert runs["one"] != runs["other"]
    for split in runs.values():
        assert abs(len(split["val"]) - 4) <= 1 and abs(len(split["test"]) - 4) <= 1
        assert sum(len(keys) for keys in split.values()) == 20
        assert len({k for keys in split.values() for k in keys}) == 20


# ----------------------------------------------------------------------------- 15. group-by


def test_group_by_keeps_each_group_in_one_split(cli: Cli, tmp_path: Path) -> None:
    source = tmp_path / "src"
    names = [f"seq{g:02d}_{f:04d}.jpg" for g in range(1, 7) for f in range(1, 4)]
    for i, name in enumerate(names):
        write_jpeg(source / name, i, size=(8, 8))
    write_via_csv(source / "via.csv", {n: [(rect(0, 0, 4, 4), {"class": "a"})] for n in names})
    out = tmp_path / "out"
    args = ("--group-by", r"seq(\d+)_", "--val-ratio", "0.2", "--test-ratio", "0.2")
    ok(prepare(cli, source, out, *args))
    data = manifest(out)
    split_of: dict[str, set[str]] = {}
    for split, entries in data["splits"].items():
        for entry in entries:
            assert entry["group"] == entry["key"][3:5]
            split_of.setdefault(entry["group"], set()).add(split)
    assert sorted(split_of) == ["01", "02", "03", "04", "05", "06"]
    assert all(len(found) == 1 for found in split_of.values()), split_of
    assert all(len(data["splits"][s]) % 3 == 0 for s in ("train", "val", "test"))
    assert data["splits"]["val"] and data["splits"]["test"]
    assert {s: sorted(g) for s, g in data["groups"].items()} == {
        s: sorted({e["group"] for e in entries}) for s, entries in data["splits"].items()
    }


def test_group_by_that_is_not_a_regex_is_a_usage_error(cli: Cli, two: Path, tmp_path: Path) -> None:
    write_via_csv(two / "via.csv", {"IMG_1.jpg": [left("a")]})
    out = tmp_path / "out"
    error_line(prepare(cli, two, out, "--group-by", "seq(\\d+"), "--group-by", code=2)
    assert_nothing_written(out)


# ----------------------------------------------------------------------------- 16. split folders


def test_split_folders_are_used_as_they_are(cli: Cli, tmp_path: Path) -> None:
    layout = ["train/t1.jpg", "train/t2.jpg", "train/t3.jpg", "valid/v1.jpg", "test/s1.jpg"]
    source = write_images(tmp_path / "src", layout)
    names = [Path(n).name for n in layout]
    write_via_csv(source / "via.csv", {n: [left("a")] for n in names})
    out = tmp_path / "out"
    ok(prepare(cli, source, out, "--val-ratio", "0.5", "--test-ratio", "0.4"))
    assert split_keys(out) == {"train": ["t1", "t2", "t3"], "val": ["v1"], "test": ["s1"]}


def test_split_folders_mixed_with_loose_images_is_a_usage_error(cli: Cli, tmp_path: Path) -> None:
    layout = ["train/t1.jpg", "val/v1.jpg", "loose.jpg"]
    source = write_images(tmp_path / "src", layout)
    write_via_csv(source / "via.csv", {Path(n).name: [left("a")] for n in layout})
    out = tmp_path / "out"
    error_line(prepare(cli, source, out), "loose.jpg", "train/ val/ test/", code=2)
    assert_nothing_written(out)


# ----------------------------------------------------------------------------- 17. re-running


def test_rerun_is_already_prepared_until_the_annotations_change(
    cli: Cli, two: Path, tmp_path: Path
) -> None:
    csv_path = write_via_csv(two / "via.csv", {"IMG_1.jpg": [left("a")], "IMG_2.jpg": [left("b")]})
    out = tmp_path / "out"
    first = ok(prepare(cli, two, out))
    assert "already prepared" not in first.stdout and "manifest:" in first.stdout

    again = ok(prepare(cli, two, out))
    assert "already prepared" in again.stdout

    stat = csv_path.stat()
    os.utime(csv_path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    touched = ok(prepare(cli, two, out))
    assert "already prepared" not in touched.stdout and "manifest:" in touched.stdout
    assert "already prepared" in ok(prepare(cli, two, out)).stdout

    write_via_csv(csv_path, {"IMG_1.jpg": [right("a")], "IMG_2.jpg": [left("b")]})
    edited = ok(prepare(cli, two, out))
    assert "already prepared" not in edited.stdout
    painted = mask(out, "IMG_1")
    assert (painted[:, W // 2 :] == 1).all() and (painted[:, : W // 2] == 0).all()


def test_rerun_with_other_options_rewrites(cli: Cli, two: Path, tmp_path: Path) -> None:
    write_via_csv(two / "via.csv", {"IMG_1.jpg": [left("a"), right("b")], "IMG_2.jpg": []})
    out = tmp_path / "out"
    ok(prepare(cli, two, out))
    assert (mask(out, "IMG_1")[:, : W // 2] == 1).all()
    changed = ok(prepare(cli, two, out, "--classes", "b,a"))
    assert "already prepared" not in changed.stdout
    assert (mask(out, "IMG_1")[:, : W // 2] == 2).all()


# ----------------------------------------------------------------------------- output in SOURCE


def test_via_output_inside_source_reruns_cleanly(cli: Cli, two: Path) -> None:
    write_via_csv(two / "via.csv", {"IMG_1.jpg": [left("a")], "IMG_2.jpg": [left("b")]})
    out = two / "prepared"
    first = ok(prepare(cli, two, out))
    assert "without annotations" not in first.stderr
    again = ok(prepare(cli, two, out))
    assert "already prepared" in again.stdout
    assert "without annotations" not in again.stderr


def test_labelme_output_inside_source_reruns_cleanly(cli: Cli, two: Path) -> None:
    square = [(2, 2), (20, 2), (20, 20), (2, 20)]
    write_labelme(two / "IMG_1.json", "IMG_1.jpg", [labelme_shape("a", square)])
    write_labelme(two / "IMG_2.json", "IMG_2.jpg", [labelme_shape("b", square)])
    out = two / "prepared"
    ok(prepare(cli, two, out, fmt="labelme"))
    assert "already prepared" in ok(prepare(cli, two, out, fmt="labelme")).stdout


# ----------------------------------------------------------------------------- names in notes


def test_notes_show_names_with_brackets_as_they_are(cli: Cli, two: Path, tmp_path: Path) -> None:
    write_jpeg(two / "IMG [edited].jpg")
    write_via_csv(two / "via.csv", {"IMG_1.jpg": [left("car[b]")], "IMG_2.jpg": [left("a")]})
    out = tmp_path / "out"
    result = ok(prepare(cli, two, out))
    assert "1 car[b], 2 a" in result.stderr
    assert "(e.g. IMG [edited].jpg)" in result.stderr
    assert scheme(out)["classes"] == ["background", "car[b]", "a"]


def test_class_name_like_a_closing_tag_is_no_traceback(cli: Cli, two: Path, tmp_path: Path) -> None:
    write_via_csv(two / "via.csv", {"IMG_1.jpg": [left("a[/x]")], "IMG_2.jpg": [left("a")]})
    out = tmp_path / "out"
    ok(prepare(cli, two, out))
    assert scheme(out)["classes"] == ["background", "a[/x]", "a"]
