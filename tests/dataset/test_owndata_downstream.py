"""What later commands make of an own dataset, without a model: evaluate scores its own
classes (non-void mean only when the background is void, no Cityscapes category score),
`--size` copies work, and remap, which maps Cityscapes labelIds, refuses in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_owndata_formats import photo, via_csv

from cityseg.dataset.entries import split_entries
from cityseg.dataset.manifest import read_manifest
from cityseg.images import read_mask, write_mask


@pytest.fixture
def own(tmp_path: Path, cli):
    """A 6-photo VIA dataset, 5 of them in test, prepared with the given extra flags."""

    def make(*flags: str) -> Path:
        src = tmp_path / "photos"
        rows = {}
        for i in range(6):
            photo(src / f"seq{i % 2}_{i}.jpg", 40, 64, seed=i)
            box = {"name": "rect", "x": 4 + i, "y": 4, "width": 20, "height": 16}
            disc = {"name": "circle", "cx": 45, "cy": 25, "r": 9}
            rows[f"seq{i % 2}_{i}.jpg"] = [(box, "box"), (disc, "disc")]
        via_csv(src / "via.csv", rows)
        out = tmp_path / "data"
        args = ["prepare", src, "--format", "via", "-o", out, "-q", "--val-ratio", "0"]
        result = cli(*args, "--test-ratio", "0.9", *flags)
        assert result.exit_code == 0, result.stderr
        return out

    return make


def predictions_with_errors(data: Path, folder: Path) -> None:
    """The truth, except a strip predicted as class 1 in every image."""
    for entry in read_manifest(data)["splits"]["test"]:
        mask = read_mask(data / entry["masks"]["classes"]).copy()
        mask[-4:, :] = 1
        write_mask(folder / f"{entry['key']}.png", mask)


def test_evaluate_scores_own_classes_without_the_cityscapes_score(own, cli, tmp_path) -> None:
    data = own()
    predictions_with_errors(data, tmp_path / "pred")
    result = cli(
        "evaluate", "--data", data, "--predictions", tmp_path / "pred", "--project", tmp_path / "e"
    )
    assert result.exit_code == 0, result.stderr
    assert "mean IoU (3 classes)" in result.stdout
    assert "non-void" not in result.stdout and "official" not in result.stdout
    metrics = json.loads(next((tmp_path / "e").glob("*/metrics.json")).read_text())
    assert "official" not in metrics and metrics["scheme"] == "classes"
    assert list(metrics["scores"]["per_class"]) == ["background", "box", "disc"]
    assert set(metrics["per_group"]) >= {"seq0_0.jpg"}, "each image its own group"
    ious = [metrics["scores"]["per_class"][c]["iou"] for c in ("background", "box", "disc")]
    assert metrics["scores"]["mean_iou"] == pytest.approx(np.mean(ious))
    assert metrics["scores"]["per_class"]["disc"]["iou"] == 1.0


def test_a_void_background_leaves_the_non_void_mean(own, cli, tmp_path) -> None:
    data = own("--background", "void", "--group-by", r"^(seq\d)_")
    predictions_with_errors(data, tmp_path / "pred")
    result = cli(
        "evaluate", "--data", data, "--predictions", tmp_path / "pred", "--project", tmp_path / "e"
    )
    assert result.exit_code == 0, result.stderr
    assert "mean IoU (non-void)" in result.stdout
    scores = json.loads(next((tmp_path / "e").glob("*/metrics.json")).read_text())["scores"]
    assert scores["void_classes"] == ["background"]
    non_void = [scores["per_class"][c]["iou"] for c in ("box", "disc")]
    assert scores["mean_iou_non_void"] == pytest.approx(np.mean(non_void))


def test_training_size_copies_of_own_data(own) -> None:
    data = own("--size", "32x32")
    entries = split_entries(data, "test", "classes", (32, 32))
    assert all(e["sized"] for e in entries)
    assert read_mask(data / entries[0]["mask"]).shape == (32, 32)


def test_remap_refuses_an_own_dataset_in_one_line(own, cli) -> None:
    data = own()
    result = cli("remap", data, "--scheme", "trainids")
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and "prepare --classes" in result.stderr
