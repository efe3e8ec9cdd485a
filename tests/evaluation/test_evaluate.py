"""`cityseg.evaluation.evaluate`: our scores, the official category score, and agreement with
cityscapesScripts' own evaluator on the labelIds files we write for it."""

from __future__ import annotations

import copy
import csv
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cityseg.dataset import labels
from cityseg.dataset.manifest import read_manifest
from cityseg.errors import DataError, UsageError
from cityseg.evaluation.evaluate import (
    evaluate,
    official_category_confusion,
    official_category_scores,
)
from cityseg.images import read_mask, write_mask

SPLIT = "test"


def _entries(prepared: Path) -> list[dict[str, Any]]:
    return list(read_manifest(prepared)["splits"][SPLIT])


def _corrupt(mask: np.ndarray, seed: int) -> np.ndarray:
    """A plausible, imperfect prediction: shifted regions, swapped classes in a block, a
    void band and a few flipped patches, so every term of tp/fp/fn is exercised."""
    rng = np.random.default_rng(seed)
    pred = np.roll(mask, shift=(int(rng.integers(1, 4)), int(rng.integers(1, 6))), axis=(0, 1))
    h, w = pred.shape
    block = pred[: h // 2, : w // 3]
    swapped = block.copy()
    a, b = rng.choice(np.arange(1, 8), size=2, replace=False)
    swapped[block == a] = b
    swapped[block == b] = a
    pred[: h // 2, : w // 3] = swapped
    pred[h - h // 8 :, :] = 0  # a band predicted as void
    for _ in range(6):
        y, x = int(rng.integers(0, h - 8)), int(rng.integers(0, w - 8))
        pred[y : y + 8, x : x + 8] = int(rng.integers(0, 8))
    return pred.astype(np.uint8)


def _write_predictions(prepared: Path, folder: Path, *, perfect: bool = False) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, entry in enumerate(_entries(prepared)):
        truth = read_mask(prepared / entry["masks"]["categories"])
        write_mask(folder / f"{entry['key']}.png", truth if perfect else _corrupt(truth, i))


def _official_evaluator(
    prepared: Path, labelids_dir: Path, tmp: Path
) -> dict[str, Any]:  # pragma: no cover - exercised by the agreement test
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as official

    gt_dir = tmp / "gt"
    gt_dir.mkdir()
    predictions, ground_truth = [], []
    for entry in _entries(prepared):
        key = entry["key"]
        gt = gt_dir / f"{key}_gtFine_labelIds.png"
        shutil.copyfile(prepared / entry["labelIds"], gt)
        ground_truth.append(str(gt))
        predictions.append(str(labelids_dir / f"{key}_pred_labelIds.png"))
    args = copy.copy(official.args)
    args.evalInstLevelScore = False
    args.evalPixelAccuracy = False  # its per-image stats call np.in1d, gone in NumPy 2.4
    args.quiet = True
    args.JSONOutput = True
    args.exportFile = str(tmp / "official" / "result.json")
    args.predictionPath = str(labelids_dir)
    args.groundTruthSearch = str(gt_dir / "*_gtFine_labelIds.png")
    result: dict[str, Any] = official.evaluateImgLists(predictions, ground_truth, args)
    return result


def _with_ignored_labels(prepared: Path, copy_to: Path) -> Path:
    """A copy of `prepared` whose ground truth also holds non-void ignoreInEval labelIds
    (parking, rail track, guard rail, bridge, tunnel, polegroup, caravan, trailer): the
    synthetic data has none, and they are what separates the official fp/fn counting from
    a plain category IoU."""
    shutil.copytree(prepared, copy_to)
    rng = np.random.default_rng(3)
    ignored = [9, 10, 14, 15, 16, 18, 29, 30]
    for entry in _entries(copy_to):
        label_ids = read_mask(copy_to / entry["labelIds"])
        h, w = label_ids.shape
        for label_id in ignored:
            y, x = int(rng.integers(0, h - 12)), int(rng.integers(0, w - 20))
            label_ids[y : y + 12, x : x + 20] = label_id
        write_mask(copy_to / entry["labelIds"], label_ids)
        write_mask(copy_to / entry["masks"]["categories"], labels.LABEL_TO_CATEGORY[label_ids])
    return copy_to


def test_official_score_agrees_with_cityscapesscripts(prepared: Path, tmp_path: Path) -> None:
    prepared = _with_ignored_labels(prepared, tmp_path / "data")
    predictions = tmp_path / "pred"
    labelids = tmp_path / "labelids"
    _write_predictions(prepared, predictions)
    report = evaluate(
        predictions=predictions,
        data=prepared,
        write_labelids=labelids,
        project=tmp_path / "runs",
        show_progress=False,
    )
    ours = report.to_dict()["official"]
    theirs = _official_evaluator(prepared, labelids, tmp_path)

    assert ours["mean_iou"] is not None and 0.2 < ours["mean_iou"] < 0.95  # neither extreme
    assert ours["mean_iou"] == pytest.approx(theirs["averageScoreCategories"], abs=1e-6)
    assert set(theirs["categoryScores"]) == set(labels.CATEGORY_NAMES)
    for name, score in theirs["categoryScores"].items():
        if name == "void":
            assert math.isnan(score)  # void has no labelId that is not ignoreInEval
            continue
        mine = ours["per_category"][name]
        if math.isnan(score):
            assert mine is None
        else:
            assert mine == pytest.approx(score, abs=1e-6)
    assert sum(v is not None for v in ours["per_category"].values()) >= 5
    # the official score differs from ours: it skips ignoreInEval pixels and void
    assert ours["mean_iou"] != pytest.approx(report.to_dict()["scores"]["mean_iou_non_void"])


def test_official_confusion_skips_ignore_in_eval_pixels() -> None:
    # labelIds: road 7, parking 9 (ignored), unlabeled 0 (ignored), car 26, sky 23
    label_ids = np.array([[7, 7, 9, 0], [26, 26, 23, 0]], dtype=np.uint8)
    # categories predicted: flat where road; vehicle on parking; sky on unlabeled; ...
    pred = np.array([[1, 0, 7, 5], [7, 1, 5, 7]], dtype=np.uint8)
    matrix = official_category_confusion(label_ids, pred)

    expected = np.zeros((8, 8), dtype=np.int64)
    expected[1, 1] = 1  # road -> flat
    expected[1, 0] = 1  # road -> void: a false negative of flat, no one's false positive
    expected[7, 7] = 1  # car -> vehicle
    expected[7, 1] = 1  # car -> flat: fn of vehicle, fp of flat
    expected[5, 5] = 1  # sky -> sky
    np.testing.assert_array_equal(matrix, expected)  # parking and unlabeled add nothing

    scores = official_category_scores(matrix)
    assert scores["counted_pixels"] == 5
    assert scores["per_category"]["flat"] == pytest.approx(1 / 3)  # tp 1, fn 1, fp 1
    assert scores["per_category"]["vehicle"] == pytest.approx(1 / 2)  # tp 1, fn 1
    assert scores["per_category"]["sky"] == 1.0
    assert scores["per_category"]["human"] is None  # 0/0: left out of the mean
    assert "void" not in scores["per_category"]
    assert scores["mean_iou"] == pytest.approx((1 / 3 + 1 / 2 + 1) / 3)


def test_predictions_run_writes_reports(prepared: Path, tmp_path: Path) -> None:
    predictions = tmp_path / "pred"
    _write_predictions(prepared, predictions)
    report = evaluate(predictions=predictions, data=prepared, project=tmp_path / "runs")
    out = report.out_dir
    assert out == tmp_path / "runs" / "predictions"
    assert json.loads((out / "metrics.json").read_text()) == report.to_dict()
    assert (out / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    metrics = report.to_dict()
    entries = _entries(prepared)
    assert metrics["images"] == len(entries)
    assert metrics["split"] == SPLIT and metrics["scheme"] == "categories"
    assert metrics["source"] == {"kind": "predictions", "predictions": str(predictions)}
    assert set(metrics["scores"]["per_class"]) == set(labels.CATEGORY_NAMES)
    assert set(metrics["per_city"]) == {e["city"] for e in entries}
    assert np.array(metrics["confusion_matrix"]).sum() == sum(
        read_mask(prepared / e["masks"]["categories"]).size for e in entries
    )

    with (out / "per_image.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["key"] for r in rows] != [] and len(rows) == len(entries)
    assert list(rows[0]) == ["key", "city", *labels.CATEGORY_NAMES, "mIoU"]
    mious = [float(r["mIoU"]) for r in rows]
    assert mious == sorted(mious)  # worst first

    again = evaluate(predictions=predictions, data=prepared, project=tmp_path / "runs")
    assert again.out_dir.name == "predictions2"


def test_perfect_predictions_score_one(prepared: Path, tmp_path: Path) -> None:
    predictions = tmp_path / "pred"
    _write_predictions(prepared, predictions, perfect=True)
    metrics = evaluate(
        predictions=predictions, data=prepared, project=tmp_path / "runs", name="perfect"
    ).to_dict()
    assert metrics["scores"]["mean_iou"] == 1.0
    assert metrics["scores"]["pixel_accuracy"] == 1.0
    assert metrics["official"]["mean_iou"] == 1.0


def test_predictions_found_by_substring(prepared: Path, tmp_path: Path) -> None:
    predictions = tmp_path / "pred"
    _write_predictions(prepared, predictions, perfect=True)
    for png in list(predictions.glob("*.png")):
        city = png.name.split("_")[0]
        (predictions / city).mkdir(exist_ok=True)
        png.rename(predictions / city / f"{png.stem}_leftImg8bit.png")
    metrics = evaluate(predictions=predictions, data=prepared, project=tmp_path / "runs").to_dict()
    assert metrics["official"]["mean_iou"] == 1.0


def test_missing_or_wrong_size_prediction_names_the_key(prepared: Path, tmp_path: Path) -> None:
    predictions = tmp_path / "pred"
    _write_predictions(prepared, predictions)
    key = _entries(prepared)[-1]["key"]
    (predictions / f"{key}.png").unlink()
    with pytest.raises(DataError, match=key):
        evaluate(predictions=predictions, data=prepared, project=tmp_path / "runs")
    assert not (tmp_path / "runs").exists()  # nothing half-written

    write_mask(predictions / f"{key}.png", np.zeros((8, 8), dtype=np.uint8))
    with pytest.raises(DataError, match=f"{key}.*full resolution"):
        evaluate(predictions=predictions, data=prepared, project=tmp_path / "runs")

    with pytest.raises(UsageError):
        evaluate(predictions=predictions, model=tmp_path, data=prepared)


def test_predictions_path_does_not_import_tensorflow(prepared: Path, tmp_path: Path) -> None:
    predictions = tmp_path / "pred"
    _write_predictions(prepared, predictions, perfect=True)
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from cityseg.evaluation.evaluate import evaluate\n"
        f"evaluate(predictions=Path({str(predictions)!r}), data=Path({str(prepared)!r}),\n"
        f"         project=Path({str(tmp_path / 'runs')!r}), show_progress=False)\n"
        "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.slow
def test_model_run(prepared: Path, tmp_path: Path, messages: list[str]) -> None:
    from cityseg.inference.bundle import save_bundle
    from cityseg.training.models import ModelSpec, build_model, card_fields

    spec = ModelSpec(
        arch="pspnet", backbone="resnet18", num_classes=8, height=48, width=96, weights="none"
    )
    card = {
        **card_fields(spec),
        "classes": list(labels.CATEGORY_NAMES),
        "palette": labels.CATEGORY_PALETTE.tolist(),
        "scheme": "categories",
        "ignore_index": None,
        "training": {"run": "tiny"},
    }
    bundle = save_bundle(build_model(spec), tmp_path / "tiny" / "best", card)
    data = tmp_path / "data"
    shutil.copytree(prepared, data)

    report = evaluate(
        model=bundle,
        data=data,
        project=tmp_path / "runs",
        batch=4,
        write_labelids=tmp_path / "labelids",
        show_progress=False,
    )
    assert report.out_dir == tmp_path / "runs" / "tiny"
    for name in ("metrics.json", "per_image.csv", "confusion.png"):
        assert (report.out_dir / name).is_file()
    entries = _entries(data)
    with (report.out_dir / "per_image.csv").open() as handle:
        assert sorted(r["key"] for r in csv.DictReader(handle)) == sorted(e["key"] for e in entries)
    assert len(list((tmp_path / "labelids").glob("*_pred_labelIds.png"))) == len(entries)
    metrics = report.to_dict()
    assert metrics["source"]["kind"] == "model"
    assert metrics["source"]["card"]["arch"] == "pspnet"
    assert metrics["official"]["counted_pixels"] > 0
    assert any("results:" in m for m in messages)


def test_cli_scores_predictions_and_prints_the_official_iou(
    prepared: Path, tmp_path: Path, cli
) -> None:
    import shutil

    from cityseg.dataset.manifest import read_manifest

    predictions = tmp_path / "pred"
    predictions.mkdir()
    for entry in read_manifest(prepared)["splits"]["test"]:
        shutil.copy(prepared / entry["masks"]["categories"], predictions / f"{entry['key']}.png")
    result = cli(
        "evaluate",
        "--data",
        prepared,
        "--predictions",
        predictions,
        "--project",
        tmp_path / "eval",
        "-q",
    )
    assert result.exit_code == 0, result.stderr
    assert "official Cityscapes category IoU  1.0000" in result.stdout
    assert (tmp_path / "eval" / "predictions" / "metrics.json").is_file()
    next(predictions.iterdir()).unlink()
    result = cli(
        "evaluate", "--data", prepared, "--predictions", predictions, "--project", tmp_path / "eval"
    )
    assert result.exit_code == 1 and result.stderr.startswith("Error:")
