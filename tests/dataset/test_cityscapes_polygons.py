"""Cityscapes polygons -> labelIds equal to cityscapesScripts' json2labelImg, and prepare's
`labels=polygons` and `annotations=coarse` on real (synthetic) packages."""

from __future__ import annotations

import json
import re
import shutil
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cityscapesscripts.preparation.json2labelImg import json2labelImg
from PIL import Image

from cityseg.config import GroundTruth, LabelSource
from cityseg.dataset.annotations.cityscapes_polygons import (
    parse_polygons,
    polygons_to_label_ids,
    rasterise_annotation,
    read_polygons_file,
)
from cityseg.dataset.manifest import iter_entries, read_manifest
from cityseg.dataset.prepare import prepare_dataset
from cityseg.dataset.remap import remap_array
from cityseg.dataset.schemes import get_scheme
from cityseg.dataset.synthetic import RawDataset
from cityseg.errors import DataError, UsageError
from cityseg.images import read_mask

FINE = "gtFine_trainvaltest.zip"
LEFT = "leftImg8bit_trainvaltest.zip"
H, W = 40, 64


def obj(label: str, polygon: list[list[float]], **extra: Any) -> dict[str, Any]:
    return {"label": label, "polygon": polygon, **extra}


def write_annotation(path: Path, objects: list[dict[str, Any]], h: int = H, w: int = W) -> Path:
    path.write_text(json.dumps({"imgHeight": h, "imgWidth": w, "objects": objects}, indent=1))
    return path


def reference(json_path: Path, tmp_path: Path) -> np.ndarray:
    """What cityscapesScripts' json2labelImg writes, read back from its PNG."""
    out = tmp_path / f"{json_path.stem}_ref.png"
    json2labelImg(str(json_path), str(out), "ids")
    with Image.open(out) as image:
        assert image.mode == "L"
        return np.array(image)


