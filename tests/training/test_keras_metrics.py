"""StreamingMeanIoU: whole-epoch mIoU inside Keras, equal to the numpy confusion matrix."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from cityseg._tf import keras, tf
from cityseg.evaluation.metrics import confusion_matrix, scores_from_confusion
from cityseg.training.keras_metrics import StreamingMeanIoU


def _probs(ids: np.ndarray, num_classes: int) -> np.ndarray:
    """Softmax-like scores whose argmax is `ids`."""
    probs = np.full((*ids.shape, num_classes), 0.1 / (num_classes - 1), np.float32)
    np.put_along_axis(probs, ids[..., None], 0.9, axis=-1)
    return probs


# Batch A: all class 0, all right -> its own mIoU is 1.0 (only class 0 present).
# Batch B: truth [0,1,1,1], prediction [1,1,1,1] -> IoU 0 for class 0, 3/4 for class 1.
TRUTH_A = np.array([[[0, 0], [0, 0]]])
PRED_A = np.array([[[0, 0], [0, 0]]])
TRUTH_B = np.array([[[0, 1], [1, 1]]])
PRED_B = np.array([[[1, 1], [1, 1]]])


def test_streams_the_whole_confusion_matrix_not_a_mean_of_batches() -> None:
    metric = StreamingMeanIoU(num_classes=3)
    metric.update_state(TRUTH_A, _probs(PRED_A, 3))
    assert float(metric.result()) == pytest.approx(1.0)
    metric.update_state(TRUTH_B, _probs(PRED_B, 3))

    # Whole set: class 0 TP 4, FN 1 -> 4/5; class 1 TP 3, FP 1 -> 3/4; class 2 absent.
    expected = (4 / 5 + 3 / 4) / 2
    mean_of_batches = (1.0 + (0 + 3 / 4) / 2) / 2
    assert float(metric.result()) == pytest.approx(expected, abs=1e-6)
    assert abs(expected - mean_of_batches) > 0.05
    numpy_miou = scores_from_confusion(
        confusion_matrix(np.concatenate([TRUTH_A, TRUTH_B]), np.concatenate([PRED_A, PRED_B]), 3),
        void_classes=(),
    ).mean_iou
    assert float(metric.result()) == pytest.approx(numpy_miou, abs=1e-6)

    non_void = StreamingMeanIoU(num_classes=3, exclude=(0,), name="miou_nonvoid")
    non_void.update_state(TRUTH_A, _probs(PRED_A, 3))
    non_void.update_state(TRUTH_B, _probs(PRED_B, 3))
    assert float(non_void.result()) == pytest.approx(3 / 4)

    metric.reset_state()
    assert float(metric.result()) == 0.0
    assert float(tf.reduce_sum(metric.confusion)) == 0.0


def test_label_layouts_ignore_index_and_config() -> None:
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 4, size=(3, 6, 5))
    truth[0, 0] = 255
    pred = rng.integers(0, 4, size=(3, 6, 5))
    expected = scores_from_confusion(confusion_matrix(truth, pred, 4, 255), ()).mean_iou

    ids = StreamingMeanIoU(4, ignore_index=255)
    ids.update_state(truth.astype(np.uint8), _probs(pred, 4))
    with_channel = StreamingMeanIoU(4, ignore_index=255)
    with_channel.update_state(truth[..., None].astype(np.float32), _probs(pred, 4))
    for metric in (ids, with_channel):
        assert float(metric.result()) == pytest.approx(expected, abs=1e-6)

    clean = np.where(truth == 255, 0, truth)
    one_hot = StreamingMeanIoU(4)
    one_hot.update_state(np.eye(4, dtype=np.float32)[clean], _probs(pred, 4))
    assert float(one_hot.result()) == pytest.approx(
        scores_from_confusion(confusion_matrix(clean, pred, 4), ()).mean_iou, abs=1e-6
    )

    weighted = StreamingMeanIoU(4, ignore_index=255)
    weighted.update_state(truth, _probs(pred, 4), sample_weight=np.array([1.0, 0.0, 0.0]))
    assert float(weighted.result()) == pytest.approx(
        scores_from_confusion(confusion_matrix(truth[:1], pred[:1], 4, 255), ()).mean_iou,
        abs=1e-6,
    )

    config = StreamingMeanIoU(8, ignore_index=255, exclude=(0,), name="miou_nonvoid").get_config()
    clone = StreamingMeanIoU.from_config(config)
    assert (clone.num_classes, clone.ignore_index, clone.exclude, clone.name) == (
        8,
        255,
        (0,),
        "miou_nonvoid",
    )
    with pytest.raises(ValueError, match="neither class ids"):
        ids.update_state(np.zeros((1, 2, 2, 3)), _probs(np.zeros((1, 2, 2), int), 4))


def _tiny_model(num_classes: int) -> keras.Model:
    inputs = keras.Input((4, 4, 3))
    outputs = keras.layers.Conv2D(num_classes, 1, activation="softmax")(inputs)
    return keras.Model(inputs, outputs)


def test_works_in_compile_and_fit() -> None:
    rng = np.random.default_rng(1)
    x = rng.random((6, 4, 4, 3)).astype(np.float32)
    y = rng.integers(0, 3, size=(6, 4, 4))
    model = _tiny_model(3)
    # Learning rate 0: predictions are the same at every step, so the epoch's streamed
    # mIoU must equal the numpy score of model.predict on the same data.
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.0),
        loss="sparse_categorical_crossentropy",
        metrics=[StreamingMeanIoU(3), StreamingMeanIoU(3, exclude=(0,), name="miou_nonvoid")],
    )
    history = model.fit(x, y, batch_size=2, epochs=1, verbose=0)
    pred = model.predict(x, verbose=0).argmax(-1)
    scores = scores_from_confusion(confusion_matrix(y, pred, 3))
    assert history.history["miou"][0] == pytest.approx(scores.mean_iou, abs=1e-6)
    assert history.history["miou_nonvoid"][0] == pytest.approx(scores.mean_iou_non_void, abs=1e-6)


MIRRORED_SCRIPT = textwrap.dedent(
    """
    import json
    import numpy as np
    from cityseg._tf import keras, tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from cityseg.training.keras_metrics import StreamingMeanIoU
    from cityseg.evaluation.metrics import confusion_matrix, scores_from_confusion

    rng = np.random.default_rng(2)
    x = rng.random((8, 4, 4, 2)).astype(np.float32)
    y = rng.integers(0, 3, size=(8, 4, 4))
    y[0] = 255
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        inputs = keras.Input((4, 4, 2))
        outputs = keras.layers.Conv2D(3, 1, activation="softmax")(inputs)
        model = keras.Model(inputs, outputs)
        metric = StreamingMeanIoU(3, ignore_index=255)
        model.compile(
            optimizer=keras.optimizers.SGD(learning_rate=0.0),
            loss=keras.losses.SparseCategoricalCrossentropy(ignore_class=255),
            metrics=[metric],
        )
    batch_logs = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            batch_logs.append(float(logs["miou"]))

    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[Record()])
    pred = model.predict(x, verbose=0).argmax(-1)
    matrix = confusion_matrix(y, pred, 3, ignore_index=255)
    replicas = metric.confusion.value.values
    print(json.dumps({
        "replicas": strategy.num_replicas_in_sync,
        "per_replica_pixels": [float(tf.reduce_sum(v)) for v in replicas],
        "summed": np.asarray(metric.confusion.value).tolist(),
        "numpy": matrix.tolist(),
        "epoch_miou": history.history["miou"][0],
        "last_batch_miou": batch_logs[-1],
        "numpy_miou": scores_from_confusion(matrix, ()).mean_iou,
    }))
    """
)


@pytest.mark.slow
def test_mirrored_over_two_logical_cpus_sums_the_replicas() -> None:
    # Logical devices must be set before TF initialises, hence a fresh interpreter.
    done = subprocess.run(
        [sys.executable, "-c", MIRRORED_SCRIPT],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2
    assert all(pixels > 0 for pixels in result["per_replica_pixels"])  # both replicas counted
    assert sum(result["per_replica_pixels"]) == 7 * 16  # image 0 is all ignore_index
    assert result["summed"] == result["numpy"]
    assert result["epoch_miou"] == pytest.approx(result["numpy_miou"], abs=1e-6)
    # Per-step logs are read inside the replicas; they must be the global value too.
    assert result["last_batch_miou"] == pytest.approx(result["numpy_miou"], abs=1e-6)
