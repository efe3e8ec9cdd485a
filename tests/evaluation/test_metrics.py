"""Confusion matrix and scores against numbers worked out by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from cityseg.dataset.schemes import CATEGORIES
from cityseg.evaluation.metrics import (
    ConfusionMatrix,
    SegmentationScores,
    confusion_matrix,
    scores_from_confusion,
)

# Ten pixels, three classes; the last truth pixel (255) is ignored.
# (truth, prediction) pairs: (0,0) (0,0) (0,1) (1,1) (1,2) (2,2) (2,2) (2,0) (2,1) (255,0)
TRUTH = np.array([[0, 0, 0, 1, 1], [2, 2, 2, 2, 255]], dtype=np.uint8)
PRED = np.array([[0, 0, 1, 1, 2], [2, 2, 0, 1, 0]], dtype=np.uint8)
EXPECTED = np.array(
    [
        [2, 1, 0],
        [0, 1, 1],
        [1, 1, 2],
    ]
)
# TP = [2, 1, 2], FP = [1, 2, 1], FN = [1, 1, 2]
EXPECTED_IOU = [2 / 4, 1 / 4, 2 / 5]
EXPECTED_DICE = [4 / 6, 2 / 5, 4 / 7]
EXPECTED_PRECISION = [2 / 3, 1 / 3, 2 / 3]
EXPECTED_RECALL = [2 / 3, 1 / 2, 2 / 4]


def test_hand_computed_confusion_matrix() -> None:
    matrix = confusion_matrix(TRUTH, PRED, 3, ignore_index=255)
    assert matrix.dtype == np.int64
    np.testing.assert_array_equal(matrix, EXPECTED)


def test_hand_computed_scores() -> None:
    scores = scores_from_confusion(EXPECTED)
    np.testing.assert_allclose(scores.iou, EXPECTED_IOU)
    np.testing.assert_allclose(scores.dice, EXPECTED_DICE)
    np.testing.assert_allclose(scores.precision, EXPECTED_PRECISION)
    np.testing.assert_allclose(scores.recall, EXPECTED_RECALL)
    np.testing.assert_array_equal(scores.support, [3, 2, 4])
    assert scores.mean_iou == pytest.approx((0.5 + 0.25 + 0.4) / 3)  # 0.38333...
    assert scores.mean_iou_non_void == pytest.approx((0.25 + 0.4) / 2)  # class 0 left out
    assert scores.pixel_accuracy == pytest.approx(5 / 9)
    assert scores.mean_dice == pytest.approx((4 / 6 + 2 / 5 + 4 / 7) / 3)


def test_dice_is_2tp_over_2tp_fp_fn_on_random_data() -> None:
    rng = np.random.default_rng(3)
    truth = rng.integers(0, 5, size=(40, 30))
    pred = rng.integers(0, 5, size=(40, 30))
    scores = scores_from_confusion(confusion_matrix(truth, pred, 5))
    for c in range(5):
        tp = np.sum((truth == c) & (pred == c))
        fp = np.sum((truth != c) & (pred == c))
        fn = np.sum((truth == c) & (pred != c))
        assert scores.dice[c] == pytest.approx(2 * tp / (2 * tp + fp + fn))
        assert scores.iou[c] == pytest.approx(tp / (tp + fp + fn))
    np.testing.assert_allclose(scores.dice, 2 * scores.iou / (1 + scores.iou))
    assert scores.pixel_accuracy == pytest.approx(np.mean(truth == pred))


def test_class_absent_from_both_is_left_out_of_the_mean_not_scored_one() -> None:
    matrix = confusion_matrix(TRUTH, PRED, 4, ignore_index=255)  # class 3 never appears
    scores = scores_from_confusion(matrix)
    assert math.isnan(scores.iou[3])
    assert math.isnan(scores.dice[3])
    assert math.isnan(scores.precision[3]) and math.isnan(scores.recall[3])
    assert scores.support[3] == 0
    assert scores.mean_iou == pytest.approx(1.15 / 3)
    assert scores.mean_iou != pytest.approx((1.15 + 1.0) / 4)
    assert scores.mean_iou_non_void == pytest.approx(0.65 / 2)


def test_class_only_predicted_scores_zero_and_counts() -> None:
    truth = np.array([0, 0, 1, 1])
    pred = np.array([0, 2, 1, 1])  # class 2 predicted once, never true
    scores = scores_from_confusion(confusion_matrix(truth, pred, 3), void_classes=())
    assert scores.iou[2] == 0.0
    assert math.isnan(scores.recall[2]) and scores.precision[2] == 0.0
    assert scores.mean_iou == pytest.approx((1 / 2 + 1 + 0) / 3)


def test_ignored_and_out_of_range_truth_pixels_are_not_counted() -> None:
    truth = np.array([[0, 255, 1], [7, 1, 0]], dtype=np.uint8)
    pred = np.array([[0, 1, 1], [0, 0, 0]], dtype=np.uint8)
    matrix = confusion_matrix(truth, pred, 2, ignore_index=255)
    np.testing.assert_array_equal(matrix, [[2, 0], [1, 1]])
    assert matrix.sum() == 4
    # Signed labels: -1 (Cityscapes' 'license plate') is not a class either.
    signed = np.array([-1, 0, 1], dtype=np.int16)
    np.testing.assert_array_equal(confusion_matrix(signed, np.array([1, 0, 1]), 2), np.eye(2))


def test_ignore_index_inside_the_class_range() -> None:
    truth = np.array([0, 0, 1, 2])
    pred = np.array([1, 2, 1, 2])
    np.testing.assert_array_equal(
        confusion_matrix(truth, pred, 3, ignore_index=0), [[0, 0, 0], [0, 1, 0], [0, 0, 1]]
    )


def test_mean_iou_non_void_on_the_category_scheme() -> None:
    matrix = np.diag([100, 10, 10, 10, 10, 10, 10, 10]).astype(np.int64)
    matrix[0, 1] = 100  # void pixels predicted as flat: hurts void and flat
    scores = scores_from_confusion(matrix)
    assert scores.void_classes == (0,)
    assert scores.iou[0] == pytest.approx(0.5)
    assert scores.iou[1] == pytest.approx(10 / 110)
    assert scores.mean_iou_non_void == pytest.approx((10 / 110 + 6) / 7)
    assert scores.mean_iou == pytest.approx((0.5 + 10 / 110 + 6) / 8)
    as_dict = scores.to_dict(CATEGORIES.class_names)
    assert as_dict["void_classes"] == ["void"]
    assert set(as_dict["per_class"]) == set(CATEGORIES.class_names)


def test_accumulating_batches_equals_one_update_on_the_concatenation() -> None:
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 4, size=(6, 8, 8)).astype(np.uint8)
    truth[truth == 3] = 255
    pred = rng.integers(0, 4, size=(6, 8, 8)).astype(np.uint8)
    whole = confusion_matrix(truth, pred, 4, ignore_index=255)

    acc = ConfusionMatrix(4, ignore_index=255)
    for start, stop in ((0, 1), (1, 4), (4, 6)):
        acc.update(truth[start:stop], pred[start:stop])
    np.testing.assert_array_equal(acc.matrix, whole)

    left, right = ConfusionMatrix(4, 255), ConfusionMatrix(4, 255)
    left.update(truth[:3], pred[:3])
    right.update(truth[3:], pred[3:])
    np.testing.assert_array_equal(left.merge(right).matrix, whole)
    assert acc.scores().mean_iou == pytest.approx(scores_from_confusion(whole).mean_iou)

    acc.reset()
    assert acc.matrix.sum() == 0
    acc.matrix[0, 0] = 99  # a copy: the accumulator is not changed through it
    assert acc.matrix.sum() == 0


def test_merge_refuses_different_settings() -> None:
    with pytest.raises(ValueError, match="different settings"):
        ConfusionMatrix(3).merge(ConfusionMatrix(4))


@pytest.mark.parametrize(
    ("truth", "pred", "message"),
    [
        (np.zeros((2, 3), np.uint8), np.zeros((3, 2), np.uint8), "same shape"),
        (np.zeros(4, np.uint8), np.zeros(4, np.float32), "integer class ids"),
        (np.zeros(4, np.uint8), np.array([0, 1, 2, 3], np.uint8), r"outside 0\.\.2"),
    ],
)
def test_bad_input_raises_a_clear_value_error(
    truth: np.ndarray, pred: np.ndarray, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        confusion_matrix(truth, pred, 3)


def test_empty_matrix_scores_nan_without_warnings() -> None:
    with np.errstate(all="raise"):
        scores = scores_from_confusion(np.zeros((3, 3), np.int64))
    assert math.isnan(scores.mean_iou) and math.isnan(scores.pixel_accuracy)
    assert scores.to_dict(["a", "b", "c"])["mean_iou"] is None


def test_to_dict_is_json_with_nan_as_none() -> None:
    scores = scores_from_confusion(confusion_matrix(TRUTH, PRED, 4, ignore_index=255))
    names = ["void", "road", "car", "sky"]
    result = scores.to_dict(names)
    json.dumps(result, allow_nan=False)
    assert result["per_class"]["sky"] == {
        "iou": None,
        "dice": None,
        "precision": None,
        "recall": None,
        "support": 0,
    }
    assert result["per_class"]["void"]["iou"] == pytest.approx(0.5)
    assert result["mean_iou"] == pytest.approx(1.15 / 3)
    with pytest.raises(ValueError, match="3 class names"):
        scores.to_dict(names[:3])


def test_scores_are_a_frozen_dataclass() -> None:
    scores = scores_from_confusion(EXPECTED)
    assert isinstance(scores, SegmentationScores)
    with pytest.raises(AttributeError):
        scores.mean_iou = 1.0  # type: ignore[misc]
    with pytest.raises(ValueError, match="void classes"):
        scores_from_confusion(EXPECTED, void_classes=(5,))
