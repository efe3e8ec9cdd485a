"""`cityseg train`: a prepared dataset in, a run directory with model bundles out.

The run directory is the unit users inspect and resume: `config.json` holds every setting
(enough to resume or reproduce), `metrics.csv` and `curves.png` the per-epoch scores,
`best/` and `last/` two loadable bundles. Scores come from confusion matrices over the
whole epoch, never from per-batch means.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import platform
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cityseg import __version__, configio
from cityseg.config import Precision, Strategy, TrainConfig
from cityseg.dataset.manifest import MANIFEST_NAME, read_manifest, resolve_scheme
from cityseg.errors import CitysegError, DataError
from cityseg.fsutil import atomic_write_json
from cityseg.runs import CONFIG_NAME, next_run_dir
from cityseg.training.cluster import Cluster, choose_strategy, join_cluster, read_cluster
from cityseg.training.crops import check_crop, crop_card_field, val_note

if TYPE_CHECKING:
    from cityseg.training.callbacks import NanGuard, RunCheckpoints

logger = logging.getLogger(__name__)
METRICS_NAME = "metrics.csv"


class TrainingInterrupted(CitysegError):
    """Ctrl-C during training: `last/` is saved and the message says how to resume."""

    exit_code = 130


@dataclass(frozen=True)
class TrainReport:
    run_dir: Path
    epochs_completed: int
    best_epoch: int | None
    best_score: float | None
    monitor: str
    wrote_run: bool = True
    """False on the workers of a multi-worker run other than the chief."""


def config_from_json(raw: dict[str, Any], where: str = CONFIG_NAME) -> TrainConfig:
    return configio.config_from_json(TrainConfig, raw, where)


def package_versions() -> dict[str, str]:
    names = (
        "tensorflow",
        "keras",
        "segmentation-models",
        "keras-hub",
        "albumentations",
        "numpy",
        "opencv-python-headless",
    )
    versions = {"cityseg": __version__, "python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def manifest_sha256(root: Path) -> str:
    return hashlib.sha256((root / MANIFEST_NAME).read_bytes()).hexdigest()


@contextmanager
def precision_policy(precision: Precision, has_gpu: bool) -> Iterator[str]:
    """Set Keras' global dtype policy for the run and restore it afterwards."""
    from cityseg._tf import keras

    name = {Precision.mixed: "mixed_float16", Precision.float32: "float32"}.get(
        precision, "mixed_float16" if has_gpu else "float32"
    )
    previous = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy(name)
    try:
        yield name
    finally:
        keras.mixed_precision.set_global_policy(previous)


def make_strategy(kind: Strategy, cluster: Cluster | None, timeout: float) -> Any:
    """The tf.distribute strategy for `kind`, created before any TensorFlow op runs.

    MultiWorkerMirroredStrategy configures collective ops at TensorFlow's start-up, so it
    must exist before anything (a tf.data pipeline, a device query) initialises the
    runtime: `train` creates it first.
    """
    from cityseg._tf import tf

    kind = choose_strategy(kind, cluster)  # refuses multiworker without TF_CONFIG
    if kind is Strategy.multiworker and cluster is not None:
        return join_cluster(cluster, timeout)
    gpus = tf.config.list_logical_devices("GPU")
    if kind is Strategy.mirrored:
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices=devices)
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


@dataclass(frozen=True)
class _Plan:
    """What one training process is: its settings, its place in the cluster, its classes."""

    config: TrainConfig
    strategy: Any
    cluster: Cluster | None
    """Set only for a multi-worker run."""
    classes: list[str]
    palette: Any
    ignore_index: int | None
    has_val: bool
    state: dict[str, Any] | None
    """`last/state.json` of the run being resumed."""
    resumed: Path | None
    """The run folder being resumed (every worker reads it: shared storage)."""

    @property
    def chief(self) -> bool:
        return self.cluster is None or self.cluster.is_chief

    @property
    def monitor(self) -> str:
        return "val_miou" if self.has_val else "miou"

    @property
    def initial_epoch(self) -> int:
        return int(self.state["epoch"]) if self.state else 0


