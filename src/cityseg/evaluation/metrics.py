"""Segmentation scores from a confusion matrix accumulated over a whole evaluation set.

Metrics never come from per-batch (or per-image) means: IoU is a ratio of pixel counts, and
the mean of per-batch ratios weights a nearly empty batch like a full one and lets a class
missing from one batch drag that batch's mean around. Summing one confusion matrix over
every pixel of the set and scoring it once is the only way to get the mIoU that
cityscapesScripts, mmsegmentation and papers report, so everything here works on counts.

Two conventions follow the official Cityscapes evaluator: a class that appears neither in
the ground truth nor in the prediction has an undefined IoU (NaN) and is left out of the
mean rather than scored as a perfect 1.0; a class that is only predicted scores 0.0 and
stays in the mean. This module is numpy only so that `evaluate` can score without TF.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cityseg.configio import json_record

__all__ = [
    "ClassScore",
    "ConfusionMatrix",
    "ScoreTable",
    "SegmentationScores",
    "confusion_matrix",
    "scores_from_confusion",
]


def _check_num_classes(num_classes: int) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)):
        raise TypeError(f"num_classes must be an int, got {type(num_classes).__name__}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes}")
    return int(num_classes)


def confusion_matrix(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    num_classes: int,
    ignore_index: int | None = None,
) -> np.ndarray:
    """Count (truth, prediction) pixel pairs: rows are ground truth, columns prediction.

    Ground-truth pixels equal to `ignore_index`, negative or >= `num_classes` are not
    counted, because the official evaluation skips unlabelled pixels instead of calling
    any prediction there right or wrong. A prediction outside 0..num_classes-1 on a counted
    pixel is a bug upstream and raises rather than being silently dropped.

    One `np.bincount` over `num_classes * truth + prediction` keeps this a single pass, so
    scoring full-resolution Cityscapes masks costs milliseconds per image.
    """
    num_classes = _check_num_classes(num_classes)
    truth = np.asarray(y_true)
    pred = np.asarray(y_pred)
    if truth.shape != pred.shape:
        raise ValueError(
            f"y_true and y_pred must have the same shape, got {truth.shape} and {pred.shape}"
        )
    for what, array in (("y_true", truth), ("y_pred", pred)):
        if not np.issubdtype(array.dtype, np.integer):
            raise ValueError(
                f"{what} must hold integer class ids, got dtype {array.dtype} "
                "(take the argmax of probabilities first)"
            )
    truth = truth.ravel()
    pred = pred.ravel()

    valid = truth < num_classes
    if np.issubdtype(truth.dtype, np.signedinteger):
        valid &= truth >= 0
    if ignore_index is not None and 0 <= ignore_index < num_classes:
        valid &= truth != ignore_index
    if not valid.all():
        truth = truth[valid]
        pred = pred[valid]
    if pred.size and (int(pred.min()) < 0 or int(pred.max()) >= num_classes):
        raise ValueError(
            f"y_pred holds class ids outside 0..{num_classes - 1} "
            f"(min {int(pred.min())}, max {int(pred.max())})"
        )
    index = truth.astype(np.intp) * num_classes + pred.astype(np.intp)
    counts = np.bincount(index, minlength=num_classes * num_classes)
    return counts.astype(np.int64).reshape(num_classes, num_classes)


class ConfusionMatrix:
    """A confusion matrix summed image by image, so a whole set is scored once at the end.

    Per-image matrices add up exactly (they are counts), which is what makes streaming,
    parallel workers (`merge`) and resumable evaluation give the same numbers as scoring
    every pixel of the set in one call.
    """

    def __init__(self, num_classes: int, ignore_index: int | None = None) -> None:
        self.num_classes = _check_num_classes(num_classes)
        self.ignore_index = ignore_index
        self._matrix = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    @property
    def matrix(self) -> np.ndarray:
        """A copy of the counts so far (rows ground truth, columns prediction)."""
        return self._matrix.copy()

    def update(self, y_true: np.ndarray, y_pred: np.ndarray) -> None:
        self._matrix += confusion_matrix(y_true, y_pred, self.num_classes, self.ignore_index)

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """Add another accumulator's counts (e.g. from a worker process); returns self."""
        if other.num_classes != self.num_classes or other.ignore_index != self.ignore_index:
            raise ValueError(
                "cannot merge confusion matrices with different settings: "
                f"{self.num_classes} classes / ignore {self.ignore_index} vs "
                f"{other.num_classes} classes / ignore {other.ignore_index}"
            )
        self._matrix += other._matrix
        return self

    def reset(self) -> None:
        self._matrix[...] = 0

    def scores(self, void_classes: Iterable[int] = (0,)) -> SegmentationScores:
        return scores_from_confusion(self._matrix, void_classes)

    def __repr__(self) -> str:
        return (
            f"ConfusionMatrix(num_classes={self.num_classes}, "
            f"ignore_index={self.ignore_index}, pixels={int(self._matrix.sum())})"
        )


def _json_float(value: float) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value