CASES: dict[str, list[dict[str, Any]]] = {
    "overlapping": [
        obj("road", [[0, 20], [63, 20], [63, 39], [0, 39]]),
        obj("car", [[10, 15], [40, 15], [40, 30], [10, 30]]),
        obj("person", [[20, 5], [30, 5], [30, 35], [20, 35]]),
    ],
    "deleted_on_top": [
        obj("sky", [[0, 0], [63, 0], [63, 39], [0, 39]]),
        obj("building", [[5, 5], [50, 5], [50, 30]], deleted=1),
        obj("not a label", [[5, 5], [9, 5], [9, 9]], deleted=1),  # deleted before the lookup
        obj("wall", [[1, 1]], deleted=True),  # so is a degenerate polygon
    ],
    "groups_and_license_plate": [
        obj("cargroup", [[2, 2], [30, 2], [30, 20], [2, 20]]),
        obj("persongroup", [[32, 2], [60, 2], [46, 30]]),
        obj("polegroup", [[5, 25], [8, 25], [8, 39], [5, 39]]),  # a label of its own
        obj("bicyclegroup", [[40, 30], [60, 30], [60, 38]]),
        obj("license plate", [[10, 10], [20, 10], [20, 14], [10, 14]]),
    ],
    "border": [
        obj("road", [[0, 0], [63, 0], [63, 39], [0, 39]]),  # touches all four edges
        obj("sidewalk", [[-10, -5], [20, -5], [20, 50], [-10, 50]]),  # crosses them
        obj("vegetation", [[50, 30], [200, 10], [80, 100]]),
        obj("terrain", [[-100, -100], [-50, -100], [-50, -60]]),  # wholly outside
    ],
    "floats_and_ints": [
        obj("building", [[0.4, 0.6], [30.5, 1.5], [28.49, 25.51], [2.5, 20.5]]),
        obj("fence", [[31.2, 3.7], [60.9, 5.1], [45, 33.3]]),
        obj("pole", [[12.5, 12.5], [13.5, 12.5], [13.5, 39.9], [12.5, 39.9]]),
        obj("traffic sign", [[40, 2], [44.999, 2], [44.999, 6.001], [40, 6.001]]),
    ],
    "degenerate": [
        obj("road", [[3, 3], [40, 3]]),  # two points: a line
        obj("car", [[5, 10], [5, 10]]),  # two equal points: a pixel
        obj("truck", [[2, 20], [30, 20], [60, 20]]),  # collinear
        obj("bus", [[50.5, 30.5], [50.6, 30.6], [50.7, 30.5]]),  # sub-pixel
        obj("rider", [[10, 30], [20, 38], [10, 38], [20, 30]]),  # self-crossing bow tie
    ],
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_rasterised_equals_json2labelimg(case: str, tmp_path: Path) -> None:
    path = write_annotation(tmp_path / f"{case}.json", CASES[case])
    ours = rasterise_annotation(read_polygons_file(path))
    assert ours.dtype == np.uint8 and ours.shape == (H, W)
    np.testing.assert_array_equal(ours, reference(path, tmp_path))


def test_what_the_cases_exercise(tmp_path: Path) -> None:
    """The cases above do hit the rules they are named after (not all-zero by accident)."""

    def draw(case: str) -> np.ndarray:
        return polygons_to_label_ids(
            json.dumps({"imgHeight": H, "imgWidth": W, "objects": CASES[case]}), case
        )

    assert (draw("deleted_on_top") == 23).all()  # sky only
    groups = draw("groups_and_license_plate")
    assert groups[12, 15] == 26  # the car under the plate, not the plate's -1
    assert {26, 24, 18, 33} <= set(np.unique(groups).tolist())
    assert set(np.unique(draw("degenerate")).tolist()) >= {7, 26, 27, 25}
    border = draw("border")
    assert border[0, 0] == 8 and border[-1, -1] == 21


def test_random_polygons_equal_json2labelimg(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    names = ["road", "car", "person", "sky", "cargroup", "license plate", "pole"]
    for n in range(25):
        objects = []
        for _ in range(int(rng.integers(1, 7))):
            count = int(rng.integers(2, 9))
            points = rng.uniform([-15, -15], [W + 15, H + 15], (count, 2))
            polygon = points.round(int(rng.integers(0, 3))).tolist()
            if rng.random() < 0.3:
                polygon = [[int(x), int(y)] for x, y in polygon]
            deleted = {"deleted": 1} if rng.random() < 0.1 else {}
            objects.append(obj(names[int(rng.integers(len(names)))], polygon, **deleted))
        path = write_annotation(tmp_path / f"random{n}.json", objects)
        ours = rasterise_annotation(read_polygons_file(path))
        np.testing.assert_array_equal(ours, reference(path, tmp_path), err_msg=f"random{n}")


def test_one_point_polygon_fails_here_and_upstream(tmp_path: Path) -> None:
    path = write_annotation(
        tmp_path / "one.json", [obj("road", [[1, 1], [9, 9]]), obj("car", [[4, 4]])]
    )
    with pytest.raises(TypeError):  # Pillow refuses it, and json2labelImg lets that escape
        reference(path, tmp_path)
    with pytest.raises(
        DataError, match=r"one\.json: objects\[1\]: a 'car' polygon needs at least 2"
    ):
        rasterise_annotation(read_polygons_file(path))


# --- bad input -----------------------------------------------------------------------------


def test_malformed_json_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{\n  "imgHeight": 4,\n  "imgWidth": 4,\n  "objects": [,]\n}')
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}:4: not valid JSON") as caught:
        read_polygons_file(path)
    assert "\n" not in str(caught.value)
    with pytest.raises(DataError, match=r"^pkg\.zip:gt/x\.json:4: not valid JSON"):
        parse_polygons(path.read_bytes(), "pkg.zip:gt/x.json")


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (
            {
                "imgHeight": 4,
                "imgWidth": 4,
                "objects": [obj("road", [[0, 0], [1, 1]]), {"label": "car"}],
            },
            r"objects\[1\]: missing 'polygon'",
        ),
        (
            {"imgHeight": 4, "imgWidth": 4, "objects": [{"polygon": [[0, 0], [1, 1]]}]},
            r"objects\[0\]: missing 'label'",
        ),
        ({"imgWidth": 4, "objects": []}, r"missing 'imgHeight'"),
        ({"imgHeight": 4, "imgWidth": 4}, r"missing 'objects'"),
        ({"imgHeight": 4, "imgWidth": 0, "objects": []}, r"'imgWidth' must be a positive integer"),
        (
            {"imgHeight": 4.5, "imgWidth": 4, "objects": []},
            r"'imgHeight' must be a positive integer",
        ),
        ({"imgHeight": 4, "imgWidth": 4, "objects": {}}, r"'objects' must be a list"),
        (
            {"imgHeight": 4, "imgWidth": 4, "objects": [obj("road", [[0, 0, 0], [1, 1]])]},
            r"objects\[0\]: 'polygon' must be a list of \[x, y\] pairs",
        ),
        (
            {"imgHeight": 4, "imgWidth": 4, "objects": [obj("road", [[0, "1"], [1, 1]])]},
            r"objects\[0\]: a 'polygon' coordinate must be a number",
        ),
        ({"imgHeight": 100000, "imgWidth": 100000, "objects": []}, r"beyond 100000000 pixels"),
        ([], r"expected a JSON object"),
    ],
)
def test_bad_documents_name_the_file_and_key(document: Any, message: str) -> None:
    with pytest.raises(DataError, match=rf"^x\.json: .*{message}") as caught:
        polygons_to_label_ids(json.dumps(document), "x.json")
    assert "\n" not in str(caught.value)