def train(
    config: TrainConfig,
    *,
    resume: Path | None = None,
    callbacks: Sequence[Any] = (),
) -> TrainReport:
    """Train per `config`, or continue the run at `resume` with its saved config.

    `callbacks` are Keras callbacks run after cityseg's own, on every worker of a
    multi-worker run as on one machine.
    """
    run_dir: Path | None = None
    state: dict[str, Any] | None = None
    if resume is not None:
        run_dir, config, state = _load_resume(resume)
    from cityseg.training import models

    cluster = read_cluster()
    kind = choose_strategy(config.strategy, cluster)
    index = read_manifest(config.data)
    backbone = config.backbone or models.default_backbone(config.arch)  # the name config.json keeps
    config = dataclasses.replace(
        config, scheme=resolve_scheme(index, config.scheme), backbone=backbone
    )
    if config.scheme not in index.get("schemes", {}):
        raise DataError(
            f"{config.data} has no '{config.scheme}' masks; run "
            f"`cityseg remap {config.data} --scheme {config.scheme}`"
        )
    scheme_info = index["schemes"][config.scheme]
    if config.crop is None or not models.square_only(config.arch):
        # A square-only model trained on crops runs whole images by sliding: any --size.
        models.check_size(config.arch, backbone, config.height, config.width)
    if config.crop is not None:
        check_crop(config.arch, backbone, config.crop, (config.height, config.width))
    plan = _Plan(
        config=config,
        strategy=make_strategy(kind, cluster, config.worker_timeout),
        cluster=cluster if kind is Strategy.multiworker else None,
        classes=list(scheme_info["classes"]),
        palette=scheme_info["palette"],
        ignore_index=scheme_info.get("ignore_index"),
        has_val=bool(index["splits"].get("val")),
        state=state,
        resumed=run_dir,
    )
    if not plan.has_val:
        logger.warning("warning: the dataset has no val split; best/ follows the training mIoU")
    return _run(plan, list(callbacks))


def _run(plan: _Plan, extra: list[Any]) -> TrainReport:
    from cityseg._tf import GPUS, keras
    from cityseg.training.callbacks import RunCheckpoints

    config = plan.config
    keras.utils.set_random_seed(config.seed)
    inputs = _inputs(plan)
    class_weights = _class_weights(plan)
    with precision_policy(config.precision, bool(GPUS)) as policy:
        kind = type(plan.strategy).__name__
        if plan.cluster is not None:  # TensorFlow's class is CollectiveAllReduceStrategy
            kind = f"MultiWorkerMirroredStrategy over {plan.cluster.size} workers"
        logger.info(
            f"devices: {plan.strategy.num_replicas_in_sync} replica(s) ({kind}), precision {policy}"
        )
        with plan.strategy.scope():
            model, spec, loss_fn = _compiled_model(plan, inputs.steps, class_weights)
        run_dir = None
        if plan.chief:
            run_dir = _claim_run_dir(plan, class_weights)
            logger.info(f"run: {run_dir}")
        elif plan.cluster is not None:
            logger.info(f"{plan.cluster.describe()}: the chief writes the run folder")
        card = _card_maker(plan, spec, policy, run_dir)
        checkpoints = RunCheckpoints(
            run_dir,
            card,
            plan.monitor,
            best=(plan.state or {}).get("best"),
            best_epoch=(plan.state or {}).get("best_epoch"),
        )
        checkpoints.completed = plan.initial_epoch
        callbacks, nan_guard = _callbacks(plan, run_dir, checkpoints)
        if plan.initial_epoch >= config.epochs:
            logger.info(f"{run_dir} already finished {plan.initial_epoch} epochs; nothing to do")
        else:
            _fit(plan, model, loss_fn, inputs, [*callbacks, *extra], checkpoints, run_dir)
        if nan_guard.where is not None:
            epoch, batch = nan_guard.where
            raise CitysegError(
                f"the loss became NaN at epoch {epoch}, batch {batch}; last/ holds epoch "
                f"{checkpoints.completed}. Lower --lr or use --precision float32"
            )
    return TrainReport(
        run_dir or Path(),
        checkpoints.completed,
        checkpoints.best_epoch,
        checkpoints.best,
        plan.monitor,
        wrote_run=run_dir is not None,
    )


