"""GPU check: mixed-precision training, MirroredStrategy and predict speed, in one short run.

Until a GPU is lent, mixed precision, GPU throughput and the GPU path of MirroredStrategy
are unproven (issue 12). This is the one run that proves or refutes them, sized to fit
in about 5 minutes of device time including TensorFlow's start, XLA compilation and
cuDNN autotuning. Every stage prints a progress line and rewrites the JSON report
(`--out`), so a run killed by a timeout still leaves the figures it reached.

train      `cityseg.training.train.train()` itself, the path `cityseg train` runs:
           FPN-EfficientNetB0 at 512x1024, batch 8, `--precision mixed`, weights none (nothing
           downloads), on
           synthetic scenes that cityseg.dataset.synthetic writes at the training size (so decoding
           is cheap and no resize happens) and cityseg.dataset.prepare prepares, aug none, with a
           val split of one batch as a real run has. Two epochs of --steps steps each.
           Timing: a callback passed through train()'s `callbacks=` stamps the clock at
           each step's end. Keras converts a
           step's logs to numbers before batch-end callbacks run, so each stamp comes
           after the step finished. Throughput is images over the sum of step-to-step
           intervals inside an epoch, leaving out the first --warmup steps (tracing, XLA,
           autotuning) and each epoch's first step (the interval would hold the epoch end).
           The epoch figure is epoch 2's wall time between train()'s own per-epoch log
           lines: it adds what train() does at each epoch end (validation, last/ and best/
           bundles, metrics.csv, curves.png, TensorBoard), i.e. what a user's epochs cost.
           If the timer sees no steps (train() changed), only the epoch figure is given.
           The dtype policy is read back inside fit (on_train_begin): Keras' global
           policy, every layer's policy, the last layer's compute dtype, the output dtype
           and the optimizer (a LossScaleOptimizer under mixed_float16). Peak GPU memory
           is TensorFlow's allocator peak over the call, reset before it.
           XLA: Keras compiles with XLA on a single GPU (not on a CPU, nor under a
           strategy). Mixed precision under XLA fails on the gradient of bilinear
           upsampling, which ends sm's FPN (keras-team/keras#20931; reproduced on a CPU
           with --xla on), so train() compiles mixed-precision models without XLA.
           `--xla on` forces it (to see whether upstream fixed it); if train() then
           fails, the run is repeated with XLA off (train_xla_off) so the figures still
           come; the failure stays in the report and the exit status is 1.
input      the same tf.data pipeline alone, iterated with nothing consuming it: if it is
           not well above the training figure, training was input-bound.
mirrored   with two or more GPUs, the same run under `--strategy mirrored` with --batch per
           replica; with one it is skipped (`--mirrored always` runs a one-device
           MirroredStrategy, which exercises the distributed dataset and loss scaling
           under a strategy). Keras turns XLA off under any strategy. On several GPUs the
           train stage is what `--strategy auto` picks there, MirroredStrategy over all of
           them with --batch in all; the report names the strategy and replica count.
predict    the trained last/ bundle rebuilt with a 1024x2048 input (FPN is fully
           convolutional; `runtimes.open_model(size=...)`), so this is the model alone at
           full Cityscapes size, not the Predictor's resize from 512x1024 and no PNG work.
           Timed with `cityseg benchmark`'s protocol (cityseg.deploy.benchmark: warm-up calls,
           then timed calls of one batch each) for the Keras bundle in float32 (what
           `cityseg predict` runs), its `cityseg export` SavedModel, and the Keras model
           rebuilt under mixed_float16. TF-TRT is not in TensorFlow 2.21's wheels and
           cityseg exports no TensorRT engine: the report says whether TensorRT is built
           in, and the SavedModel row is the deployable GPU figure.

    python benchmarks/gpu.py [--out benchmarks/gpu.json]      # on a GPU machine, ~3-5 min
    python benchmarks/gpu.py --tiny --out /tmp/gpu.json        # CPU smoke test, 1-2 min

Without a GPU it stops with one line unless --tiny or --allow-cpu. Exit status 0 means
every stage ran and every check held (policy, float32 last activation, finite loss).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import json
import logging
import math
import os
import platform
import re
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np

from cityseg.fsutil import atomic_write_json
from cityseg.runs import parse_size
from cityseg.training.train import package_versions

STARTED = time.perf_counter()
DEVICES = re.compile(r"devices: (\d+) replica\(s\) \((\w+)\)")
"""train()'s log line naming the strategy it chose."""
EPOCHS = 2
"""Epoch 1 holds the warm-up steps; epoch 2 gives the whole-epoch figure."""


