"""remap: exact lookup for every id, schemes, file/folder/dataset inputs, and its errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from cityscapesscripts.helpers import labels as cs

from cityseg.config import UnknownPolicy
from cityseg.dataset import labels
from cityseg.dataset.manifest import read_manifest
from cityseg.dataset.remap import remap_array
from cityseg.dataset.schemes import CATEGORIES, TRAIN_IDS, get_scheme
from cityseg.errors import DataError, UnknownLabelError, UsageError


def every_label_id_mask() -> np.ndarray:
    """A 2-row mask holding each of the 34 labelIds, so lookups are checked for all."""
    ids = np.arange(34, dtype=np.uint8)
    return np.stack([ids, ids[::-1]])


def write_png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)
    return path


def test_categories_exact_for_every_label_id() -> None:
    mask = every_label_id_mask()
    expected = np.vectorize(lambda i: cs.id2label[int(i)].categoryId)(mask)
    assert np.array_equal(remap_array(mask, CATEGORIES), expected)


def test_trainids_exact_for_every_label_id() -> None:
    mask = every_label_id_mask()
    expected = np.vectorize(lambda i: cs.id2label[int(i)].trainId)(mask)
    assert np.array_equal(remap_array(mask, TRAIN_IDS), expected)


@pytest.mark.parametrize("bad", [34, 200, 255])
def test_unknown_id_is_an_error_naming_the_value(bad: int) -> None:
    mask = np.array([[7, bad], [11, 23]], dtype=np.uint8)
    with pytest.raises(UnknownLabelError, match=rf"road\.png holds id\(s\) {bad}"):
        remap_array(mask, CATEGORIES, name="road.png")


def test_unknown_void_maps_to_the_scheme_void() -> None:
    mask = np.array([[7, 99], [26, 250]], dtype=np.uint8)
    assert remap_array(mask, CATEGORIES, unknown=UnknownPolicy.void).tolist() == [[1, 0], [7, 0]]
    assert remap_array(mask, TRAIN_IDS, unknown=UnknownPolicy.void).tolist() == [
        [0, 255],
        [13, 255],
    ]


def test_json_scheme_plain_mapping(tmp_path: Path) -> None:
    path = tmp_path / "roads.json"
    path.write_text(json.dumps({"7": 1, "8": 1, "0": 0}))
    scheme = get_scheme(str(path))
    assert scheme.name == "roads"
    assert scheme.class_names == ("class_0", "class_1")
    mask = np.array([[7, 8, 0]], dtype=np.uint8)
    assert remap_array(mask, scheme).tolist() == [[1, 1, 0]]
    with pytest.raises(UnknownLabelError, match="holds id"):
        remap_array(np.array([[11]], dtype=np.uint8), scheme)


def test_json_scheme_full_form_with_default_and_ignore(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text(
        json.dumps(
            {
                "name": "drivable",
                "mapping": {"7": 1, "0": 255},
                "default": 0,
                "classes": ["other", "road"],
                "palette": [[0, 0, 0], [255, 0, 255]],
            }
        )
    )
    scheme = get_scheme(str(path))
    assert (scheme.name, scheme.class_names, scheme.ignore_index) == (
        "drivable",
        ("other", "road"),
        255,
    )
    mask = np.array([[7, 0, 33, 200]], dtype=np.uint8)
    assert remap_array(mask, scheme).tolist() == [[1, 255, 0, 0]]
    assert scheme.palette.tolist() == [[0, 0, 0], [255, 0, 255]]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must hold a JSON object"),
        ('{"7": 300}', "not an integer 0..255"),
        ('{"road": 1}', "labelId 'road'"),
        ('{"mapping": {"7": 2}, "classes": ["a"]}', "names 1 classes"),
        ('{"mapping": {"7": 1}, "palette": [[1, 2]]}', "'palette' must hold 2"),
    ],
)
def test_json_scheme_errors(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        get_scheme(str(path))


def test_unknown_scheme_name_lists_valid_ones() -> None:
    with pytest.raises(UsageError, match="categories, trainids"):
        get_scheme("catgories")


# --- the command ---------------------------------------------------------------------------


def test_single_file_to_named_output(tmp_path: Path, cli) -> None:
    source = write_png(tmp_path / "in" / "a_gtFine_labelIds.png", every_label_id_mask())
    target = tmp_path / "out" / "mask.png"
    result = cli("remap", source, "-o", target, "--colour", "-q")
    assert result.exit_code == 0, result.stderr
    written = cv2.imread(str(target), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(written, remap_array(every_label_id_mask(), CATEGORIES))
    colour = cv2.cvtColor(cv2.imread(str(tmp_path / "out" / "mask_colour.png")), cv2.COLOR_BGR2RGB)
    assert np.array_equal(colour, labels.CATEGORY_PALETTE[written])


def test_folder_recursive_with_default_glob(tmp_path: Path, cli) -> None:
    mask = every_label_id_mask()
    write_png(tmp_path / "gt" / "aachen" / "a_000000_000019_gtFine_labelIds.png", mask)
    write_png(tmp_path / "gt" / "bonn" / "b_000001_000019_gtFine_labelIds.png", mask)
    write_png(tmp_path / "gt" / "bonn" / "b_000001_000019_gtFine_color.png", mask)
    result = cli("remap", tmp_path / "gt", "-o", tmp_path / "out", "--scheme", "trainids", "-q")
    assert result.exit_code == 0, result.stderr
    produced = sorted(
        p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.png")
    )
    assert produced == [
        "aachen/a_000000_000019_gtFine_trainids.png",
        "bonn/b_000001_000019_gtFine_trainids.png",
    ]
    assert "Remapped 2 mask(s)" in result.stdout


def test_custom_glob(tmp_path: Path, cli) -> None:
    write_png(tmp_path / "gt" / "x.png", every_label_id_mask())
    result = cli("remap", tmp_path / "gt", "-o", tmp_path / "out", "--glob", "*.png", "-q")
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "out" / "x.png").is_file()


def test_unknown_id_error_names_file_and_value(tmp_path: Path, cli) -> None:
    bad = write_png(tmp_path / "bad_labelIds.png", np.full((4, 4), 77, np.uint8))
    result = cli("remap", bad, "-o", tmp_path / "o.png")
    assert result.exit_code == 1
    assert "bad_labelIds.png holds id(s) 77" in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / "o.png").exists()
    assert cli("remap", bad, "-o", tmp_path / "o.png", "--unknown", "void").exit_code == 0


def test_corrupt_png_is_one_line(tmp_path: Path, cli) -> None:
    bad = tmp_path / "c_labelIds.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    result = cli("remap", bad, "-o", tmp_path / "o.png")
    assert result.exit_code == 1
    assert "not a readable PNG" in result.stderr and result.stderr.count("\n") == 1


def test_colour_png_input_is_refused(tmp_path: Path, cli) -> None:
    rgb = write_png(tmp_path / "c_labelIds.png", np.zeros((4, 4, 3), np.uint8))
    result = cli("remap", rgb, "-o", tmp_path / "o.png")
    assert result.exit_code == 1 and "single-channel" in result.stderr


def test_missing_input_and_missing_output(tmp_path: Path, cli) -> None:
    result = cli("remap", tmp_path / "nope.png", "-o", tmp_path / "o.png")
    assert result.exit_code == 1 and "does not exist" in result.stderr
    write_png(tmp_path / "a_labelIds.png", every_label_id_mask())
    result = cli("remap", tmp_path / "a_labelIds.png")
    assert result.exit_code == 2 and "give -o OUT" in result.stderr
    result = cli("remap", tmp_path / "empty_dir_that_is_missing")
    assert result.exit_code == 2 and "give -o OUT" in result.stderr


def test_refuses_to_overwrite_its_input(tmp_path: Path, cli) -> None:
    source = write_png(tmp_path / "a.png", every_label_id_mask())
    result = cli("remap", source, "-o", source)
    assert result.exit_code == 2 and "refusing to overwrite input" in result.stderr
    assert np.array_equal(cv2.imread(str(source), cv2.IMREAD_UNCHANGED), every_label_id_mask())


def test_empty_folder_says_what_was_searched(tmp_path: Path, cli) -> None:
    (tmp_path / "gt").mkdir()
    result = cli("remap", tmp_path / "gt", "-o", tmp_path / "out")
    assert result.exit_code == 1 and "no files matching '*_labelIds.png'" in result.stderr


def test_prepared_dataset_gets_a_new_scheme(prepared: Path, tmp_path: Path, cli) -> None:
    dataset = tmp_path / "ds"
    shutil.copytree(prepared, dataset)
    result = cli("remap", dataset, "--scheme", "trainids", "-q")
    assert result.exit_code == 0, result.stderr
    index = read_manifest(dataset)
    assert set(index["schemes"]) == {"categories", "trainids"}
    entry = index["splits"]["train"][0]
    ids = cv2.imread(str(dataset / entry["masks"]["trainids"]), cv2.IMREAD_UNCHANGED)
    source = cv2.imread(str(dataset / entry["labelIds"]), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(ids, labels.LABEL_TO_TRAIN_ID[source])
    result = cli("remap", dataset, "-o", tmp_path / "x")
    assert result.exit_code == 2 and "in place" in result.stderr


def test_help_and_remap_do_not_import_tensorflow(tmp_path: Path) -> None:
    source = write_png(tmp_path / "a_labelIds.png", every_label_id_mask())
    script = (
        "import sys\n"
        "from cityseg.cli import run\n"
        f"assert run(['remap', {str(source)!r}, '-o', {str(tmp_path / 'o.png')!r}, '-q']) == 0\n"
        "try:\n"
        "    run(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'segmentation_models', 'albumentations')\n"
        "         if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "print('clean')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "clean" in done.stdout
    assert (tmp_path / "o.png").is_file()
