"""The training loop for several machines: tf.distribute steps driving Keras callbacks.

Keras 3's `Model.fit` cannot run under MultiWorkerMirroredStrategy (it fails on
"unsupported type PerReplica", keras-team/keras#20585). The alternatives were tf_keras'
`fit` (TF_USE_LEGACY_KERAS=1), which would train a Keras 2 model whose weight files and
layers differ from the Keras 3 bundles every other command loads, or a step through
`strategy.run` on the same Keras 3 model. This is the latter, and only the loop is ours:
variables, gradient all-reduce and data distribution are tf.distribute's, and the
callbacks (CSV log, checkpoints, curves, early stopping, LR on plateau) are the very
objects `fit` drives on one machine, so a run directory looks the same either way.

Scores stay exact: each step's confusion matrix is summed over every replica of every
worker, and validation sums each worker's share of the val split before scoring. At each
epoch's end the BatchNorm moving statistics (which each worker updates from its own
batches) are averaged over workers, so every worker ends with identical weights and the
validation of an epoch scores the very model the chief saves.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cityseg._tf import keras, tf
from cityseg.errors import UsageError
from cityseg.evaluation.metrics import scores_from_confusion
from cityseg.training.keras_metrics import confusion_from_tensor

if TYPE_CHECKING:
    from cityseg.training.cluster import Cluster
    from cityseg.training.pipeline import DataConfig

SUM = tf.distribute.ReduceOp.SUM


def sum_over_workers(strategy: Any, values: Sequence[float] | np.ndarray) -> np.ndarray:
    """An array summed over all workers (float64), each worker contributing its own once.

    `strategy.reduce` sums over replicas, and a worker with several GPUs has several, so
    the local array goes to its first replica and zeros to the others.
    """
    local = tf.constant(np.asarray(values, dtype=np.float64))
    handed_out: list[bool] = []

    def per_replica(context: Any) -> Any:
        first = not handed_out
        handed_out.append(True)
        return local if first else tf.zeros_like(local)

    distributed = strategy.experimental_distribute_values_from_function(per_replica)
    return np.asarray(strategy.reduce(SUM, distributed, axis=None).numpy(), dtype=np.float64)


def worker_inputs(
    strategy: Any, root: Path, config: DataConfig, cluster: Cluster, has_val: bool
) -> tuple[Any, Any | None]:
    """(the distributed train set, this worker's val share) for the loop.

    `--batch` stays the global batch: each of the cluster's replicas gets an equal part
    of it. Every worker reads only its own shard of the files; the train set repeats, so
    all workers run the same number of steps whatever their shard's size.
    """
    from cityseg.training.pipeline import make_dataset

    replicas = strategy.num_replicas_in_sync
    if config.batch_size % replicas:
        raise UsageError(
            f"--batch {config.batch_size} does not split evenly over {replicas} replicas "
            f"({cluster.size} workers); use a multiple of {replicas}"
        )

    def train_shard(context: tf.distribute.InputContext) -> tf.data.Dataset:
        per_replica = context.get_per_replica_batch_size(config.batch_size)
        shard = (context.num_input_pipelines, context.input_pipeline_id)
        sharded = replace(config, batch_size=per_replica)
        return make_dataset(root, "train", sharded, training=True, shard=shard).repeat()

    options = tf.distribute.InputOptions(experimental_fetch_to_device=True)
    train = strategy.distribute_datasets_from_function(train_shard, options)
    val = None
    if has_val:
        val = _val_share(root, config, cluster)
    return train, val


def _val_share(root: Path, config: DataConfig, cluster: Cluster) -> Any | None:
    from cityseg.dataset.entries import split_entries
    from cityseg.training.pipeline import make_dataset

    if len(split_entries(root, "val", config.scheme)) <= cluster.rank:
        return None  # fewer val images than workers: this one has none to score
    sharded = replace(config, batch_size=max(1, config.batch_size // cluster.size))
    return make_dataset(root, "val", sharded, training=False, shard=(cluster.size, cluster.rank))


@dataclass(frozen=True)
class LoopData:
    """What the loop iterates: a distributed, repeating train set and this worker's val."""

    train: Any
    steps: int
    val: Any | None
    """This worker's share of the val split (a plain tf.data.Dataset), or None."""
    has_val: bool
    """Whether any worker has val images (all workers must agree on the log keys)."""


@dataclass(frozen=True)
class LoopScores:
    num_classes: int
    ignore_index: int | None

    def logs(self, prefix: str, loss: float, confusion: np.ndarray) -> dict[str, float]:
        """The epoch log entries `fit` would write, from one summed confusion matrix."""
        scores = scores_from_confusion(confusion[: self.num_classes, : self.num_classes])
        return {
            f"{prefix}loss": loss,
            f"{prefix}miou": _zero_if_nan(scores.mean_iou),
            f"{prefix}miou_nonvoid": _zero_if_nan(scores.mean_iou_non_void),
        }


def _zero_if_nan(value: float) -> float:
    """StreamingMeanIoU's convention before any pixel is counted, so logs match `fit`."""
    return 0.0 if math.isnan(value) else float(value)


class MultiWorkerLoop:
    """`fit` for MultiWorkerMirroredStrategy: same callbacks, same logs, exact scores."""

    def __init__(
        self, model: Any, strategy: Any, loss_fn: Callable[[Any, Any], Any], scores: LoopScores
    ) -> None:
        self.model = model
        self.strategy = strategy
        self.loss_fn = loss_fn
        self.scores = scores
        self._train_step = tf.function(self._distributed_step)
        self._eval_batch = tf.function(self._local_eval)

    def fit(self, data: LoopData, epochs: int, initial_epoch: int, callbacks: list[Any]) -> None:
        model = self.model
        callback_list = keras.callbacks.CallbackList(
            callbacks, model=model, epochs=epochs, steps=data.steps, verbose=0
        )
        model.stop_training = False
        iterator = iter(data.train)
        logs: dict[str, float] = {}
        callback_list.on_train_begin()
        for epoch in range(initial_epoch, epochs):
            callback_list.on_epoch_begin(epoch)
            logs = self._train_epoch(iterator, data.steps, callback_list)
            self._average_moving_statistics()
            if data.has_val:
                logs.update(self._validate(data.val))
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
            callback_list.on_epoch_end(epoch, logs)
            if model.stop_training:
                break
        callback_list.on_train_end(logs)

    def _train_epoch(self, iterator: Any, steps: int, callback_list: Any) -> dict[str, float]:
        size = self.scores.num_classes
        confusion = np.zeros((size, size))
        loss_total = 0.0
        done = 0
        for step in range(steps):
            callback_list.on_train_batch_begin(step)
            loss, batch_confusion = self._train_step(iterator)
            loss_total += float(loss)
            confusion += batch_confusion.numpy()
            done += 1
            callback_list.on_train_batch_end(step, {"loss": float(loss)})
            if self.model.stop_training:
                break
        return self.scores.logs("", loss_total / max(done, 1), confusion)

    def _distributed_step(self, iterator: Any) -> tuple[Any, Any]:
        images, masks = next(iterator)
        loss, confusion = self.strategy.run(self._replica_step, args=(images, masks))
        return (
            self.strategy.reduce(SUM, loss, axis=None),
            self.strategy.reduce(SUM, confusion, axis=None),
        )

    def _replica_step(self, images: Any, masks: Any) -> tuple[Any, Any]:
        """One replica's share of a step; its loss is scaled so the replicas sum to the
        global batch's mean, which is what the optimizer's gradient all-reduce assumes."""
        model, optimizer = self.model, self.model.optimizer
        replicas = self.strategy.num_replicas_in_sync
        with tf.GradientTape() as tape:
            probs = model(images, training=True)
            loss = tf.cast(self.loss_fn(masks, probs), tf.float32)
            if model.losses:
                loss += tf.add_n([tf.cast(extra, tf.float32) for extra in model.losses])
            share = loss / replicas
            scaled = optimizer.scale_loss(share)
        variables = model.trainable_variables
        gradients = tape.gradient(scaled, variables)
        optimizer.apply_gradients(zip(gradients, variables, strict=True))
        confusion = confusion_from_tensor(
            masks, probs, self.scores.num_classes, self.scores.ignore_index
        )
        return share, confusion

    def _average_moving_statistics(self) -> None:
        """One all-reduce of every float non-trainable variable, flattened into one vector,
        then assigned outside the replicas (which updates every local copy)."""
        variables = [v for v in self.model.non_trainable_variables if _is_float(v)]
        if not variables:
            return
        local = tf.concat([tf.reshape(tf.cast(v, tf.float32), [-1]) for v in variables], 0)
        distributed = self.strategy.experimental_distribute_values_from_function(
            lambda context: local
        )
        mean = self.strategy.reduce(tf.distribute.ReduceOp.MEAN, distributed, axis=None)
        offset = 0
        for variable in variables:
            size = int(np.prod(variable.shape))
            part = tf.reshape(mean[offset : offset + size], variable.shape)
            variable.assign(tf.cast(part, variable.dtype))
            offset += size

    def _local_eval(self, images: Any, masks: Any) -> tuple[Any, Any]:
        probs = self.model(images, training=False)
        loss = tf.cast(self.loss_fn(masks, probs), tf.float64)
        count = tf.cast(tf.shape(images)[0], tf.float64)
        confusion = confusion_from_tensor(
            masks, probs, self.scores.num_classes, self.scores.ignore_index
        )
        return loss * count, confusion

    def _validate(self, val: Any | None) -> dict[str, float]:
        """This worker's share scored locally, then one sum over workers: the exact val
        scores, with no per-step collectives that uneven shares could leave unmatched."""
        size = self.scores.num_classes
        totals = np.zeros(2 + size * size)  # loss*images, images, confusion
        for images, masks in val if val is not None else ():
            weighted_loss, confusion = self._eval_batch(images, masks)
            totals[0] += float(weighted_loss)
            totals[1] += float(images.shape[0])
            totals[2:] += confusion.numpy().reshape(-1)
        totals = sum_over_workers(self.strategy, totals)
        loss = totals[0] / max(totals[1], 1.0)
        return self.scores.logs("val_", float(loss), totals[2:].reshape(size, size))


def _is_float(variable: Any) -> bool:
    return "float" in str(getattr(variable, "dtype", ""))