@dataclass(frozen=True, eq=False)
class SegmentationScores:
    """Scores of one confusion matrix; per-class arrays are NaN where a ratio is 0/0.

    NaN (not 0 or 1) marks "no evidence either way" so that means skip those classes and a
    reader of metrics.json sees `null` instead of a made-up number.
    """

    iou: np.ndarray
    dice: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    support: np.ndarray
    """Ground-truth pixels per class (int64)."""
    mean_iou: float
    """Mean IoU over classes present in ground truth or prediction."""
    mean_iou_non_void: float
    """As `mean_iou`, without `void_classes` (the official 7-category score for categories)."""
    pixel_accuracy: float
    mean_dice: float
    void_classes: tuple[int, ...] = (0,)

    @property
    def num_classes(self) -> int:
        return int(self.iou.shape[0])

    def table(self, class_names: Sequence[str]) -> ScoreTable:
        """The named, JSON-typed view: per-class rows by name, None where NaN."""
        names = list(class_names)
        if len(names) != self.num_classes:
            raise ValueError(
                f"got {len(names)} class names for a {self.num_classes}-class confusion matrix"
            )
        if len(set(names)) != len(names):
            raise ValueError(f"class names must be unique, got {names}")
        rows = tuple(
            ClassScore(
                name=name,
                iou=_json_float(self.iou[i]),
                dice=_json_float(self.dice[i]),
                precision=_json_float(self.precision[i]),
                recall=_json_float(self.recall[i]),
                support=int(self.support[i]),
            )
            for i, name in enumerate(names)
        )
        return ScoreTable(
            mean_iou=_json_float(self.mean_iou),
            mean_iou_non_void=_json_float(self.mean_iou_non_void),
            pixel_accuracy=_json_float(self.pixel_accuracy),
            mean_dice=_json_float(self.mean_dice),
            void_classes=tuple(names[i] for i in self.void_classes),
            per_class=rows,
        )

    def to_dict(self, class_names: Sequence[str]) -> dict[str, Any]:
        """Plain JSON types only: NaN becomes None, numpy scalars become Python numbers."""
        return self.table(class_names).to_dict()


@dataclass(frozen=True)
class ClassScore:
    """One class's row of a score table; None where the ratio is 0/0 (no evidence)."""

    name: str
    iou: float | None
    dice: float | None
    precision: float | None
    recall: float | None
    support: int
    """Ground-truth pixels of the class."""

    def to_dict(self) -> dict[str, Any]:
        """The row as metrics.json holds it, under its class name."""
        return json_record(self, exclude={"name"})


@dataclass(frozen=True)
class ScoreTable:
    """Per-class scores and their means, named and in JSON types, as metrics.json holds them.

    `SegmentationScores` is for arithmetic (numpy arrays indexed by class id, NaN); this is
    what a report hands to people and programs: rows by class name, None for "undefined",
    and `to_dict` is exactly the `scores` record of metrics.json.
    """

    mean_iou: float | None
    mean_iou_non_void: float | None
    pixel_accuracy: float | None
    mean_dice: float | None
    void_classes: tuple[str, ...]
    per_class: tuple[ClassScore, ...]

    @property
    def classes(self) -> list[str]:
        return [row.name for row in self.per_class]

    def of(self, name: str) -> ClassScore:
        """The row of class `name`."""
        for row in self.per_class:
            if row.name == name:
                return row
        raise KeyError(f"no class {name!r}; the classes are {', '.join(self.classes)}")

    def to_dict(self) -> dict[str, Any]:
        rows = {row.name: row.to_dict() for row in self.per_class}
        return {**json_record(self, exclude={"per_class"}), "per_class": rows}

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> ScoreTable:
        """Read back the `scores` record of a metrics.json."""
        return cls(
            mean_iou=record["mean_iou"],
            mean_iou_non_void=record["mean_iou_non_void"],
            pixel_accuracy=record["pixel_accuracy"],
            mean_dice=record["mean_dice"],
            void_classes=tuple(record["void_classes"]),
            per_class=tuple(
                ClassScore(name=name, **values) for name, values in record["per_class"].items()
            ),
        )


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, NaN where the denominator is 0 (no warnings)."""
    out = np.full(numerator.shape, np.nan, dtype=np.float64)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def _mean_defined(values: np.ndarray) -> float:
    """Mean over the non-NaN entries; NaN (not a warning) when there are none."""
    defined = values[~np.isnan(values)]
    return float(defined.mean()) if defined.size else math.nan


def scores_from_confusion(
    matrix: np.ndarray, void_classes: Iterable[int] = (0,)
) -> SegmentationScores:
    """Score a confusion matrix (rows ground truth, columns prediction).

    `void_classes` are dropped from `mean_iou_non_void` only: for the 8-category scheme the
    default (0,) leaves the 7 categories the official Cityscapes category score averages.
    Pass `()` for schemes without a void class (trainids uses an ignore index instead).
    """
    counts = np.asarray(matrix)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1] or counts.shape[0] == 0:
        raise ValueError(f"a confusion matrix must be square and non-empty, got {counts.shape}")
    if not np.issubdtype(counts.dtype, np.number) or (counts < 0).any():
        raise ValueError("a confusion matrix must hold non-negative counts")
    num_classes = counts.shape[0]
    void = tuple(int(c) for c in void_classes)
    bad = [c for c in void if not 0 <= c < num_classes]
    if bad:
        raise ValueError(f"void classes {bad} are not class ids 0..{num_classes - 1}")

    counts = counts.astype(np.float64)
    tp = np.diag(counts)
    support = counts.sum(axis=1)
    predicted = counts.sum(axis=0)
    fp = predicted - tp
    fn = support - tp

    iou = _ratio(tp, tp + fp + fn)
    dice = _ratio(2 * tp, 2 * tp + fp + fn)
    non_void = np.ones(num_classes, dtype=bool)
    non_void[list(void)] = False
    total = counts.sum()
    return SegmentationScores(
        iou=iou,
        dice=dice,
        precision=_ratio(tp, predicted),
        recall=_ratio(tp, support),
        support=support.astype(np.int64),
        mean_iou=_mean_defined(iou),
        mean_iou_non_void=_mean_defined(iou[non_void]),
        pixel_accuracy=float(tp.sum() / total) if total > 0 else math.nan,
        mean_dice=_mean_defined(dice),
        void_classes=void,
    )
