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
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cityseg.config import DEFAULT_DATA, EVALUATE
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
from cityseg.evaluation.report import (
    REPORT_NAME,
    EvalReport,
    EvalSource,
    GroupScores,
    OfficialScore,
)
from cityseg.fsutil import atomic_open, atomic_write_bytes, atomic_write_json
from cityseg.images import read_image, read_mask, write_mask
from cityseg.progress import track
from cityseg.runs import next_run_dir

if TYPE_CHECKING:
    from cityseg.inference.predictor import Predictor

logger = logging.getLogger(__name__)

__all__ = [
    "EvalReport",
    "evaluate",
    "official_score",
    "official_category_confusion",
    "official_category_scores",
]

OFFICIAL_SCHEME = "categories"
NUM_CATEGORIES = len(labels.CATEGORIES)
VOID_CATEGORY = 0
DEFAULT_PREDICTIONS_NAME = "predictions"


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
    return official_score(confusion).to_dict()


def official_score(confusion: np.ndarray) -> OfficialScore:
    """`official_category_scores` as a typed record."""
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
    return OfficialScore(
        mean_iou=sum(defined) / len(defined) if defined else None,
        per_category=per_category,
        counted_pixels=int(counts.sum()),
    )


# --------------------------------------------------------------------------- evaluate


def evaluate(
    *,
    model: Path | None = None,
    data: Path = DEFAULT_DATA,
    split: str = EVALUATE.split,
    predictions: Path | None = None,
    write_labelids: Path | None = None,
    project: Path = EVALUATE.project,
    name: str | None = None,
    batch: int = EVALUATE.batch,
    tta_flip: bool = EVALUATE.tta_flip,
    show_progress: bool = True,
    scheme: str | None = None,
    loader: Callable[[], Predictor] | None = None,
) -> EvalReport:
    """Score `model` (default: the newest run's best) or the PNGs in `predictions` on a split.

    `scheme` defaults to the model card's scheme, or `categories` for predictions. Writes
    `project/<name>/` (numbered like training runs, never overwritten) with metrics.json,
    per_image.csv and confusion.png, and returns the report metrics.json is written from.
    `loader` gives the predictor of a model already open (the Python API's `Model`),
    which keeps it loaded, instead of loading `model`; its own `tta_flip` applies. It is
    called once the split is checked, so a wrong split or dataset costs no model load.
    """
    if sum(x is not None for x in (model, predictions, loader)) > 1:
        raise UsageError("pass either a model or --predictions, not both")
    if split not in SPLITS:
        raise UsageError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if batch < 1:
        raise UsageError(f"--batch must be at least 1, got {batch}")
    manifest = read_manifest(data)
    entries: list[dict[str, Any]] = list(manifest["splits"].get(split, []))
    if not entries:
        raise DataError(f"{data} has no images in its {split!r} split")
    predictor: Predictor | None = None
    if predictions is None and loader is not None:
        predictor = loader()
    elif predictions is None:
        from cityseg.inference.predictor import load_predictor

        predictor = load_predictor(model, tta_flip=tta_flip)
    plan = _plan(data, split, manifest, entries, scheme, predictor, predictions, write_labelids)
    logger.info(f"evaluating {len(entries)} {split} images of {data} ({plan.scheme})")
    tally = _score(plan, batch, show_progress)
    report = _report(plan, tally, next_run_dir(project, name or plan.default_name))
    report.out_dir.mkdir(parents=True)
    atomic_write_json(report.out_dir / REPORT_NAME, report.to_dict())
    _write_per_image(report.out_dir / "per_image.csv", tally.rows, plan.classes)
    atomic_write_bytes(report.out_dir / "confusion.png", confusion_png(tally.total, plan.classes))
    logger.info(_summary(report, bool(plan.void)))
    logger.info(f"results: {report.out_dir}")
    return report


@dataclass(frozen=True)
class _Plan:
    """What one evaluation scores and how, settled before the first image is read, so a
    wrong scheme or a missing prediction fails in a second rather than after the split."""

    data: Path
    split: str
    entries: list[dict[str, Any]]
    scheme: str
    classes: list[str]
    ignore_index: int | None
    void: tuple[int, ...]
    cityscapes: bool
    official: bool
    """Compute the official category score: a Cityscapes categories split with labelIds."""
    source: EvalSource
    default_name: str
    predictor: Predictor | None
    prediction_files: dict[str, Path]
    write_labelids: Path | None


def _plan(
    data: Path,
    split: str,
    manifest: dict[str, Any],
    entries: list[dict[str, Any]],
    scheme: str | None,
    predictor: Predictor | None,
    predictions: Path | None,
    write_labelids: Path | None,
) -> _Plan:
    if predictor is not None:
        card = predictor.card
        scheme = scheme or str(card.get("scheme") or default_scheme(manifest))
        default_name = _run_name(predictor)
        source = EvalSource("model", predictor.path, _card_summary(card))
    else:
        assert predictions is not None
        if not predictions.is_dir():
            raise DataError(f"--predictions {predictions} is not a folder")
        scheme = scheme or default_scheme(manifest)
        default_name = DEFAULT_PREDICTIONS_NAME
        source = EvalSource("predictions", predictions)
    scheme_info = manifest.get("schemes", {}).get(scheme)
    if scheme_info is None:
        raise DataError(
            f"{data} has no {scheme!r} masks; run `cityseg remap {data} --scheme {scheme}` first"
        )
    class_names = [str(c) for c in scheme_info["classes"]]
    if predictor is not None and list(predictor.classes) != class_names:
        raise DataError(
            f"the model predicts {len(predictor.classes)} classes {predictor.classes[:4]}... but "
            f"{data}'s {scheme!r} masks have {len(class_names)} {class_names[:4]}...; "
            "evaluate on a dataset remapped to the model's scheme"
        )
    if write_labelids is not None and scheme != OFFICIAL_SCHEME:
        raise UsageError(
            f"--write-labelids needs the {OFFICIAL_SCHEME} scheme; this evaluation uses {scheme!r}"
        )
    cityscapes = is_cityscapes(manifest)
    return _Plan(
        data=data,
        split=split,
        entries=entries,
        scheme=scheme,
        classes=class_names,
        ignore_index=scheme_info.get("ignore_index"),
        void=void_classes(scheme, scheme_info),
        cityscapes=cityscapes,
        official=cityscapes
        and scheme == OFFICIAL_SCHEME
        and all(entry.get("labelIds") for entry in entries),
        source=source,
        default_name=default_name,
        predictor=predictor,
        prediction_files=_find_predictions(predictions, entries) if predictions else {},
        write_labelids=write_labelids,
    )


