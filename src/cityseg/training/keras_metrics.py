"""Mean IoU as a Keras metric that is right for the whole epoch, not a mean of batches.

Keras reports a metric by calling `result()` on accumulated state, so the state must be
the thing mIoU is actually a function of: the confusion matrix over every pixel seen so
far. Averaging per-batch mIoUs (what a stateless metric function would give) is wrong in
the same way per-image means are; see `cityseg.evaluation.metrics`, whose numbers this
metric matches on the same data.

The matrix is a float64 variable: float32 stops counting exactly at 2**24 pixels (8 full
Cityscapes frames), int32 overflows within one epoch, and float64 counts exactly up to
2**53 pixels while still accepting fractional `sample_weight`s. Keras 3 creates every
metric variable ON_READ with SUM aggregation, so under `tf.distribute` each replica counts
its own slice of the batch and a read outside the replicas (what `fit` does for the epoch
logs) sums them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from cityseg._tf import keras, tf

__all__ = ["StreamingMeanIoU", "confusion_from_tensor"]


def _class_ids(y_true: Any, num_classes: int) -> Any:
    """Integer class ids (B,H,W) from ids (B,H,W), (B,H,W,1) or one-hot (B,H,W,C)."""
    y_true = tf.convert_to_tensor(y_true)
    rank = y_true.shape.rank
    if rank == 4:
        last = y_true.shape[-1]
        if last == 1:
            y_true = tf.squeeze(y_true, axis=-1)
        elif last == num_classes and num_classes > 1:
            y_true = tf.argmax(y_true, axis=-1, output_type=tf.int32)
        else:
            raise ValueError(
                f"y_true of shape {y_true.shape} is neither class ids (B,H,W[,1]) "
                f"nor one-hot over {num_classes} classes"
            )
    elif rank is None:
        raise ValueError("y_true must have a known rank (3 or 4)")
    if y_true.dtype.is_floating:
        y_true = tf.round(y_true)
    return tf.cast(y_true, tf.int32)


def confusion_from_tensor(
    y_true: Any,
    y_pred: Any,
    num_classes: int,
    ignore_index: int | None = None,
    sample_weight: Any = None,
) -> Any:
    """One batch's (num_classes, num_classes) float64 confusion matrix, graph-safe.

    `y_pred` is per-class scores (B,H,W,C) and is argmax-ed; `y_true` is class ids or one-hot
    (see `_class_ids`). Ground-truth pixels equal to `ignore_index` or outside
    0..num_classes-1 are not counted, as in `cityseg.evaluation.metrics.confusion_matrix`.
    They go to an extra overflow bucket that is dropped, which keeps shapes static for XLA.
    `sample_weight` (broadcastable to the labels, e.g. (B,) or (B,H,W)) weights pixels.
    """
    y_pred = tf.convert_to_tensor(y_pred)
    if y_pred.shape.rank is not None and y_pred.shape[-1] not in (None, num_classes):
        raise ValueError(
            f"y_pred of shape {y_pred.shape} does not end in {num_classes} class scores"
        )
    truth = _class_ids(y_true, num_classes)
    pred = tf.argmax(y_pred, axis=-1, output_type=tf.int32)
    valid = tf.logical_and(truth >= 0, truth < num_classes)
    if ignore_index is not None:
        valid = tf.logical_and(valid, truth != ignore_index)
    overflow = num_classes * num_classes
    index = tf.where(valid, truth * num_classes + pred, overflow)
    index = tf.reshape(index, [-1])
    if sample_weight is None:
        # int32 counts are exact per batch (< 2**31 pixels) and cheap on every device.
        ones = tf.ones_like(index)
        counts = tf.cast(tf.math.unsorted_segment_sum(ones, index, overflow + 1), tf.float64)
    else:
        weight = tf.cast(tf.convert_to_tensor(sample_weight), tf.float64)
        if weight.shape.rank == 4 and weight.shape[-1] == 1:
            weight = tf.squeeze(weight, axis=-1)
        while weight.shape.rank is not None and 0 < weight.shape.rank < truth.shape.rank:
            weight = tf.expand_dims(weight, axis=-1)  # (B,) -> (B,1,1): one weight per image
        weight = tf.reshape(tf.broadcast_to(weight, tf.shape(truth)), [-1])
        counts = tf.math.unsorted_segment_sum(weight, index, overflow + 1)
    return tf.reshape(counts[:overflow], (num_classes, num_classes))


@keras.utils.register_keras_serializable(package="cityseg")
class StreamingMeanIoU(keras.metrics.Metric):
    """Mean IoU of the confusion matrix summed over every batch since the last reset.

    A class absent from both ground truth and prediction is left out of the mean (never
    scored 1.0); classes in `exclude` are always left out, so `exclude=(0,)` on the
    8-category scheme gives the 7-category score the Cityscapes benchmark reports. Before
    any pixel is counted the result is 0.0, like Keras' own MeanIoU, so callbacks never see
    NaN.
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int | None = None,
        exclude: Iterable[int] = (),
        name: str = "miou",
        dtype: Any = None,
    ) -> None:
        super().__init__(name=name, dtype=dtype)
        if isinstance(num_classes, bool) or int(num_classes) < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        self.num_classes = int(num_classes)
        self.ignore_index = None if ignore_index is None else int(ignore_index)
        self.exclude = tuple(sorted({int(c) for c in exclude}))
        bad = [c for c in self.exclude if not 0 <= c < self.num_classes]
        if bad:
            raise ValueError(f"exclude ids {bad} are not class ids 0..{self.num_classes - 1}")
        if len(self.exclude) == self.num_classes:
            raise ValueError("exclude leaves no class to average")
        # ModelCheckpoint/EarlyStopping(mode="auto") read this to know that higher is better.
        self._direction = "up"
        self.confusion = self.add_variable(
            shape=(self.num_classes, self.num_classes),
            initializer="zeros",
            dtype="float64",
            aggregation="sum",
            name="confusion_matrix",
        )

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        batch = confusion_from_tensor(
            y_true, y_pred, self.num_classes, self.ignore_index, sample_weight
        )
        self.confusion.assign_add(batch)

    def _summed_confusion(self) -> Any:
        """The whole matrix, also when read inside a replica.

        Keras 3's `fit` calls `result()` inside `strategy.run` for the per-batch logs, where
        an ON_READ variable yields only this replica's counts; the all-reduce makes those
        logs the global mIoU too instead of a mean of per-replica mIoUs.
        """
        matrix = tf.convert_to_tensor(self.confusion)
        context = tf.distribute.get_replica_context()
        if context is not None and context.num_replicas_in_sync > 1:
            matrix = context.all_reduce(tf.distribute.ReduceOp.SUM, matrix)
        return matrix

    def result(self) -> Any:
        matrix = self._summed_confusion()
        tp = tf.linalg.diag_part(matrix)
        union = tf.reduce_sum(matrix, axis=0) + tf.reduce_sum(matrix, axis=1) - tp
        keep = [c not in self.exclude for c in range(self.num_classes)]
        present = tf.logical_and(union > 0, tf.constant(keep))
        iou = tf.math.divide_no_nan(tp, union)
        count = tf.reduce_sum(tf.cast(present, tf.float64))
        total = tf.reduce_sum(tf.where(present, iou, tf.zeros_like(iou)))
        return tf.cast(tf.math.divide_no_nan(total, count), self.dtype)

    def reset_state(self) -> None:
        self.confusion.assign(tf.zeros((self.num_classes, self.num_classes), tf.float64))

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = super().get_config()
        config.update(
            num_classes=self.num_classes,
            ignore_index=self.ignore_index,
            exclude=list(self.exclude),
        )
        return config
