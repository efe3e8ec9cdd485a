"""`cityseg evaluate`: score a model (or a folder of predictions) on a prepared split.

Two scores come out, because they answer different questions:

- **Ours**, from one confusion matrix over the prepared class masks summed over the whole
  split (every pixel, void included as class 0 for categories): per-class IoU, dice,
  precision, recall, mean IoU over all classes and over the non-void ones, pixel accuracy.
  This is what the model was trained and validated on.
- **The official Cityscapes category IoU**, computed from the original labelIds exactly as
  cityscapesScripts' `evalPixelLevelSemanticLabeling` does (see `official_category_scores`),
  so that a number we report is the number a paper or the benchmark server would report.
  `write_labelids` writes our predictions in the official format so the official script
  can check us; a test runs it and requires agreement to 1e-6.

The predictions path reads PNGs only and never imports TensorFlow, so scoring results made
elsewhere is quick and works on machines without it.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cityseg import __version__
from cityseg.dataset import labels
from cityseg.dataset.manifest import (
    SPLITS,
    default_scheme,
    is_cityscapes,
    read_manifest,
    void_classes,
)
from cityseg.errors import DataError, UsageError
from cityseg.evaluation.metrics import SegmentationScores, confusion_matrix, scores_from_confusion
from cityseg.fsutil import atomic_open, atomic_write_bytes, atomic_write_json
from cityseg.images import read_image, read_mask, write_mask
from cityseg.progress import track
from cityseg.runs import next_run_dir

if TYPE_CHECKING:
    from cityseg.inference.predictor import Predictor

Log = Callable[[str], None]

__all__ = [
    "EvalReport",
    "evaluate",
    "official_category_confusion",
    "official_category_scores",
]

OFFICIAL_SCHEME = "categories"
NUM_CATEGORIES = len(labels.CATEGORIES)
VOID_CATEGORY = 0
DEFAULT_PREDICTIONS_NAME = "predictions"
OFFICIAL_METHOD = (
    "cityscapesScripts evalPixelLevelSemanticLabeling category IoU: ground-truth pixels whose "
    "labelId is ignoreInEval are not counted; a prediction of void on a counted pixel is a "
    "false negative of its category and a false positive of none; mean over the 7 non-void "
    "categories with a defined IoU"
)


@dataclass(frozen=True)
class EvalReport:
    out_dir: Path
    metrics: dict[str, Any]
    """Exactly what `out_dir/metrics.json` holds."""


# --------------------------------------------------------------------------- official score


def official_category_confusion(label_ids: np.ndarray, pred_categories: np.ndarray) -> np.ndarray:
    """8x8 (ground-truth category, predicted category) counts over the pixels the official
    evaluator counts: those whose ground-truth labelId is not ignoreInEval.

    The official script builds a 34x34 labelId confusion matrix over *all* pixels and drops
    the ignoreInEval rows only when it scores; dropping them here first gives the same
    category scores (see `official_category_scores`) with 64 counters instead of 1156.
    Because every void labelId is ignoreInEval, row 0 (void) is always zero.
    """
    gt = np.asarray(label_ids)
    pred = np.asarray(pred_categories)
    if gt.shape != pred.shape:
        raise ValueError(f"label_ids and predictions differ in shape: {gt.shape} vs {pred.shape}")
    if not np.issubdtype(gt.dtype, np.integer):
        raise ValueError(f"label_ids must hold integer labelIds, got dtype {gt.dtype}")
    if gt.size and (int(gt.min()) < 0 or int(gt.max()) > 255):
        raise ValueError("label_ids must lie in 0..255 (uint8 labelIds PNG values)")
    gt = gt.astype(np.intp, copy=False)
    counted = ~labels.IGNORE_IN_EVAL[gt]
    gt_categories = labels.LABEL_TO_CATEGORY[gt[counted]]
    return confusion_matrix(gt_categories, pred[counted], NUM_CATEGORIES)


def official_category_scores(confusion: np.ndarray) -> dict[str, Any]:
    """Per-category IoU and their mean, as `getIouScoreForCategory` computes them.

    For category c the official script takes L_c, the labelIds of c that are not
    ignoreInEval, on its labelId confusion matrix (rows ground truth, columns prediction):

    - tp = pixels with ground truth in L_c predicted as a labelId in L_c;
    - fn = pixels with ground truth in L_c predicted as anything else, void included;
    - fp = pixels predicted in L_c whose ground truth is a labelId that is neither
      ignoreInEval nor in c: ground-truth ignoreInEval pixels are never false positives.

    A category prediction written as its representative labelId (flat 7, construction 11,
    ... all of them in L_c) therefore maps to the 8x8 matrix of
    `official_category_confusion` as tp = M[c, c], fn = row sum - M[c, c] and
    fp = column sum - M[c, c]; the void column only ever adds to fn. Void has no labelId
    that is not ignoreInEval, so the official script gives it NaN and its mean skips it,
    as it skips any category whose tp + fp + fn is 0: the mean is over the defined ones of
    the 7 non-void categories.
    """
    counts = np.asarray(confusion, dtype=np.int64)
    if counts.shape != (NUM_CATEGORIES, NUM_CATEGORIES):
        raise ValueError(f"expected an 8x8 category confusion matrix, got {counts.shape}")
    per_category: dict[str, float | None] = {}
    defined: list[float] = []
    for category in labels.CATEGORIES:
        c = category.id
        if c == VOID_CATEGORY:
            continue
        tp = int(counts[c, c])
        fn = int(counts[c, :].sum()) - tp
        fp = int(counts[:, c].sum()) - tp
        denominator = tp + fp + fn
        if denominator == 0:
            per_category[category.name] = None
            continue
        iou = tp / denominator
        per_category[category.name] = iou
        defined.append(iou)
    return {
        "method": OFFICIAL_METHOD,
        "mean_iou": sum(defined) / len(defined) if defined else None,
        "per_category": per_category,
        "counted_pixels": int(counts.sum()),
    }


# --------------------------------------------------------------------------- evaluate


def evaluate(
    *,
    model: Path | None = None,
    data: Path = Path("data/cityscapes"),
    split: str = "test",
    predictions: Path | None = None,
    write_labelids: Path | None = None,
    project: Path = Path("runs/eval"),
    name: str | None = None,
    batch: int = 4,
    tta_flip: bool = False,
    show_progress: bool = True,
    log: Log = lambda message: None,
    scheme: str | None = None,
) -> EvalReport:
    """Score `model` (default: the newest run's best) or the PNGs in `predictions` on a split.

    `scheme` defaults to the model card's scheme, or `categories` for predictions. Writes
    `project/<name>/` (numbered like training runs, never overwritten) with metrics.json,
    per_image.csv and confusion.png, and returns what metrics.json holds.
    """
    if model is not None and predictions is not None:
        raise UsageError("pass either a model or --predictions, not both")
    if split not in SPLITS:
        raise UsageError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if batch < 1:
        raise UsageError(f"--batch must be at least 1, got {batch}")
    manifest = read_manifest(data)
    cityscapes = is_cityscapes(manifest)
    entries: list[dict[str, Any]] = list(manifest["splits"].get(split, []))
    if not entries:
        raise DataError(f"{data} has no images in its {split!r} split")

    predictor: Predictor | None = None
    source: dict[str, Any]
    if predictions is None:
        from cityseg.inference.predictor import load_predictor

        predictor = load_predictor(model, tta_flip=tta_flip, log=log)
        card = predictor.card
        scheme = scheme or str(card.get("scheme") or default_scheme(manifest))
        default_name = _run_name(predictor)
        source = {"kind": "model", "model": str(predictor.path), "card": _card_summary(card)}
    else:
        if not predictions.is_dir():
            raise DataError(f"--predictions {predictions} is not a folder")
        scheme = scheme or default_scheme(manifest)
        default_name = DEFAULT_PREDICTIONS_NAME
        source = {"kind": "predictions", "predictions": str(predictions)}

    scheme_info = manifest.get("schemes", {}).get(scheme)
    if scheme_info is None:
        raise DataError(
            f"{data} has no {scheme!r} masks; run `cityseg remap {data} --scheme {scheme}` first"
        )
    class_names = [str(c) for c in scheme_info["classes"]]
    ignore_index = scheme_info.get("ignore_index")
    if predictor is not None and list(predictor.classes) != class_names:
        raise DataError(
            f"the model predicts {len(predictor.classes)} classes {predictor.classes[:4]}... but "
            f"{data}'s {scheme!r} masks have {len(class_names)} {class_names[:4]}...; "
            "evaluate on a dataset remapped to the model's scheme"
        )
    official = scheme == OFFICIAL_SCHEME
    if write_labelids is not None and not official:
        raise UsageError(
            f"--write-labelids needs the {OFFICIAL_SCHEME} scheme; this evaluation uses {scheme!r}"
        )
    if official and not all(entry.get("labelIds") for entry in entries):
        official = False
    prediction_files = _find_predictions(predictions, entries) if predictions else {}

    num_classes = len(class_names)
    void = void_classes(scheme, scheme_info)
    # Per-image matrices add up exactly (they are counts), so one bincount per image feeds
    # the split's, its city's and the image's own scores.
    total = np.zeros((num_classes, num_classes), dtype=np.int64)
    cities: dict[str, np.ndarray] = {}
    city_images: dict[str, int] = {}
    official_counts = np.zeros((NUM_CATEGORIES, NUM_CATEGORIES), dtype=np.int64)
    rows: list[dict[str, Any]] = []

    log(f"evaluating {len(entries)} {split} images of {data} ({scheme})")
    batches = [entries[i : i + batch] for i in range(0, len(entries), batch)]
    for group in track(batches, len(batches), "evaluate", enabled=show_progress):
        if predictor is not None:
            masks = predictor.predict([read_image(data / e["image"]) for e in group])
        else:
            masks = [read_mask(prediction_files[e["key"]]) for e in group]
        for entry, pred in zip(group, masks, strict=True):
            key = str(entry["key"])
            truth = read_mask(data / entry["masks"][scheme])
            _check_prediction(key, pred, truth, num_classes, ignore_index)
            image_counts = confusion_matrix(truth, pred, num_classes, ignore_index)
            total += image_counts
            city = str(entry.get("city") or entry.get("group") or key.split("_")[0])
            cities.setdefault(city, np.zeros_like(total))
            cities[city] += image_counts
            city_images[city] = city_images.get(city, 0) + 1
            scores = scores_from_confusion(image_counts, void)
            rows.append({"key": key, "city": city, "iou": scores.iou, "miou": scores.mean_iou})
            if official:
                label_ids = read_mask(data / entry["labelIds"])
                if label_ids.shape != pred.shape:
                    raise DataError(f"{key}: labelIds and class mask differ in size")
                official_counts += official_category_confusion(label_ids, pred)
            if write_labelids is not None:
                write_mask(
                    write_labelids / f"{key}_pred_labelIds.png", labels.CATEGORY_TO_LABEL_ID[pred]
                )

    matrix = total
    metrics: dict[str, Any] = {
        "cityseg_version": __version__,
        "source": source,
        "dataset": str(data),
        "split": split,
        "scheme": scheme,
        "images": len(entries),
        "tta_flip": bool(tta_flip and predictor is not None),
        "scores": scores_from_confusion(matrix, void).to_dict(class_names),
        ("per_city" if cityscapes else "per_group"): {
            city: {
                "images": city_images[city],
                **_means(scores_from_confusion(counts, void)),
            }
            for city, counts in sorted(cities.items())
        },
        "classes": class_names,
        "confusion_matrix": matrix.tolist(),
    }
    if cityscapes:  # the official category IoU is a Cityscapes score: absent for own data
        metrics["official"] = (
            official_category_scores(official_counts)
            if official
            else {"skipped": _official_skip_note(scheme)}
        )
    if write_labelids is not None:
        metrics["labelids_dir"] = str(write_labelids)

    out_dir = next_run_dir(project, name or default_name)
    out_dir.mkdir(parents=True)
    atomic_write_json(out_dir / "metrics.json", metrics)
    _write_per_image(out_dir / "per_image.csv", rows, class_names)
    atomic_write_bytes(out_dir / "confusion.png", confusion_png(matrix, class_names))
    scores = metrics["scores"]
    summary = f"mIoU {_fmt(scores['mean_iou'])}"
    if void:
        summary += f", non-void {_fmt(scores['mean_iou_non_void'])}"
    if official:
        summary += f", official category IoU {_fmt(metrics['official']['mean_iou'])}"
    log(summary)
    log(f"results: {out_dir}")
    return EvalReport(out_dir=out_dir, metrics=metrics)


# --------------------------------------------------------------------------- helpers


def _means(scores: SegmentationScores) -> dict[str, float | None]:
    def clean(value: float) -> float | None:
        return None if math.isnan(value) else float(value)

    return {
        "mean_iou": clean(scores.mean_iou),
        "mean_iou_non_void": clean(scores.mean_iou_non_void),
        "pixel_accuracy": clean(scores.pixel_accuracy),
    }


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _official_skip_note(scheme: str) -> str:
    if scheme != OFFICIAL_SCHEME:
        return (
            f"the official Cityscapes category score is defined for the {OFFICIAL_SCHEME} "
            f"scheme only; this evaluation uses {scheme!r}"
        )
    return "some entries of this split have no labelIds, which the official score needs"


def _run_name(predictor: Predictor) -> str:
    """The training run's name from the card (else the bundle folder's, or its parent's
    for best/ and last/), with the export format for an exported model."""
    training = predictor.card.get("training")
    run = training.get("run") if isinstance(training, dict) else None
    path = predictor.path
    if not run:
        run = path.parent.name if path.name in ("best", "last") and path.parent.name else path.name
    fmt = predictor.model.format
    return str(run) if fmt == "keras" else f"{run}-{fmt}"


def _card_summary(card: dict[str, Any]) -> dict[str, Any]:
    keys = ("arch", "backbone", "num_classes", "height", "width", "scheme", "normalisation")
    summary = {k: card.get(k) for k in keys if k in card}
    training = card.get("training")
    if isinstance(training, dict):
        summary["training"] = {
            k: training[k] for k in ("run", "epoch", "best_epoch", "monitor") if k in training
        }
    return summary


def _find_predictions(folder: Path, entries: Sequence[dict[str, Any]]) -> dict[str, Path]:
    """key -> its PNG in `folder` (searched recursively): `{key}.png`, else the one PNG
    whose name contains the key (e.g. the official `{key}_leftImg8bit.png`).

    Every key is resolved before any scoring so that a missing file fails in a second,
    not after an hour of work.
    """
    pngs = sorted(p for p in folder.rglob("*.png") if p.is_file())
    by_name: dict[str, list[Path]] = {}
    for path in pngs:
        by_name.setdefault(path.name, []).append(path)
    found: dict[str, Path] = {}
    for entry in entries:
        key = str(entry["key"])
        matches = by_name.get(f"{key}.png") or [p for p in pngs if key in p.name]
        if not matches:
            raise DataError(f"no prediction for {key} in {folder} (expected {key}.png)")
        if len(matches) > 1:
            shown = ", ".join(str(p.relative_to(folder)) for p in matches[:3])
            raise DataError(f"several predictions for {key} in {folder}: {shown}")
        found[key] = matches[0]
    return found


def _check_prediction(
    key: str, pred: np.ndarray, truth: np.ndarray, num_classes: int, ignore_index: int | None
) -> None:
    if pred.shape != truth.shape:
        raise DataError(
            f"the prediction for {key} is {pred.shape[1]}x{pred.shape[0]} but its ground truth "
            f"is {truth.shape[1]}x{truth.shape[0]}; predictions must be at full resolution"
        )
    bad = pred >= num_classes
    if ignore_index is not None:
        bad &= pred != ignore_index
    if bad.any():
        raise DataError(
            f"the prediction for {key} holds class id {int(pred[bad].max())}; "
            f"this scheme has ids 0..{num_classes - 1}"
        )


def _write_per_image(path: Path, rows: list[dict[str, Any]], class_names: list[str]) -> None:
    """One row per image, worst mIoU first (undefined last) so failures are read first."""

    def order(row: dict[str, Any]) -> tuple[bool, float]:
        miou = float(row["miou"])
        return (math.isnan(miou), miou)

    def cell(value: float) -> str:
        return "" if math.isnan(value) else f"{value:.6f}"

    with atomic_open(path, "w") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["key", "city", *class_names, "mIoU"])
        for row in sorted(rows, key=order):
            ious = [cell(float(v)) for v in row["iou"]]
            writer.writerow([row["key"], row["city"], *ious, cell(float(row["miou"]))])


def confusion_png(matrix: np.ndarray, class_names: Sequence[str]) -> bytes:
    """The row-normalised confusion matrix (recall on the diagonal) as PNG bytes.

    Drawn on a bare Agg `Figure`, not pyplot, so it never touches a global backend or
    leaks figures in a long-lived process.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    counts = np.asarray(matrix, dtype=np.float64)
    rows = counts.sum(axis=1, keepdims=True)
    normalised = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    n = len(class_names)
    size = max(5.0, 0.55 * n + 2.5)
    figure = Figure(figsize=(size, size * 0.9), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    image = axes.imshow(normalised, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    axes.set_xticks(range(n), labels=list(class_names), rotation=45, ha="right")
    axes.set_yticks(range(n), labels=list(class_names))
    axes.set_xlabel("predicted")
    axes.set_ylabel("ground truth")
    axes.set_title("confusion matrix (each row sums to 1)")
    if n <= 40:
        fontsize = 8 if n <= 12 else 5
        for i in range(n):
            for j in range(n):
                value = normalised[i, j]
                colour = "white" if value > 0.5 else "black"
                axes.text(
                    j, i, f"{value:.2f}", ha="center", va="center", color=colour, fontsize=fontsize
                )
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