@dataclass(frozen=True)
class Settings:
    """The GPU run's sizes; each field has a flag of the same name."""

    arch: str = "fpn"
    backbone: str = "efficientnetb0"
    train_size: tuple[int, int] = (512, 1024)
    batch: int = 8
    steps: int = 30
    warmup: int = 5
    precision: str = "mixed"
    aug: str = "none"
    predict_size: tuple[int, int] = (1024, 2048)
    predict_batch: tuple[int, ...] = (1, 8)
    runs: int = 20
    mirrored: str = "auto"
    xla: str = "auto"


TINY = Settings(
    backbone="resnet18",
    train_size=(32, 64),
    batch=1,
    steps=2,
    warmup=1,
    predict_size=(64, 128),
    predict_batch=(1,),
    runs=3,
)
"""A smoke test of every code path on a CPU in about a minute. Small because a CPU trains
under mixed_float16 on slow fallback kernels: one 64-channel convolution's backward pass
at 64x128 took 5.6 s on a 2-core Sapphire Rapids (AVX512-FP16 or not, TensorFlow's CPU
build has no fast float16 gradient), so training at 64x128 batch 2 took 3 minutes an
epoch, and 13 s at 32x64 batch 1. ResNet18, not EfficientNetB0, for the same reason;
`--tiny --backbone efficientnetb0` runs it anyway."""


def progress(message: str) -> None:
    print(f"[{time.perf_counter() - STARTED:6.1f} s] {message}", flush=True)


class Report:
    """The JSON report, rewritten after every stage so a timeout still leaves figures."""

    def __init__(self, path: Path | None, settings: Settings, argv: list[str]) -> None:
        self.path = path
        self.data: dict[str, Any] = {
            "script": "benchmarks/gpu.py",
            "argv": argv,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "status": "running",
            "settings": dataclasses.asdict(settings),
        }

    def save(self) -> None:
        self.data["elapsed_seconds"] = round(time.perf_counter() - STARTED, 1)
        if self.path is not None:
            atomic_write_json(self.path, self.data)


@contextlib.contextmanager
def stage(report: Report, name: str) -> Iterator[dict[str, Any]]:
    """One section of the report; a stage that fails is recorded and the next one runs,
    since on a one-shot GPU run every figure that can be had is worth having."""
    section: dict[str, Any] = report.data.setdefault(name, {})
    started = time.perf_counter()
    progress(f"{name} ...")
    try:
        yield section
    except Exception as exc:
        section["error"] = one_line(exc)
        section["traceback"] = traceback.format_exc()[-6000:]
        progress(f"{name} FAILED: {section['error']}")
    finally:
        section["seconds"] = round(time.perf_counter() - started, 1)
        report.save()


def one_line(exc: BaseException) -> str:
    """The line that says what went wrong: TensorFlow's graph errors wrap it in a Python
    stack and node names."""
    noise = ("[[", "Detected at node", "Graph execution error", "File ")
    lines = [line.strip() for line in str(exc).splitlines()]
    lines = [line for line in lines if line and not line.startswith(noise)]
    return f"{type(exc).__name__}: {(lines or [''])[-1][:500]}"


# ----------------------------------------------------------------------------- environment


def environment(tf: Any, gpus: list[Any]) -> dict[str, Any]:
    build = tf.sysconfig.get_build_info()
    if gpus:
        details = [dict(tf.config.experimental.get_device_details(gpu)) for gpu in gpus]
        device: dict[str, Any] = {"type": "GPU", "count": len(gpus), "gpus": details}
        device["name"] = details[0].get("device_name", gpus[0].name)
    else:
        device = {"type": "CPU", "count": 0, "name": cpu_name()}
    return {
        "device": device,
        "versions": package_versions(),
        "tensorflow_build": {
            key: build.get(key)
            for key in ("cuda_version", "cudnn_version", "cuda_compute_capabilities")
        },
        "tensorrt_build": bool(build.get("is_tensorrt_build")),
        "cpu_cores": os.cpu_count(),
        "platform": platform.platform(),
    }


def cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def reset_peak(tf: Any, gpus: list[Any]) -> None:
    if gpus:
        tf.config.experimental.reset_memory_stats("GPU:0")


def peak_bytes(tf: Any, gpus: list[Any]) -> int | None:
    """TensorFlow's allocator peak on GPU:0; None on a CPU, where TF does not track it."""
    return int(tf.config.experimental.get_memory_info("GPU:0")["peak"]) if gpus else None


# ----------------------------------------------------------------------------- training


def write_dataset(work: Path, size: tuple[int, int], steps: int, batch: int) -> Path:
    """Exactly `steps` batches of synthetic scenes for train and one for val, at the
    training size: one city per batch, as prepare splits train/val by whole cities, and
    val_ratio 1/cities makes it pick one city. One pass over train is one epoch, so
    Keras restarts the data at each epoch instead of running out."""
    from cityseg.dataset.manifest import read_manifest
    from cityseg.dataset.prepare import prepare_dataset
    from cityseg.dataset.synthetic import SyntheticSpec, write_raw_dataset

    cities = tuple(f"city{number}" for number in range(steps + 1))
    spec = SyntheticSpec(
        height=size[0], width=size[1], images_per_city=batch, cities={"train": cities}
    )
    raw = write_raw_dataset(work / "raw", spec)
    output = work / "data"
    prepare_dataset(raw.root, output, val_ratio=1 / len(cities), verify=False, show_progress=False)
    counts = {name: len(items) for name, items in read_manifest(output)["splits"].items()}
    assert (counts["train"], counts["val"]) == (steps * batch, batch), counts
    return output


@dataclass
class StepRecord:
    """What the step timer saw: (epoch, step end time, loss) per step, and the model."""

    steps: list[tuple[int, float, float]] = field(default_factory=list)
    model: dict[str, Any] = field(default_factory=dict)
    hook: str = ""


def step_timer(record: StepRecord) -> Any:
    """A callback stamping each step's end. Keras turns a step's logs into Python numbers
    before it calls any batch-end callback, which waits for the step to finish."""
    from cityseg._tf import keras

    class StepTimer(keras.callbacks.Callback):
        epoch = 0

        def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
            record.model = dtype_report(self.model)

        def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            self.epoch = epoch

        def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
            loss = (logs or {}).get("loss")
            value = math.nan if loss is None else float(loss)
            record.steps.append((self.epoch, time.perf_counter(), value))

    return StepTimer()


@contextlib.contextmanager
def timing_hook(record: StepRecord) -> Iterator[dict[str, Any]]:
    """The keyword arguments that attach the step timer to train()."""
    record.hook = "train(callbacks=...)"
    yield {"callbacks": [step_timer(record)]}


def walk_layers(layer: Any) -> Iterator[Any]:
    for child in getattr(layer, "layers", []):
        yield child
        yield from walk_layers(child)


def dtype_report(model: Any) -> dict[str, Any]:
    """The policy as the built model holds it during fit, not as the config asked for it."""
    from cityseg._tf import keras

    last = model.layers[-1]
    return {
        "global_policy": keras.mixed_precision.global_policy().name,
        "layer_policies": dict(Counter(layer.dtype_policy.name for layer in walk_layers(model))),
        "last_layer": {
            "name": last.name,
            "policy": last.dtype_policy.name,
            "compute_dtype": str(last.compute_dtype),
        },
        "output_dtype": str(model.outputs[0].dtype),
        "optimizer": type(model.optimizer).__name__,
        "jit_compile": bool(model.jit_compile),
    }


