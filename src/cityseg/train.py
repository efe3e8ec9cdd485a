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
import platform
import re
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from importlib import metadata
from pathlib import Path
from typing import Any

from cityseg import __version__
from cityseg.config import Precision, Strategy, TrainConfig
from cityseg.errors import CitysegError, DataError, UsageError
from cityseg.fsutil import atomic_write_json
from cityseg.manifest import MANIFEST_NAME, read_manifest

Log = Callable[[str], None]
CONFIG_NAME = "config.json"


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


def parse_size(text: str) -> tuple[int, int]:
    """`512x1024` -> (512, 1024): height first, as Keras and the CLI's help say."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX*,]\s*(\d+)\s*", text)
    if not match:
        raise UsageError(f"--size must look like HEIGHTxWIDTH (e.g. 512x1024), got {text!r}")
    height, width = int(match[1]), int(match[2])
    if height < 16 or width < 16:
        raise UsageError(f"--size {text} is too small; use at least 16x16")
    return height, width


def next_run_dir(project: Path, name: str) -> Path:
    """`project/name`, or `name2`, `name3`, ... if taken (never reuses a run)."""
    candidate = project / name
    number = 2
    while candidate.exists():
        candidate = project / f"{name}{number}"
        number += 1
    return candidate


def config_to_json(config: TrainConfig) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        out[field.name] = (
            value.value
            if hasattr(value, "value")
            else (str(value) if isinstance(value, Path) else value)
        )
    return out


def config_from_json(raw: dict[str, Any]) -> TrainConfig:
    known = {field.name: field for field in dataclasses.fields(TrainConfig)}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in known:
            continue
        default = getattr(TrainConfig(), key)
        if isinstance(default, Path):
            value = Path(value)
        elif isinstance(default, Enum):
            value = type(default)(value)
        values[key] = value
    return TrainConfig(**values)


def package_versions() -> dict[str, str]:
    names = (
        "tensorflow",
        "keras",
        "segmentation-models",
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


def make_strategy(kind: Strategy) -> Any:
    import os

    from cityseg._tf import tf

    gpus = tf.config.list_logical_devices("GPU")
    if kind is Strategy.multiworker:
        if "TF_CONFIG" not in os.environ:
            raise UsageError(
                "--strategy multiworker needs TF_CONFIG set on every worker (see docs/train.md)"
            )
        return tf.distribute.MultiWorkerMirroredStrategy()
    if kind is Strategy.mirrored:
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices=devices)
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def train(config: TrainConfig, *, resume: Path | None = None, log: Log = print) -> TrainReport:
    """Train per `config`, or continue the run at `resume` with its saved config."""
    run_dir: Path | None = None
    state: dict[str, Any] | None = None
    last = Path()
    if resume is not None:
        run_dir, config, state = _load_resume(resume)
        last = run_dir / "last"
    from cityseg import data as data_lib
    from cityseg import losses, models
    from cityseg._tf import GPUS, keras, tf
    from cityseg.bundle import read_card, verified_weights
    from cityseg.callbacks import (
        OPTIMIZER_STATE,
        Curves,
        EpochProgress,
        NanGuard,
        RunCheckpoints,
        restore_optimizer,
    )
    from cityseg.keras_metrics import StreamingMeanIoU

    index = read_manifest(config.data)
    if config.scheme not in index.get("schemes", {}):
        raise DataError(
            f"{config.data} has no '{config.scheme}' masks; run "
            f"`cityseg remap {config.data} --scheme {config.scheme}`"
        )
    scheme_info = index["schemes"][config.scheme]
    classes: list[str] = list(scheme_info["classes"])
    palette = scheme_info["palette"]
    ignore_index = scheme_info.get("ignore_index")
    models.check_size(config.arch, config.backbone, config.height, config.width)

    data_config = data_lib.DataConfig(
        height=config.height,
        width=config.width,
        batch_size=config.batch,
        aug=config.aug,
        cache=config.cache,
        seed=config.seed,
        scheme=config.scheme,
    )
    train_data = data_lib.make_dataset(config.data, "train", data_config, training=True)
    log(data_lib.input_note(config.data, "train", data_config))
    has_val = bool(index["splits"].get("val"))
    val_data = (
        data_lib.make_dataset(config.data, "val", data_config, training=False) if has_val else None
    )
    if not has_val:
        log("warning: the dataset has no val split; best/ follows the training mIoU")
    monitor = "val_miou" if has_val else "miou"

    class_weights = None
    if config.loss == "weighted-dice":
        counts = data_lib.class_pixel_counts(config.data, "train", config.scheme, len(classes))
        class_weights = losses.class_weights_from_counts(counts)

    keras.utils.set_random_seed(config.seed)
    strategy = make_strategy(config.strategy)
    with precision_policy(config.precision, bool(GPUS)) as policy:
        log(
            f"devices: {strategy.num_replicas_in_sync} replica(s) "
            f"({type(strategy).__name__}), precision {policy}"
        )
        with strategy.scope():
            spec = models.ModelSpec(
                arch=config.arch,
                backbone=config.backbone,
                num_classes=len(classes),
                height=config.height,
                width=config.width,
                weights="none" if state else config.weights,
                base_filters=config.base_filters,
            )
            model = models.build_model(spec)
            if state is not None:  # weights before compile: the file holds no optimizer
                folder, last_card = read_card(last)
                model.load_weights(str(verified_weights(folder, last_card)))
            steps = data_lib.steps_per_epoch(config.data, "train", data_config)
            if config.steps_per_epoch:
                steps = min(steps, config.steps_per_epoch)
            model.compile(
                optimizer=_optimizer(config, steps, keras),
                loss=losses.get_loss(
                    config.loss,
                    len(classes),
                    class_weights=class_weights,
                    ignore_index=ignore_index,
                ),
                metrics=[
                    StreamingMeanIoU(len(classes), ignore_index=ignore_index, name="miou"),
                    StreamingMeanIoU(
                        len(classes), ignore_index=ignore_index, exclude=(0,), name="miou_nonvoid"
                    ),
                ],
            )
            initial_epoch = 0
            if state is not None:
                restore_optimizer(
                    model.optimizer, last / OPTIMIZER_STATE, model.trainable_variables
                )
                initial_epoch = int(state["epoch"])
                log(f"resuming at epoch {initial_epoch + 1}/{config.epochs}")

        # the run folder appears only once the model builds: a typo leaves no debris
        if run_dir is None:
            run_dir = next_run_dir(config.project, config.name or config.arch)
            run_dir.mkdir(parents=True)
            atomic_write_json(
                run_dir / CONFIG_NAME,
                {
                    **config_to_json(config),
                    "run_dir": str(run_dir),
                    "classes": classes,
                    "data_manifest_sha256": manifest_sha256(config.data),
                    "class_weights": None if class_weights is None else class_weights.tolist(),
                    "versions": package_versions(),
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                },
            )
        log(f"run: {run_dir}")

        def card(summary: dict[str, Any]) -> dict[str, Any]:
            return {
                **models.card_fields(spec),
                "scheme": config.scheme,
                "classes": classes,
                "palette": palette,
                "ignore_index": ignore_index,
                "training": {
                    "run": run_dir.name,
                    "loss": config.loss,
                    "policy": policy,
                    "data_manifest_sha256": manifest_sha256(config.data),
                    **summary,
                },
            }

        checkpoints = RunCheckpoints(
            run_dir,
            card,
            monitor,
            best=(state or {}).get("best"),
            best_epoch=(state or {}).get("best_epoch"),
        )
        nan_guard = NanGuard()
        callbacks: list[Any] = [
            nan_guard,
            keras.callbacks.CSVLogger(str(run_dir / "metrics.csv"), append=state is not None),
            checkpoints,
            Curves(run_dir / "metrics.csv", run_dir / "curves.png"),
            keras.callbacks.TensorBoard(
                str(run_dir / "tensorboard"), write_graph=False, profile_batch=0
            ),
            EpochProgress(config.epochs, monitor, log),
        ]
        if config.schedule.value == "plateau":
            callbacks.append(
                keras.callbacks.ReduceLROnPlateau(
                    monitor=monitor, mode="max", factor=0.5, patience=3
                )
            )
        if config.patience > 0:
            callbacks.append(
                keras.callbacks.EarlyStopping(monitor=monitor, mode="max", patience=config.patience)
            )
        checkpoints.completed = initial_epoch
        if initial_epoch >= config.epochs:
            log(f"{run_dir} already finished {initial_epoch} epochs; nothing to do")
        else:
            warnings.filterwarnings("ignore", message=".*`shuffle=True` was passed.*")
            try:
                model.fit(
                    train_data,
                    validation_data=val_data,
                    epochs=config.epochs,
                    initial_epoch=initial_epoch,
                    steps_per_epoch=steps,
                    verbose=0,
                    callbacks=callbacks,
                )
            except KeyboardInterrupt:
                checkpoints.save_last()
                raise TrainingInterrupted(
                    f"interrupted after epoch {checkpoints.completed}; last/ saved. Resume with: "
                    f"cityseg train --resume {run_dir}"
                ) from None
            except tf.errors.ResourceExhaustedError as exc:
                raise CitysegError(
                    f"out of memory at --batch {config.batch} and --size "
                    f"{config.height}x{config.width}; lower one of them"
                ) from exc
        if nan_guard.where is not None:
            epoch, batch = nan_guard.where
            raise CitysegError(
                f"the loss became NaN at epoch {epoch}, batch {batch}; last/ holds epoch "
                f"{checkpoints.completed}. Lower --lr or use --precision float32"
            )
    return TrainReport(
        run_dir, checkpoints.completed, checkpoints.best_epoch, checkpoints.best, monitor
    )


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
    return run_dir, config_from_json(raw), state