def test_non_finite_coordinate_is_refused() -> None:
    polygon = '{"label": "road", "polygon": [[NaN, 0], [1, 1]]}'
    text = f'{{"imgHeight": 4, "imgWidth": 4, "objects": [{polygon}]}}'
    with pytest.raises(DataError, match=r"coordinate nan is not a finite pixel position"):
        polygons_to_label_ids(text, "x.json")


def test_unknown_label_is_one_line_here_and_an_exit_upstream(tmp_path: Path) -> None:
    path = write_annotation(
        tmp_path / "u.json", [obj("road", [[0, 0], [5, 5]]), obj("hovercraft", [[0, 0], [5, 5]])]
    )
    with pytest.raises(DataError) as caught:
        rasterise_annotation(read_polygons_file(path))
    assert str(caught.value) == f"{path}: objects[1]: label 'hovercraft' is not a Cityscapes label"
    with pytest.raises(DataError, match="label 'group' is not a Cityscapes label"):
        polygons_to_label_ids(
            json.dumps(
                {"imgHeight": 2, "imgWidth": 2, "objects": [obj("group", [[0, 0], [1, 1]])]}
            ),
            "g",
        )
    with pytest.raises(SystemExit):  # json2labelImg prints an error and exits
        reference(path, tmp_path)


# --- prepare --labels polygons -------------------------------------------------------------


def polygons_members(zip_path: Path) -> dict[str, bytes]:
    """key -> polygons JSON bytes, for the train and val members of a gtFine zip."""
    with zipfile.ZipFile(zip_path) as archive:
        return {
            Path(name).name.removesuffix("_gtFine_polygons.json"): archive.read(name)
            for name in archive.namelist()
            if name.endswith("_gtFine_polygons.json") and "/test/" not in name
        }


def copy_raw(raw: RawDataset, target: Path) -> Path:
    target.mkdir(parents=True, exist_ok=True)
    for path in (raw.leftimg_zip, raw.gtfine_zip):
        shutil.copy2(path, target / path.name)
    return target


