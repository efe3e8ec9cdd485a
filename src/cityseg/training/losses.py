"""Training losses over integer masks, and class weights from pixel counts.

The notebooks used segmentation-models' losses, which expect one-hot masks: a
(B,H,W,8) float mask per batch, built on the CPU, eight times the bytes of the uint8
mask the data pipeline streams. These losses take the class ids as they come
((B,H,W) or (B,H,W,1), any integer or float dtype) and one-hot them on the device.

Every loss honours one rule for which pixels count: a pixel counts when its id is in
0..num_classes-1 and is not `ignore_index`. So the trainids scheme's 255 drops out
whether or not `ignore_index` says so, and `ignore_index=0` can drop the void category
from training entirely. (A graph cannot raise on a bad id mid-step; the data pipeline
refuses ids a scheme does not know, so anything out of range here is an ignore value.)

Dice and Jaccard are computed over the whole batch, as one pool of pixels, not per
image and then averaged: an image without, say, a human would otherwise score that
class as a perfect 1 or a hopeless 0 depending only on what the model predicts in the
few hundred pixels it gets wrong. Classes absent from the batch and never predicted
score 1, as in segmentation-models, so a perfect prediction has loss 0.

TensorFlow is imported inside the functions, so `class_weights_from_counts` (used when
a run is configured, before any model exists) stays numpy-only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from cityseg.config import TrainConfig
from cityseg.errors import UsageError

if TYPE_CHECKING:
    from cityseg._tf import tf

LOSSES = ("cce", "dice", "weighted-dice", "focal", "focal-dice", "jaccard")
DEFAULT_LOSS = TrainConfig.loss

FOCAL_GAMMA = 2.0
"""Lin et al.'s default: (1-p)^2 cuts the loss of a pixel already at p=0.9 a hundredfold."""
FOCAL_ALPHA = 0.25
"""Lin et al.'s balance factor, as in segmentation-models' categorical focal loss."""
SMOOTH = 1e-5
"""Keeps Dice/Jaccard defined for a class absent from both truth and prediction."""
EPSILON = 1e-7
"""Probabilities are clipped to [EPSILON, 1-EPSILON] before a log, never for Dice."""

LossFn = Callable[[Any, Any], Any]


def class_weights_from_counts(
    pixel_counts: Sequence[int] | np.ndarray,
    method: Literal["median", "log"] = "median",
) -> np.ndarray:
    """Per-class loss weights from training-set pixel counts, mean 1 over present classes.

    "median" is median-frequency balancing (Eigen & Fergus 2015, used by SegNet):
    weight = median(freq) / freq, so the median class keeps weight ~1, sky and road
    shrink and people grow. "log" is ENet's 1 / ln(1.02 + freq), which bounds the
    ratio between the rarest and the most common class (at most ~50) when a class is
    so rare that median balancing would let its few pixels dominate.

    Classes with zero pixels get weight 0: nothing in the data can teach them, and a
    finite weight would only make the loss chase predictions of absent classes. The
    remaining weights are scaled to mean 1, so a weighted loss has the same magnitude
    as an unweighted one and the learning rate needs no retuning.
    """
    counts = np.asarray(pixel_counts, dtype=np.float64)
    if counts.ndim != 1 or counts.size == 0:
        raise ValueError(f"pixel_counts must be a non-empty 1-D sequence, got shape {counts.shape}")
    if np.any(counts < 0) or not np.all(np.isfinite(counts)):
        raise ValueError("pixel_counts must be finite and non-negative")
    present = counts > 0
    weights = np.zeros_like(counts)
    if not present.any():
        return weights.astype(np.float32)
    freq = counts[present] / counts[present].sum()
    if method == "median":
        raw = np.median(freq) / freq
    elif method == "log":
        raw = 1.0 / np.log(1.02 + freq)
    else:
        raise ValueError(f"unknown class-weight method {method!r}; use 'median' or 'log'")
    weights[present] = raw / raw.mean()
    return weights.astype(np.float32)