@dataclass(frozen=True)
class _Inputs:
    train: Any
    val: Any | None
    steps: int


def _inputs(plan: _Plan) -> _Inputs:
    """tf.data pipelines: as `fit` takes them, or sharded per worker for the loop."""
    from cityseg.training import pipeline as data_lib

    config = plan.config
    data_config = data_lib.DataConfig(
        height=config.height,
        width=config.width,
        batch_size=config.batch,
        aug=config.aug,
        cache=config.cache,
        seed=config.seed,
        scheme=config.scheme,
        crop=config.crop,
    )
    logger.info(data_lib.input_note(config.data, "train", data_config))
    if config.crop is not None:
        size, crop = data_config.size, config.crop
        logger.info(
            f"crop: one random {crop[0]}x{crop[1]} window of each {size[0]}x{size[1]} image"
        )
        if plan.has_val:
            logger.info(val_note(size, crop))
    steps = data_lib.steps_per_epoch(config.data, "train", data_config)
    if config.steps_per_epoch:
        steps = min(steps, config.steps_per_epoch)
    if plan.cluster is not None:
        from cityseg.training.distributed import worker_inputs

        train_data, val_data = worker_inputs(
            plan.strategy, config.data, data_config, plan.cluster, plan.has_val
        )
        return _Inputs(train_data, val_data, steps)
    train_data = data_lib.make_dataset(config.data, "train", data_config, training=True)
    val_data = None
    if plan.has_val:
        val_data = data_lib.make_dataset(config.data, "val", data_config, training=False)
    return _Inputs(train_data, val_data, steps)


def _class_weights(plan: _Plan) -> Any:
    if plan.config.loss != "weighted-dice":
        return None
    from cityseg.dataset.entries import class_pixel_counts
    from cityseg.training import losses

    config = plan.config
    counts = class_pixel_counts(config.data, "train", config.scheme, len(plan.classes))
    return losses.class_weights_from_counts(counts)


def _compiled_model(plan: _Plan, steps: int, class_weights: Any) -> tuple[Any, Any, Any]:
    """(model, its spec, the loss) with weights and optimizer state restored on resume.

    The multi-worker loop computes its own exact scores, so its model is compiled for the
    optimizer (and the loss-scale wrapper mixed precision adds) without Keras metrics.
    """
    from cityseg._tf import keras
    from cityseg.inference.bundle import read_card, verified_weights
    from cityseg.training import losses, models
    from cityseg.training.callbacks import OPTIMIZER_STATE, restore_optimizer
    from cityseg.training.keras_metrics import StreamingMeanIoU

    config = plan.config
    spec = models.ModelSpec(
        arch=config.arch,
        backbone=config.backbone or "",  # train() named it
        num_classes=len(plan.classes),
        height=model_size(config)[0],
        width=model_size(config)[1],
        weights="none" if plan.state else config.weights,
        base_filters=config.base_filters,
        head=models.head_for(config.arch, config.weights, plan.classes),
    )
    model = models.build_model(spec)
    last = (plan.resumed or Path()) / "last"
    if plan.resumed is not None:  # weights before compile: the file holds no optimizer
        folder, last_card = read_card(last)
        model.load_weights(str(verified_weights(folder, last_card)))
    num_classes, ignore = len(plan.classes), plan.ignore_index
    loss_fn = losses.get_loss(
        config.loss, num_classes, class_weights=class_weights, ignore_index=ignore
    )
    metrics = [
        StreamingMeanIoU(num_classes, ignore_index=ignore, name="miou"),
        StreamingMeanIoU(num_classes, ignore_index=ignore, exclude=(0,), name="miou_nonvoid"),
    ]
    # XLA rejects float16 gradients through bilinear upsampling (FPN's and PSPNet's last
    # layer; keras-team/keras#20931), and Keras turns XLA on by itself on a GPU.
    mixed = keras.mixed_precision.global_policy().name == "mixed_float16"
    model.compile(
        optimizer=_optimizer(config, steps, keras),
        loss=loss_fn,
        metrics=None if plan.cluster is not None else metrics,
        jit_compile=False if mixed else "auto",
    )
    if plan.resumed is not None:
        restore_optimizer(model.optimizer, last / OPTIMIZER_STATE, model.trainable_variables)
        logger.info(f"resuming at epoch {plan.initial_epoch + 1}/{config.epochs}")
    else:
        # Slots made now, not inside the first traced step: a tf.function that creates
        # variables is traced twice (~17 s of a small CPU run); they start at zero anyway.
        model.optimizer.build(model.trainable_variables)
    return model, spec, loss_fn