def train_config(
    data: Path, work: Path, settings: Settings, replicas: int, mirrored: bool, xla: str
) -> Any:
    from cityseg.config import Precision, Strategy, TrainConfig

    return TrainConfig(
        data=data,
        project=work / "runs",
        name="mirrored" if mirrored else f"single-xla-{xla}",
        arch=settings.arch,
        backbone=settings.backbone,
        weights="none",
        height=settings.train_size[0],
        width=settings.train_size[1],
        epochs=EPOCHS,
        batch=settings.batch * replicas,
        steps_per_epoch=settings.steps,
        precision=Precision(settings.precision),
        strategy=Strategy.mirrored if mirrored else Strategy.auto,
        aug=settings.aug,
        patience=0,
    )


def train_once(
    section: dict[str, Any],
    data: Path,
    work: Path,
    settings: Settings,
    *,
    replicas: int = 1,
    mirrored: bool = False,
    xla: str | None = None,
) -> None:
    """One train() call with the step timer, its figures into `section`. If it fails,
    the section still gets the policy and the log, which say how far it got."""
    from cityseg._tf import GPUS, tf
    from cityseg.training.train import train

    xla = xla or settings.xla
    config = train_config(data, work, settings, replicas, mirrored, xla)
    record = StepRecord()
    lines: list[tuple[float, str]] = []
    reset_peak(tf, GPUS)
    started = time.perf_counter()
    try:
        with timing_hook(record) as hook, forced_xla(xla), timed_messages(lines, config.name):
            run = train(config, **hook)
    finally:
        section.update(policy=record.model, log=[message for _, message in lines], xla=xla)
        section["train_seconds"] = round(time.perf_counter() - started, 1)
    section.update(summarise(record, lines, run.run_dir, config, settings.warmup))
    section["peak_bytes"] = peak_bytes(tf, GPUS)


class _TimedLines(logging.Handler):
    def __init__(self, lines: list[tuple[float, str]], name: str) -> None:
        super().__init__(logging.INFO)
        self.lines, self.name = lines, name

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        self.lines.append((time.perf_counter(), message))
        progress(f"  {self.name}: {message}")


@contextlib.contextmanager
def timed_messages(lines: list[tuple[float, str]], name: str) -> Iterator[None]:
    """train()'s messages (the "cityseg" logger) into `lines` with the time each came,
    which `summarise` reads, and printed as progress."""
    logger = logging.getLogger("cityseg")
    handler, level = _TimedLines(lines, name), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@contextlib.contextmanager
def forced_xla(mode: str) -> Iterator[None]:
    """`auto` leaves train()'s compile alone (Keras then uses XLA on one GPU, not on a CPU
    or under a strategy); `on`/`off` force Keras' jit_compile, for the retry and for
    reproducing GPU behaviour on a CPU."""
    if mode == "auto":
        yield
        return
    from cityseg._tf import keras

    original = keras.Model.compile

    def compile(self: Any, *args: Any, **kwargs: Any) -> Any:
        return original(self, *args, **{**kwargs, "jit_compile": mode == "on"})

    with mock.patch.object(keras.Model, "compile", compile):
        yield


def summarise(
    record: StepRecord,
    lines: list[tuple[float, str]],
    run_dir: Path,
    config: Any,
    warmup: int,
) -> dict[str, Any]:
    from cityseg.deploy.parity import latency_summary

    intervals = step_intervals(record.steps, warmup)
    devices = next((DEVICES.match(message) for _, message in lines if DEVICES.match(message)), None)
    epoch_ends = [at for at, message in lines if message.startswith("epoch ")]
    epoch_loss = epoch_losses(run_dir / "metrics.csv")
    step_loss = [loss for _, _, loss in record.steps]
    losses = step_loss or epoch_loss
    steps = len(record.steps) // EPOCHS or config.steps_per_epoch
    out: dict[str, Any] = {
        "run_dir": str(run_dir),
        "arch": f"{config.arch}-{config.backbone}",
        "size": [config.height, config.width],
        "batch": config.batch,
        "replicas": int(devices[1]) if devices else None,
        "strategy": devices[2] if devices else None,
        "steps_per_epoch": steps,
        "epochs": EPOCHS,
        "timing": "steps" if intervals else "epoch",
        "step_timer": record.hook,
        "timed_steps": len(intervals),
        "images_per_second": None,
        "step_ms": None,
        "epoch_images_per_second": None,
        "losses": [round(x, 5) for x in losses],
        "epoch_losses": epoch_loss,
        "loss_finite": bool(losses) and all(math.isfinite(x) for x in losses),
    }
    if intervals:
        out["images_per_second"] = round(config.batch * len(intervals) / sum(intervals), 2)
        out["step_ms"] = latency_summary(intervals)
    if len(epoch_ends) >= 2:
        seconds = epoch_ends[1] - epoch_ends[0]
        out["epoch_images_per_second"] = round(config.batch * steps / seconds, 2)
        out["epoch_seconds"] = round(seconds, 3)
    return out


