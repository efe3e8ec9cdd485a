"""Losses over integer masks: known values by hand, ignore pixels, gradients, weights."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from cityseg._tf import tf
from cityseg.errors import UsageError
from cityseg.training.losses import DEFAULT_LOSS, LOSSES, class_weights_from_counts, get_loss

C = 4


def _value(name: str, y_true: np.ndarray, y_pred: np.ndarray, **kwargs: object) -> float:
    loss = get_loss(name, y_pred.shape[-1], **kwargs)  # type: ignore[arg-type]
    return float(loss(tf.constant(y_true), tf.constant(y_pred, tf.float32)))


def _one_hot(ids: np.ndarray, num_classes: int) -> np.ndarray:
    return np.eye(num_classes, dtype=np.float32)[ids]


def _random_batch(seed: int = 0, shape: tuple[int, ...] = (2, 6, 5)) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, C, shape).astype(np.uint8)
    logits = rng.normal(0, 2, (*shape, C))
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    return ids, probs.astype(np.float32)


def test_names_and_default() -> None:
    assert DEFAULT_LOSS in LOSSES
    assert set(LOSSES) == {"cce", "dice", "weighted-dice", "focal", "focal-dice", "jaccard"}


def test_unknown_loss_lists_the_valid_ones() -> None:
    with pytest.raises(UsageError) as info:
        get_loss("bce-jaccard", C)
    message = str(info.value)
    assert "'bce-jaccard'" in message and "\n" not in message
    assert all(name in message for name in LOSSES)


def test_weighted_dice_needs_weights_of_the_right_length() -> None:
    with pytest.raises(ValueError, match="class_weights"):
        get_loss("weighted-dice", C)
    with pytest.raises(ValueError, match="3 entries for 4 classes"):
        get_loss("weighted-dice", C, class_weights=[1.0, 1.0, 1.0])


@pytest.mark.parametrize("name", LOSSES)
def test_perfect_prediction_costs_nothing(name: str) -> None:
    ids, _ = _random_batch()
    ids[0, 0, :C] = np.arange(C)  # every class present
    kwargs = {"class_weights": [1.0, 2.0, 0.5, 1.0]} if name == "weighted-dice" else {}
    assert _value(name, ids, _one_hot(ids, C), **kwargs) == pytest.approx(0.0, abs=1e-5)


def test_perfect_prediction_with_an_absent_class_still_costs_nothing() -> None:
    ids = np.zeros((1, 4, 4), np.uint8)
    ids[0, :2] = 1  # classes 2 and 3 never appear and are never predicted
    for name in ("dice", "jaccard"):
        assert _value(name, ids, _one_hot(ids, C)) == pytest.approx(0.0, abs=1e-5)


def test_uniform_two_class_prediction_by_hand() -> None:
    # Half the pixels class 0, half class 1, every probability 0.5. Per class:
    # intersection N/4, truth N/2, predicted N/2 -> Dice (N/2)/N = 1/2, IoU (N/4)/(3N/4) = 1/3.
    ids = np.array([[[0, 0, 1, 1], [0, 0, 1, 1]]], np.uint8)
    probs = np.full((*ids.shape, 2), 0.5, np.float32)
    assert _value("dice", ids, probs) == pytest.approx(0.5, abs=1e-5)
    assert _value("jaccard", ids, probs) == pytest.approx(2 / 3, abs=1e-5)
    assert _value("cce", ids, probs) == pytest.approx(math.log(2), abs=1e-5)
    # Focal: alpha (1-p)^gamma ln 2 = 0.25 * 0.25 * ln 2.
    assert _value("focal", ids, probs) == pytest.approx(0.0625 * math.log(2), abs=1e-5)
    both = _value("focal-dice", ids, probs)
    assert both == pytest.approx(0.0625 * math.log(2) + 0.5, abs=1e-5)


def test_uniform_prediction_when_one_class_is_absent() -> None:
    # All N pixels class 0 at p=0.5: class 0 Dice (N)/(N + N/2) = 2/3; class 1 has no truth
    # but N/2 predicted mass, Dice ~0 -> loss 1 - (2/3 + 0)/2 = 2/3.
    ids = np.zeros((1, 3, 4), np.uint8)
    probs = np.full((*ids.shape, 2), 0.5, np.float32)
    assert _value("dice", ids, probs) == pytest.approx(2 / 3, abs=1e-5)


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("ignore", [255, 0])
def test_ignored_pixels_change_nothing(name: str, ignore: int) -> None:
    rng = np.random.default_rng(3)
    ids, probs = _random_batch(seed=3)
    ids[ids == ignore] = 1  # the base batch holds no ignore pixels
    extra_ids = np.full((2, 6, 3), ignore, np.uint8)
    extra_probs = rng.dirichlet(np.ones(C), (2, 6, 3)).astype(np.float32)
    padded_ids = np.concatenate([ids, extra_ids], axis=2)
    padded_probs = np.concatenate([probs, extra_probs], axis=2)
    kwargs: dict[str, object] = {"ignore_index": ignore}
    if name == "weighted-dice":
        kwargs["class_weights"] = [0.5, 1.0, 2.0, 1.5]
    base = _value(name, ids, probs, **kwargs)
    padded = _value(name, padded_ids, padded_probs, **kwargs)
    assert padded == pytest.approx(base, rel=1e-5, abs=1e-6)


def test_ids_outside_the_classes_count_as_ignored() -> None:
    ids, probs = _random_batch(seed=4)
    padded_ids = np.concatenate([ids, np.full((2, 6, 2), 255, np.uint8)], axis=2)
    padded_probs = np.concatenate([probs, np.full((2, 6, 2, C), 1 / C, np.float32)], axis=2)
    for name in ("cce", "dice"):
        assert _value(name, padded_ids, padded_probs) == pytest.approx(_value(name, ids, probs))


@pytest.mark.parametrize("name", LOSSES)
def test_label_layouts_and_dtypes_agree(name: str) -> None:
    """Keras hands a loss float32 (B,H,W,1) truth; the data pipeline yields uint8 (B,H,W)."""
    ids, probs = _random_batch(seed=5)
    kwargs = {"class_weights": [1.0, 2.0, 0.5, 1.0]} if name == "weighted-dice" else {}
    reference = _value(name, ids, probs, **kwargs)
    for variant in (ids[..., None], ids.astype(np.int64), ids[..., None].astype(np.float32)):
        assert _value(name, variant, probs, **kwargs) == pytest.approx(reference, rel=1e-6)


@pytest.mark.parametrize("name", LOSSES)
def test_gradients_are_finite_even_for_saturated_softmax(name: str) -> None:
    rng = np.random.default_rng(6)
    ids = rng.integers(0, C, (2, 5, 5)).astype(np.uint8)
    ids[0, 0, 0] = 255
    logits = tf.Variable(rng.normal(0, 40, (2, 5, 5, C)).astype(np.float32))  # p -> 0 or 1
    kwargs = {"class_weights": [1.0, 2.0, 0.0, 1.0]} if name == "weighted-dice" else {}
    loss = get_loss(name, C, ignore_index=255, **kwargs)
    with tf.GradientTape() as tape:
        value = loss(tf.constant(ids), tf.nn.softmax(logits))
    grad = tape.gradient(value, logits)
    assert np.isfinite(float(value))
    assert grad is not None and np.all(np.isfinite(grad.numpy()))
    assert float(tf.reduce_sum(tf.abs(grad))) > 0


def test_focal_never_exceeds_cross_entropy() -> None:
    for seed in range(5):
        ids, probs = _random_batch(seed=seed)
        assert _value("focal", ids, probs) <= _value("cce", ids, probs)
        weights = [0.2, 3.0, 1.0, 0.7]
        weighted_focal = _value("focal", ids, probs, class_weights=weights)
        assert weighted_focal <= _value("cce", ids, probs, class_weights=weights)


def test_equal_class_weights_change_nothing() -> None:
    ids, probs = _random_batch(seed=7)
    equal = [2.0] * C
    assert _value("weighted-dice", ids, probs, class_weights=equal) == pytest.approx(
        _value("dice", ids, probs)
    )
    assert _value("cce", ids, probs, class_weights=equal) == pytest.approx(
        _value("cce", ids, probs)
    )


def test_class_weights_shift_the_dice_mean() -> None:
    # Only class 1 weighted -> the loss is 1 - Dice of class 1 alone.
    ids, probs = _random_batch(seed=8)
    t, p = _one_hot(ids, C)[..., 1], probs[..., 1]
    dice_1 = (2 * (t * p).sum() + 1e-5) / (t.sum() + p.sum() + 1e-5)
    value = _value("weighted-dice", ids, probs, class_weights=[0.0, 1.0, 0.0, 0.0])
    assert value == pytest.approx(1 - dice_1, rel=1e-5)


def test_traces_in_a_graph_with_unknown_batch_and_size() -> None:
    loss = get_loss("focal-dice", C, ignore_index=255)
    graph_loss = tf.function(
        loss,
        input_signature=[
            tf.TensorSpec([None, None, None], tf.uint8),
            tf.TensorSpec([None, None, None, C], tf.float32),
        ],
    )
    ids, probs = _random_batch(seed=9)
    assert float(graph_loss(ids, probs)) == pytest.approx(_value("focal-dice", ids, probs))


def test_median_frequency_weights_by_hand() -> None:
    # Present frequencies 1/6, 1/6, 4/6: median 1/6 -> raw 1, 1, 1/4 -> mean 3/4.
    weights = class_weights_from_counts([100, 100, 0, 400])
    assert weights.dtype == np.float32
    np.testing.assert_allclose(weights, [4 / 3, 4 / 3, 0.0, 1 / 3], rtol=1e-6)
    assert weights[weights > 0].mean() == pytest.approx(1.0)


def test_log_weights_are_bounded_and_favour_rare_classes() -> None:
    counts = np.array([10_000_000, 5_000_000, 1_000, 0, 200_000])
    weights = class_weights_from_counts(counts, method="log")
    assert weights[3] == 0.0
    present = weights[weights > 0]
    assert present.mean() == pytest.approx(1.0)
    assert weights[2] == present.max() and weights[0] == present.min()
    assert present.max() / present.min() < 1 / math.log(1.02) / (1 / math.log(1.02 + 1))


def test_class_weight_input_errors() -> None:
    with pytest.raises(ValueError):
        class_weights_from_counts([1, -1])
    with pytest.raises(ValueError):
        class_weights_from_counts([])
    np.testing.assert_array_equal(class_weights_from_counts([0, 0]), [0.0, 0.0])


def test_class_weights_need_no_tensorflow() -> None:
    script = textwrap.dedent(
        """
        import json, sys
        from cityseg.training.losses import class_weights_from_counts
        weights = class_weights_from_counts([1, 2, 3]).tolist()
        print(json.dumps({"tf": "tensorflow" in sys.modules, "weights": weights}))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["tf"] is False
    assert len(report["weights"]) == 3