@dataclass
class _Tally:
    """Confusion counts of the split, of each city (or group) and per-image rows.

    Per-image matrices add up exactly (they are counts), so one bincount per image feeds
    the split's, its city's and the image's own scores.
    """

    total: np.ndarray
    groups: dict[str, np.ndarray] = field(default_factory=dict)
    group_images: dict[str, int] = field(default_factory=dict)
    official: np.ndarray = field(
        default_factory=lambda: np.zeros((NUM_CATEGORIES, NUM_CATEGORIES), dtype=np.int64)
    )
    rows: list[dict[str, Any]] = field(default_factory=list)


def _score(plan: _Plan, batch: int, show_progress: bool) -> _Tally:
    num_classes = len(plan.classes)
    tally = _Tally(total=np.zeros((num_classes, num_classes), dtype=np.int64))
    entries, data = plan.entries, plan.data
    batches = [entries[i : i + batch] for i in range(0, len(entries), batch)]
    for group in track(batches, len(batches), "evaluate", enabled=show_progress):
        if plan.predictor is not None:
            masks = plan.predictor.predict([read_image(data / e["image"]) for e in group])
        else:
            masks = [read_mask(plan.prediction_files[e["key"]]) for e in group]
        for entry, pred in zip(group, masks, strict=True):
            _score_image(plan, tally, entry, pred)
    return tally


def _score_image(plan: _Plan, tally: _Tally, entry: dict[str, Any], pred: np.ndarray) -> None:
    key = str(entry["key"])
    num_classes = len(plan.classes)
    truth = read_mask(plan.data / entry["masks"][plan.scheme])
    _check_prediction(key, pred, truth, num_classes, plan.ignore_index)
    image_counts = confusion_matrix(truth, pred, num_classes, plan.ignore_index)
    tally.total += image_counts
    city = str(entry.get("city") or entry.get("group") or key.split("_")[0])
    tally.groups.setdefault(city, np.zeros_like(tally.total))
    tally.groups[city] += image_counts
    tally.group_images[city] = tally.group_images.get(city, 0) + 1
    scores = scores_from_confusion(image_counts, plan.void)
    tally.rows.append({"key": key, "city": city, "iou": scores.iou, "miou": scores.mean_iou})
    if plan.official:
        label_ids = read_mask(plan.data / entry["labelIds"])
        if label_ids.shape != pred.shape:
            raise DataError(f"{key}: labelIds and class mask differ in size")
        tally.official += official_category_confusion(label_ids, pred)
    if plan.write_labelids is not None:
        write_mask(
            plan.write_labelids / f"{key}_pred_labelIds.png", labels.CATEGORY_TO_LABEL_ID[pred]
        )


def _report(plan: _Plan, tally: _Tally, out_dir: Path) -> EvalReport:
    return EvalReport(
        out_dir=out_dir,
        split=plan.split,
        images=len(plan.entries),
        scheme=plan.scheme,
        classes=tuple(plan.classes),
        scores=scores_from_confusion(tally.total, plan.void).table(plan.classes),
        groups={
            city: _group(tally.group_images[city], scores_from_confusion(counts, plan.void))
            for city, counts in sorted(tally.groups.items())
        },
        confusion_matrix=tally.total,
        source=plan.source,
        dataset=plan.data,
        tta_flip=bool(plan.predictor is not None and plan.predictor.tta_flip),
        slide=None
        if plan.predictor is None or plan.predictor.window is None
        else str(plan.predictor.window),
        cityscapes=plan.cityscapes,
        # The official category IoU is a Cityscapes score: absent for own data.
        official=official_score(tally.official) if plan.official else None,
        official_skipped=(
            _official_skip_note(plan.scheme) if plan.cityscapes and not plan.official else None
        ),
        labelids_dir=plan.write_labelids,
    )


def _summary(report: EvalReport, has_void: bool) -> str:
    summary = f"mIoU {_fmt(report.scores.mean_iou)}"
    if has_void:
        summary += f", non-void {_fmt(report.scores.mean_iou_non_void)}"
    if report.official is not None:
        summary += f", official category IoU {_fmt(report.official.mean_iou)}"
    return summary


# --------------------------------------------------------------------------- helpers


def _group(images: int, scores: SegmentationScores) -> GroupScores:
    def clean(value: float) -> float | None:
        return None if math.isnan(value) else float(value)

    return GroupScores(
        images=images,
        mean_iou=clean(scores.mean_iou),
        mean_iou_non_void=clean(scores.mean_iou_non_void),
        pixel_accuracy=clean(scores.pixel_accuracy),
    )


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