def step_intervals(steps: list[tuple[int, float, float]], warmup: int) -> list[float]:
    """Seconds from each step's end to the next one's inside an epoch, leaving out the
    first `warmup` steps of the first epoch; step 1 of an epoch has no interval, so the
    epoch boundary (checkpoints, validation) is never counted."""
    by_epoch: dict[int, list[float]] = {}
    for epoch, at, _ in steps:
        by_epoch.setdefault(epoch, []).append(at)
    intervals: list[float] = []
    for number, times in enumerate(by_epoch.values()):
        gaps = np.diff(times).tolist()  # gaps[i] is step i + 2
        intervals += gaps[max(warmup - 1, 0) :] if number == 0 else gaps
    return intervals


def epoch_losses(path: Path) -> list[float]:
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return [round(float(row["loss"]), 5) for row in csv.DictReader(handle) if row.get("loss")]


def input_rate(data: Path, settings: Settings) -> dict[str, Any]:
    """The training pipeline with nothing consuming it: one pass to warm, one timed."""
    from cityseg.training.pipeline import DataConfig, make_dataset

    height, width = settings.train_size
    config = DataConfig(height=height, width=width, batch_size=settings.batch, aug=settings.aug)
    dataset = make_dataset(data, "train", config, training=True)
    for _ in dataset:
        pass
    started, batches = time.perf_counter(), 0
    for _ in dataset:
        batches += 1
    seconds = time.perf_counter() - started
    return {
        "images_per_second": round(batches * settings.batch / seconds, 1),
        "images": batches * settings.batch,
    }


def mirrored_plan(gpus: list[Any], mode: str) -> tuple[int, str | None]:
    """(replicas, None) to run the mirrored stage, or (0, why it is skipped)."""
    if mode == "never":
        return 0, "--mirrored never"
    if len(gpus) > 1:
        return len(gpus), None
    if mode == "always":
        return 1, None
    visible = f"{len(gpus)} GPU" if gpus else "no GPU"
    return 0, (
        f"{visible} visible: MirroredStrategy needs two devices to mirror anything "
        "(--mirrored always runs it over one)"
    )


# ----------------------------------------------------------------------------- predict


def predict_stage(section: dict[str, Any], bundle: Path, settings: Settings, work: Path) -> None:
    """Each model is opened once and timed at every batch size with `cityseg benchmark`'s
    own `time_model` (warm-up calls, then timed calls), on its input frame."""
    from cityseg._tf import GPUS, tf
    from cityseg.deploy.benchmark import describe_compute, time_model
    from cityseg.deploy.export import export_model

    size = settings.predict_size
    section.update(
        measured=f"the trained bundle rebuilt with a {size[0]}x{size[1]} input: the model "
        "alone, one batch per call, no resize or PNG work",
        size=list(size),
        tensorrt=tensorrt_status(tf),
    )
    started = time.perf_counter()
    exported = export_model(bundle, "savedmodel", work / "savedmodel", size=size, parity=0)
    section["export_seconds"] = round(time.perf_counter() - started, 1)
    models = predict_models(bundle, exported[0].folder, size)
    section["keras_compute"] = describe_compute(models["keras float32"][1], *size).to_dict()
    section["results"] = []
    for batch in settings.predict_batch:
        inputs = frame(size, batch)
        for label, (policy, loaded) in models.items():
            reset_peak(tf, GPUS)
            row = time_model(loaded, inputs, settings.runs).to_dict()
            row.update(policy=policy, batch=batch, peak_bytes=peak_bytes(tf, GPUS))
            section["results"].append(row)
            progress(f"  predict {label} batch {batch}: {row['images_per_second']} img/s")