def _claim_run_dir(plan: _Plan, class_weights: Any) -> Path:
    """The chief's run folder: created (with config.json) only now that the model built,
    so a typo leaves no debris; on resume, metrics.csv is cut back to the checkpoint."""
    from cityseg.training.callbacks import trim_metrics

    config = plan.config
    if plan.resumed is not None:
        trim_metrics(plan.resumed / METRICS_NAME, plan.initial_epoch)
        return plan.resumed
    run_dir = next_run_dir(config.project, config.name or config.arch)
    run_dir.mkdir(parents=True)
    atomic_write_json(
        run_dir / CONFIG_NAME,
        {
            **configio.json_record(config),
            "run_dir": str(run_dir),
            "classes": plan.classes,
            "data_manifest_sha256": manifest_sha256(config.data),
            "class_weights": None if class_weights is None else class_weights.tolist(),
            "versions": package_versions(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
    )
    return run_dir


def _card_maker(
    plan: _Plan, spec: Any, policy: str, run_dir: Path | None
) -> Callable[[dict[str, Any]], dict[str, Any]]:
    from cityseg.training import models

    config = plan.config

    # A crop-trained model is fully convolutional: its card names the whole training size,
    # so predict, evaluate and export run it on whole images as they would any other run;
    # a square-only one keeps the crop, and slides it over whole images by default.
    inference_spec = (
        spec
        if models.square_only(config.arch)
        else dataclasses.replace(spec, height=config.height, width=config.width)
    )

    def card(summary: dict[str, Any]) -> dict[str, Any]:
        return {
            **models.card_fields(inference_spec),
            "crop": crop_card_field(config.crop, (config.height, config.width)),
            "scheme": config.scheme,
            "classes": plan.classes,
            "palette": plan.palette,
            "ignore_index": plan.ignore_index,
            "training": {
                "run": run_dir.name if run_dir else "",
                "loss": config.loss,
                "policy": policy,
                "data_manifest_sha256": manifest_sha256(config.data),
                **summary,
            },
        }

    return card


def _callbacks(
    plan: _Plan, run_dir: Path | None, checkpoints: RunCheckpoints
) -> tuple[list[Any], NanGuard]:
    """Every worker runs the callbacks that steer training (so all stop and change the
    learning rate together); only the chief runs those that write files."""
    from cityseg._tf import keras
    from cityseg.training.callbacks import (
        SECONDS_COLUMN,
        Curves,
        EpochProgress,
        EpochSeconds,
        NanGuard,
        csv_lacks_column,
    )

    config = plan.config
    nan_guard = NanGuard()
    steering: list[Any] = [nan_guard]
    writing: list[Any] = []
    if run_dir is not None:
        if not csv_lacks_column(run_dir / METRICS_NAME, SECONDS_COLUMN):
            steering.insert(0, EpochSeconds())  # a run from before the column goes without
        writing = [
            keras.callbacks.CSVLogger(str(run_dir / METRICS_NAME), append=plan.state is not None),
            checkpoints,
            Curves(run_dir / METRICS_NAME, run_dir / "curves.png"),
            keras.callbacks.TensorBoard(
                str(run_dir / "tensorboard"), write_graph=False, profile_batch=0
            ),
        ]
    else:
        steering.append(checkpoints)  # tracks the best epoch, writes nothing
    progress = EpochProgress(config.epochs, plan.monitor, best=(plan.state or {}).get("best"))
    steering_after: list[Any] = [progress]
    if config.schedule.value == "plateau":
        steering_after.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor=plan.monitor, mode="max", factor=0.5, patience=3
            )
        )
    if config.patience > 0:
        steering_after.append(
            keras.callbacks.EarlyStopping(
                monitor=plan.monitor, mode="max", patience=config.patience
            )
        )
    return [*steering, *writing, *steering_after], nan_guard