def get_loss(
    name: str,
    num_classes: int,
    class_weights: Sequence[float] | np.ndarray | None = None,
    ignore_index: int | None = None,
) -> LossFn:
    """A `loss(y_true, y_pred) -> scalar` for `model.compile`, by its CLI name.

    y_true holds class ids, y_pred softmax probabilities (B,H,W,C). `class_weights`,
    when given, weight every loss the same way: cross-entropy and focal per pixel by
    the weight of its true class (normalised by the summed weights, so equal weights
    change nothing), Dice and Jaccard as a weighted mean over classes. "weighted-dice"
    is Dice that insists on them; the others accept them for experiments.
    """
    if name not in LOSSES:
        raise UsageError(f"unknown loss {name!r}; valid: {', '.join(LOSSES)}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    weights: np.ndarray | None = None
    if class_weights is not None:
        weights = np.asarray(class_weights, dtype=np.float32).reshape(-1)
        if weights.shape != (num_classes,):
            raise ValueError(f"class_weights has {weights.size} entries for {num_classes} classes")
        if np.any(weights < 0) or not np.all(np.isfinite(weights)) or weights.sum() <= 0:
            raise ValueError("class_weights must be finite, non-negative and not all zero")
    elif name == "weighted-dice":
        raise ValueError(
            "weighted-dice needs class_weights; compute them with class_weights_from_counts"
        )

    def loss(y_true: Any, y_pred: Any) -> Any:
        one_hot, probs, valid = _prepare(y_true, y_pred, num_classes, ignore_index)
        if name == "cce":
            return _cross_entropy(one_hot, probs, valid, weights, focal=False)
        if name == "focal":
            return _cross_entropy(one_hot, probs, valid, weights, focal=True)
        if name in ("dice", "weighted-dice"):
            return _overlap(one_hot, probs, valid, weights, jaccard=False)
        if name == "jaccard":
            return _overlap(one_hot, probs, valid, weights, jaccard=True)
        # focal-dice
        return _cross_entropy(one_hot, probs, valid, weights, focal=True) + _overlap(
            one_hot, probs, valid, weights, jaccard=False
        )

    loss.__name__ = f"{name.replace('-', '_')}_loss"
    loss.__qualname__ = loss.__name__
    return loss


def _prepare(
    y_true: Any, y_pred: Any, num_classes: int, ignore_index: int | None
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """(one-hot truth, float32 probabilities, (B,H,W,1) 0/1 mask of pixels that count)."""
    from cityseg._tf import tf

    probs = tf.cast(y_pred, tf.float32)
    labels = tf.convert_to_tensor(y_true)
    if labels.shape.rank is not None and labels.shape.rank == probs.shape.rank:
        labels = tf.squeeze(labels, axis=-1)
    if labels.dtype.is_floating:
        labels = tf.round(labels)  # Keras casts y_true to float32 before a loss sees it
    labels = tf.cast(labels, tf.int32)
    valid = tf.logical_and(labels >= 0, labels < num_classes)
    if ignore_index is not None:
        valid = tf.logical_and(valid, tf.not_equal(labels, ignore_index))
    one_hot = tf.one_hot(tf.where(valid, labels, 0), num_classes, dtype=tf.float32)
    mask = tf.cast(valid, tf.float32)[..., tf.newaxis]
    return one_hot * mask, probs, mask


def _cross_entropy(
    one_hot: tf.Tensor,
    probs: tf.Tensor,
    mask: tf.Tensor,
    weights: np.ndarray | None,
    *,
    focal: bool,
) -> tf.Tensor:
    """Mean over counted pixels of -sum_c t log p, optionally focal-modulated.

    Focal multiplies each term by alpha (1-p)^gamma <= 1, so it is never larger than
    cross-entropy on the same input: it only mutes pixels the model already gets right.
    """
    from cityseg._tf import tf

    clipped = tf.clip_by_value(probs, EPSILON, 1.0 - EPSILON)
    terms = -one_hot * tf.math.log(clipped)
    if focal:
        terms = FOCAL_ALPHA * tf.pow(1.0 - clipped, FOCAL_GAMMA) * terms
    per_pixel = tf.reduce_sum(terms, axis=-1)
    pixel_weight = mask[..., 0]
    if weights is not None:
        pixel_weight = tf.reduce_sum(one_hot * tf.constant(weights, tf.float32), axis=-1)
    total = tf.reduce_sum(per_pixel * pixel_weight)
    return total / tf.maximum(tf.reduce_sum(pixel_weight), EPSILON)


def _overlap(
    one_hot: tf.Tensor,
    probs: tf.Tensor,
    mask: tf.Tensor,
    weights: np.ndarray | None,
    *,
    jaccard: bool,
) -> tf.Tensor:
    """1 - (weighted) mean over classes of soft Dice, or of soft IoU when `jaccard`."""
    from cityseg._tf import tf

    probs = probs * mask  # ignored pixels predict nothing, so they cannot be false positives
    axes = list(range(len(probs.shape) - 1))
    intersection = tf.reduce_sum(one_hot * probs, axis=axes)
    truth = tf.reduce_sum(one_hot, axis=axes)
    predicted = tf.reduce_sum(probs, axis=axes)
    if jaccard:
        score = (intersection + SMOOTH) / (truth + predicted - intersection + SMOOTH)
    else:
        score = (2.0 * intersection + SMOOTH) / (truth + predicted + SMOOTH)
    if weights is None:
        return 1.0 - tf.reduce_mean(score)
    w = tf.constant(weights, tf.float32)
    return 1.0 - tf.reduce_sum(w * score) / tf.reduce_sum(w)