def predict_models(bundle: Path, exported: Path, size: tuple[int, int]) -> dict[str, Any]:
    """The Keras bundle as `cityseg predict` builds it (float32), its SavedModel, and the
    Keras model built under mixed_float16 (its softmax stays float32)."""
    from cityseg.config import Precision
    from cityseg.inference.runtimes import open_model
    from cityseg.training.train import precision_policy

    keras_model = open_model(bundle, size=size)
    saved = open_model(exported)
    with precision_policy(Precision.mixed, True):
        mixed = open_model(bundle, size=size)
    return {
        "keras float32": ("float32", keras_model),
        "savedmodel float32": ("float32", saved),
        "keras mixed_float16": ("mixed_float16", mixed),
    }


def frame(size: tuple[int, int], batch: int) -> np.ndarray:
    """`cityseg benchmark`'s input: one synthetic street scene, repeated `batch` times."""
    from cityseg.dataset.synthetic import draw_scene

    scene = draw_scene(np.random.default_rng(0), *size)
    return np.repeat(scene.image[None].astype(np.float32), batch, axis=0)


def tensorrt_status(tf: Any) -> dict[str, Any]:
    built = bool(tf.sysconfig.get_build_info().get("is_tensorrt_build"))
    note = "cityseg exports no TensorRT engine; the SavedModel row is the deployable GPU figure"
    return {"built_into_tensorflow": built, "note": note}


# ----------------------------------------------------------------------------- the run


def run_stages(report: Report, settings: Settings, work: Path, gpus: list[Any]) -> None:
    """Mirrored comes last: on several GPUs it is the stage most likely to hang."""
    replicas, skipped = mirrored_plan(gpus, settings.mirrored)
    with stage(report, "data") as section:
        per_batch = settings.batch * max(1, replicas)
        data = write_dataset(work, settings.train_size, settings.steps, per_batch)
        section.update(
            train_images=settings.steps * per_batch,
            val_images=per_batch,
            size=list(settings.train_size),
        )
    if "error" in report.data["data"]:
        return
    with stage(report, "train") as section:
        train_once(section, data, work, settings)
    if xla_retry_needed(report.data["train"]):
        with stage(report, "train_xla_off") as section:
            train_once(section, data, work, settings, xla="off")
    with stage(report, "input") as section:
        section.update(input_rate(data, settings))
    with stage(report, "predict") as section:
        predict_stage(section, trained_bundle(report.data), settings, work)
    with stage(report, "mirrored") as section:
        if skipped:
            section["skipped"] = skipped
        else:
            train_once(section, data, work, settings, replicas=replicas, mirrored=True)


def xla_retry_needed(train: dict[str, Any]) -> bool:
    """train() failed with XLA on (Keras' choice on one GPU): then the same run without
    XLA still gives the figures, and the failure stays in the report. Mixed precision
    under XLA fails on bilinear upsampling's gradient (keras-team/keras#20931), which
    FPN's last layer has; reproduced on a CPU with --xla on."""
    return "error" in train and bool((train.get("policy") or {}).get("jit_compile"))


def trained_bundle(data: dict[str, Any]) -> Path:
    for name in ("train", "train_xla_off"):
        part = data.get(name, {})
        bundle = Path(part.get("run_dir", "-")) / "last"
        if "error" not in part and (bundle / "cityseg.json").is_file():
            return bundle
    raise RuntimeError("no trained bundle to predict with: the train stage failed")