def _fit(
    plan: _Plan,
    model: Any,
    loss_fn: Any,
    inputs: _Inputs,
    callbacks: list[Any],
    checkpoints: RunCheckpoints,
    run_dir: Path | None,
) -> None:
    from cityseg._tf import tf

    config = plan.config
    try:
        if plan.cluster is not None:
            from cityseg.training.distributed import LoopData, LoopScores, MultiWorkerLoop

            loop = MultiWorkerLoop(
                model, plan.strategy, loss_fn, LoopScores(len(plan.classes), plan.ignore_index)
            )
            data = LoopData(inputs.train, inputs.steps, inputs.val, plan.has_val)
            loop.fit(data, config.epochs, plan.initial_epoch, callbacks)
        else:
            warnings.filterwarnings("ignore", message=".*`shuffle=True` was passed.*")
            model.fit(
                inputs.train,
                validation_data=inputs.val,
                epochs=config.epochs,
                initial_epoch=plan.initial_epoch,
                steps_per_epoch=inputs.steps,
                verbose=0,
                callbacks=callbacks,
            )
    except KeyboardInterrupt:
        checkpoints.save_last()
        where = run_dir if run_dir is not None else "the chief's run folder"
        raise TrainingInterrupted(
            f"interrupted after epoch {checkpoints.completed}; last/ saved. Resume with: "
            f"cityseg train --resume {where}"
        ) from None
    except tf.errors.ResourceExhaustedError as exc:
        size = "--crop" if config.crop else "--size"
        height, width = model_size(config)
        raise CitysegError(
            f"out of memory at --batch {config.batch} and {size} {height}x{width}; "
            "lower one of them"
        ) from exc


def model_size(config: TrainConfig) -> tuple[int, int]:
    """(height, width) the model is built at: the crop, or the whole training size."""
    return config.crop if config.crop is not None else (config.height, config.width)


def _optimizer(config: TrainConfig, steps: int, keras: Any) -> Any:
    rate: Any = config.lr
    if config.schedule.value == "cosine":
        rate = keras.optimizers.schedules.CosineDecay(
            config.lr, decay_steps=max(1, steps * config.epochs), alpha=0.01
        )
    if config.optimizer.value == "adamw":
        return keras.optimizers.AdamW(learning_rate=rate, weight_decay=1e-4)
    if config.optimizer.value == "sgd":
        return keras.optimizers.SGD(learning_rate=rate, momentum=0.9, nesterov=True)
    return keras.optimizers.Adam(learning_rate=rate)


def _load_resume(resume: Path) -> tuple[Path, TrainConfig, dict[str, Any]]:
    run_dir = resume
    config_path = run_dir / CONFIG_NAME
    if not config_path.is_file():
        raise DataError(f"{resume} is not a cityseg training run (no {CONFIG_NAME})")
    state_path = run_dir / "last" / "state.json"
    if not state_path.is_file():
        raise DataError(f"{resume} has no last/ checkpoint to resume from; start a new run")
    try:
        raw = json.loads(config_path.read_text())
        state = json.loads(state_path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {run_dir}'s saved state: {exc}") from exc
    return run_dir, config_from_json(raw, str(config_path)), state