def replace_member(path: Path, name: str, data: bytes) -> None:
    with zipfile.ZipFile(path) as archive:
        members = [(info.filename, archive.read(info)) for info in archive.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for member, content in members:
            archive.writestr(member, data if member == name else content)


@pytest.fixture(scope="module")
def polygons_prepared(tmp_path_factory: pytest.TempPathFactory, raw_dataset: RawDataset) -> Path:
    out = tmp_path_factory.mktemp("polygons") / "ds"
    prepare_dataset(
        raw_dataset.root, out, labels=LabelSource.polygons, verify=False, show_progress=False
    )
    return out


def test_prepare_polygons_equals_json2labelimg(
    polygons_prepared: Path, raw_dataset: RawDataset, prepared: Path, tmp_path: Path
) -> None:
    documents = polygons_members(raw_dataset.gtfine_zip)
    entries = iter_entries(read_manifest(polygons_prepared))
    assert sorted(e["key"] for e in entries) == sorted(documents)
    scheme = get_scheme("categories")
    for entry in entries:
        json_path = tmp_path / f"{entry['key']}.json"
        json_path.write_bytes(documents[entry["key"]])
        ours = read_mask(polygons_prepared / entry["labelIds"])
        np.testing.assert_array_equal(ours, reference(json_path, tmp_path), err_msg=entry["key"])
        # The synthetic PNGs are cv2.fillPoly of the same integer polygons, which fills
        # some outline pixels Pillow leaves out (~1% here): close, but not equal.
        assert (ours == read_mask(prepared / entry["labelIds"])).mean() > 0.95
        mask = read_mask(polygons_prepared / entry["masks"]["categories"])
        np.testing.assert_array_equal(mask, remap_array(ours, scheme, name=entry["key"]))


def test_prepare_polygons_records_the_choice_and_resumes(
    polygons_prepared: Path, raw_dataset: RawDataset, prepared: Path
) -> None:
    index = read_manifest(polygons_prepared)
    assert index["options"]["labels"] == "polygons"
    assert "annotations" not in index["options"]
    assert "labels" not in read_manifest(prepared)["options"]  # defaults stay unrecorded
    report = prepare_dataset(
        raw_dataset.root,
        polygons_prepared,
        labels=LabelSource.polygons,
        verify=False,
        show_progress=False,
    )
    assert report.up_to_date


def test_switching_labels_in_one_output_is_refused(raw_dataset: RawDataset, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    prepare_dataset(raw_dataset.root, out, verify=False, show_progress=False, limit=1)
    with pytest.raises(UsageError, match="labelIds were made from labelIds PNGs"):
        prepare_dataset(
            raw_dataset.root, out, labels=LabelSource.polygons, verify=False, show_progress=False
        )


def test_prepare_bad_polygons_member_names_zip_member_and_line(
    raw_dataset: RawDataset, tmp_path: Path
) -> None:
    raw = copy_raw(raw_dataset, tmp_path / "raw")
    with zipfile.ZipFile(raw / FINE) as archive:
        victim = next(
            n for n in archive.namelist() if n.endswith("_gtFine_polygons.json") and "/val/" in n
        )
    replace_member(raw / FINE, victim, b'{"imgHeight": 64,\n "imgWidth": 128,\n "objects": [}')
    with pytest.raises(DataError) as caught:
        prepare_dataset(
            raw, tmp_path / "ds", labels=LabelSource.polygons, verify=False, show_progress=False
        )
    assert str(caught.value).startswith(f"{FINE}:{victim}:3: not valid JSON")
    assert "\n" not in str(caught.value)
    replace_member(
        raw / FINE, victim, json.dumps({"imgHeight": 64, "imgWidth": 100, "objects": []}).encode()
    )
    with pytest.raises(DataError, match=r"image is 128x64 but its polygons JSON says 100x64"):
        prepare_dataset(
            raw, tmp_path / "ds", labels=LabelSource.polygons, verify=False, show_progress=False
        )


def test_prepare_polygons_without_json_is_one_line(raw_dataset: RawDataset, tmp_path: Path) -> None:
    raw = copy_raw(raw_dataset, tmp_path / "raw")
    with zipfile.ZipFile(raw / FINE) as archive:
        kept = [
            (i.filename, archive.read(i))
            for i in archive.infolist()
            if not i.filename.endswith(".json")
        ]
    with zipfile.ZipFile(raw / FINE, "w") as archive:
        for name, data in kept:
            archive.writestr(name, data)
    with pytest.raises(
        DataError,
        match=r"holds no gtFine/\{train,val,test\}/<city>/\*_gtFine_polygons\.json labels",
    ):
        prepare_dataset(
            raw, tmp_path / "ds", labels=LabelSource.polygons, verify=False, show_progress=False
        )


# --- gtCoarse ------------------------------------------------------------------------------


def make_coarse(raw_dataset: RawDataset, raw: Path) -> dict[str, Path]:
    """A gtCoarse folder (raw/extracted/gtCoarse) from the synthetic gtFine, renamed, with
    one train_extra annotation whose image is not in leftImg8bit; returns key -> the
    annotation's files without their `labelIds.png`/`polygons.json` ending."""
    raw.mkdir(parents=True)
    shutil.copy2(raw_dataset.leftimg_zip, raw / LEFT)
    root = raw / "extracted"
    stems: dict[str, Path] = {}
    with zipfile.ZipFile(raw_dataset.gtfine_zip) as archive:
        for name in archive.namelist():
            if not name.startswith("gtFine/") or "/test/" in name:
                continue
            target = root / name.replace("gtFine", "gtCoarse")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(archive.read(name))
            if name.endswith("_labelIds.png"):
                key = Path(name).name.removesuffix("_gtFine_labelIds.png")
                stems[key] = target.with_name(f"{key}_gtCoarse_")
    extra = root / "gtCoarse/train_extra/erlangen/erlangen_000000_000019_gtCoarse_labelIds.png"
    extra.parent.mkdir(parents=True)
    shutil.copy2(next(root.glob("gtCoarse/train/*/*_labelIds.png")), extra)
    shutil.copy2(
        next(root.glob("gtCoarse/train/*/*_polygons.json")),
        extra.with_name("erlangen_000000_000019_gtCoarse_polygons.json"),
    )
    return stems


@pytest.mark.parametrize("labels", [LabelSource.labelids, LabelSource.polygons])
def test_prepare_coarse_folder(
    raw_dataset: RawDataset, tmp_path: Path, labels: LabelSource, messages: list[str]
) -> None:
    stems = make_coarse(raw_dataset, tmp_path / "raw")
    out = tmp_path / "ds"
    prepare_dataset(
        tmp_path / "raw",
        out,
        annotations=GroundTruth.coarse,
        labels=labels,
        verify=False,
        show_progress=False,
    )
    index = read_manifest(out)
    assert index["options"]["annotations"] == "coarse"
    assert ("labels" in index["options"]) == (labels is LabelSource.polygons)
    assert set(index["source"]) == {"leftImg8bit", "gtCoarse"}
    entries = iter_entries(index)
    assert sorted(e["key"] for e in entries) == sorted(stems)
    for entry in entries:
        stem = str(stems[entry["key"]])
        expected = (
            reference(Path(stem + "polygons.json"), tmp_path)
            if labels is LabelSource.polygons
            else read_mask(Path(stem + "labelIds.png"))
        )
        np.testing.assert_array_equal(read_mask(out / entry["labelIds"]), expected)
    text = "\n".join(messages)
    assert (
        "1 " in text and "without an image skipped" in text and "1 of them in train_extra" in text
    )
    assert "unrecognised" not in text


def test_coarse_missing_is_one_line(raw_dataset: RawDataset, tmp_path: Path) -> None:
    raw = copy_raw(raw_dataset, tmp_path / "raw")
    with pytest.raises(DataError, match=r"has no gtCoarse\.zip \(nor an extracted gtCoarse/"):
        prepare_dataset(raw, tmp_path / "ds", annotations=GroundTruth.coarse, show_progress=False)


def test_bad_polygons_file_in_a_folder_names_its_path(
    raw_dataset: RawDataset, tmp_path: Path
) -> None:
    stems = make_coarse(raw_dataset, tmp_path / "raw")
    victim = Path(str(stems[sorted(stems)[0]]) + "polygons.json")
    document = json.loads(victim.read_text())
    document["objects"][2]["label"] = "hovercraft"
    victim.write_text(json.dumps(document))
    with pytest.raises(DataError) as caught:
        prepare_dataset(
            tmp_path / "raw",
            tmp_path / "ds",
            annotations=GroundTruth.coarse,
            labels=LabelSource.polygons,
            verify=False,
            show_progress=False,
        )
    assert str(caught.value) == (
        f"{victim}: objects[2]: label 'hovercraft' is not a Cityscapes label"
    )