def evaluate_checks(data: dict[str, Any], settings: Settings, gpus: list[Any]) -> dict[str, bool]:
    """What the run is for: each must hold for exit status 0. The figures checked are the
    run that trained (the XLA-off retry when train() itself failed, which already fails
    every_stage_ran)."""
    train = data.get("train", {})
    if "error" in train and "train_xla_off" in data:
        train = data["train_xla_off"]
    policy = train.get("policy") or {}
    mixed = settings.precision == "mixed" or (settings.precision == "auto" and bool(gpus))
    expected = "mixed_float16" if mixed else "float32"
    last = policy.get("last_layer") or {}
    checks = {
        "every_stage_ran": not any(
            "error" in part for part in data.values() if isinstance(part, dict)
        ),
        "policy_during_training": policy.get("global_policy") == expected,
        "layers_use_policy": expected in (policy.get("layer_policies") or {}),
        "last_activation_float32": last.get("compute_dtype") == "float32"
        and policy.get("output_dtype") == "float32",
        "loss_finite": bool(train.get("loss_finite")),
        "train_images_per_second_positive": (
            train.get("images_per_second") or train.get("epoch_images_per_second") or 0
        )
        > 0,
    }
    if mixed:
        checks["loss_scale_optimizer"] = policy.get("optimizer") == "LossScaleOptimizer"
    mirrored = data.get("mirrored", {})
    if mirrored and "skipped" not in mirrored:
        checks["mirrored_loss_finite"] = bool(mirrored.get("loss_finite"))
    return checks


def gib(value: int | None) -> str:
    return "n/a (CPU)" if value is None else f"{value / 2**30:.2f} GiB"


def rate(figures: dict[str, Any]) -> str:
    step = figures.get("step_ms") or {}
    text = f"{figures.get('images_per_second')} img/s"
    if step:
        text += f" (step p50 {step['p50']:.1f} ms, {figures.get('timed_steps')} timed steps)"
    return text


def train_rows(name: str, figures: dict[str, Any]) -> list[tuple[str, str]]:
    if "size" not in figures:  # the stage did not run, failed or was skipped
        if "error" not in figures and "skipped" not in figures:
            return [(name, "not run")]
        reason = figures.get("skipped")
        return [(name, f"skipped: {reason}" if reason else f"FAILED: {figures['error']}")]
    policy = figures.get("policy") or {}
    last = policy.get("last_layer") or {}
    height, width = figures["size"]
    label = f"{name} {figures['arch']} {height}x{width} batch {figures['batch']}"
    if figures.get("strategy") != "_DefaultDistributionStrategy":
        label += f" ({figures.get('strategy')}, {figures.get('replicas')} replicas)"
    return [
        (label, rate(figures)),
        (
            f"{name}: whole epoch 2 (with train()'s saves)",
            f"{figures['epoch_images_per_second']} img/s",
        ),
        (
            f"{name}: policy during fit",
            f"{policy.get('global_policy')}, {policy.get('optimizer')}, "
            f"XLA {policy.get('jit_compile')}",
        ),
        (
            f"{name}: last layer",
            f"{last.get('name')} {last.get('compute_dtype')}, output {policy.get('output_dtype')}",
        ),
        (
            f"{name}: loss",
            f"{'finite' if figures['loss_finite'] else 'NOT FINITE'} {figures['losses'][-1:]}",
        ),
        (f"{name}: peak GPU memory", gib(figures.get("peak_bytes"))),
    ]


def predict_rows(figures: dict[str, Any]) -> list[tuple[str, str]]:
    """The rows it reached, then its error if it failed part-way."""
    size = "x".join(str(side) for side in figures.get("size", []))
    rows = []
    for row in figures.get("results", []):
        label = f"predict {row['format']} {row['policy']} {size} batch {row['batch']}"
        value = f"{row['images_per_second']} img/s (p50 {row['latency_ms']['p50']:.1f} ms/call)"
        rows.append((label, value))
    if "error" in figures:
        rows.append(("predict", f"FAILED: {figures['error']}"))
    return rows or [("predict", "not run")]


def print_table(data: dict[str, Any], checks: dict[str, bool]) -> None:
    device = data["environment"]["device"]
    versions = data["environment"]["versions"]
    print(
        f"\nGPU check on {device['name']} ({device['type']} x{max(device['count'], 1)}), "
        f"TensorFlow {versions['tensorflow']}, Keras {versions['keras']}"
    )
    rows = train_rows("train", data.get("train", {}))
    if "train_xla_off" in data:
        rows += train_rows("train_xla_off", data["train_xla_off"])
    if "images_per_second" in data.get("input", {}):
        rows.append(("input pipeline alone", f"{data['input']['images_per_second']} img/s"))
    rows += predict_rows(data.get("predict", {}))
    rows += train_rows("mirrored", data.get("mirrored", {}))
    rows += [(f"check {name}", "ok" if held else "FAILED") for name, held in checks.items()]
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label:<{width}}  {value}")


def size_option(text: str) -> tuple[int, int]:
    from cityseg.errors import CitysegError

    try:
        return parse_size(text)
    except CitysegError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, Settings]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_out = Path(__file__).with_name("gpu.json")
    parser.add_argument("--out", default=str(default_out), help="JSON report; '-' for stdout")
    parser.add_argument("--tiny", action="store_true", help="CPU smoke test (FPN-ResNet18, 32x64)")
    parser.add_argument("--allow-cpu", action="store_true", help="run the full sizes on a CPU")
    parser.add_argument("--work", type=Path, help="folder for data and runs (default: temp)")
    parser.add_argument("--arch")
    parser.add_argument("--backbone")
    parser.add_argument("--train-size", type=size_option, help="HxW (512x1024)")
    parser.add_argument("--batch", type=int, help="per replica (8)")
    parser.add_argument("--steps", type=int, help="steps per epoch, 2 epochs (30)")
    parser.add_argument("--warmup", type=int, help="untimed first steps (5)")
    parser.add_argument("--precision", choices=("mixed", "float32", "auto"))
    parser.add_argument("--aug", help="augmentation preset (none)")
    parser.add_argument("--predict-size", type=size_option, help="HxW (1024x2048)")
    parser.add_argument("--predict-batch", type=int, nargs="+", help="batch sizes (1 8)")
    parser.add_argument("--runs", type=int, help="timed predict calls per row (20)")
    parser.add_argument("--mirrored", choices=("auto", "always", "never"))
    parser.add_argument("--xla", choices=("auto", "on", "off"), help="Keras jit_compile (auto)")
    args = parser.parse_args(argv)
    chosen = {
        item.name: getattr(args, item.name)
        for item in dataclasses.fields(Settings)
        if getattr(args, item.name) is not None
    }
    if "predict_batch" in chosen:
        chosen["predict_batch"] = tuple(chosen["predict_batch"])
    settings = dataclasses.replace(TINY if args.tiny else Settings(), **chosen)
    if settings.steps < 2 or not 0 <= settings.warmup < settings.steps or settings.batch < 1:
        parser.error("need --steps >= 2, 0 <= --warmup < --steps and --batch >= 1")
    return args, settings


def check_model(settings: Settings) -> str | None:
    """An unknown backbone or a size the model cannot take, before any stage spends time."""
    from cityseg.errors import CitysegError
    from cityseg.training.models import check_size

    try:
        for height, width in (settings.train_size, settings.predict_size):
            check_size(settings.arch, settings.backbone, height, width)
    except CitysegError as exc:
        return str(exc)
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args, settings = parse_args(argv)
    # sm_90 runs TensorFlow's kernels JIT-compiled from PTX; a larger driver cache keeps
    # them for the next run. Must be set before TensorFlow loads CUDA.
    os.environ.setdefault("CUDA_CACHE_MAXSIZE", str(4 * 2**30))
    from cityseg._tf import GPUS, tf

    if not GPUS and not (args.tiny or args.allow_cpu):
        print("no GPU found by TensorFlow; use --tiny for a CPU smoke test, or --allow-cpu")
        return 1
    problem = check_model(settings)
    if problem:
        print(problem)
        return 2
    out = None if args.out == "-" else Path(args.out)
    report = Report(out, settings, argv)
    report.data["environment"] = environment(tf, GPUS)
    report.save()
    progress(f"device: {report.data['environment']['device']['name']}; settings {settings}")
    with contextlib.ExitStack() as stack:
        work = args.work or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        run_stages(report, settings, work, GPUS)
    checks = evaluate_checks(report.data, settings, GPUS)
    report.data["checks"] = checks
    report.data["status"] = "ok" if all(checks.values()) else "failed"
    report.save()
    print_table(report.data, checks)
    if out is None:
        print(json.dumps(report.data, indent=2))
    else:
        print(f"report: {out}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
