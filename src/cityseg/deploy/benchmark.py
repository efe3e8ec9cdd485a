"""`cityseg benchmark`: how fast each runtime runs a model on this machine, side by side.

Deciding between Keras, TFLite and ONNX (and int8 or not) is a latency question on the
target machine, so the numbers come from the same process, the same input and the same
protocol for every runtime: a few warm-up calls (tracing, allocation, XNNPACK packing
are not latency), then timed calls of one batch each. Latency is per call (the model
alone, no resizing or PNG work); throughput is images per second over the timed calls.
FLOPs and parameters describe the Keras model, and so every export of it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cityseg.config import BENCHMARK
from cityseg.configio import json_record
from cityseg.deploy.parity import Latency
from cityseg.errors import UsageError
from cityseg.inference.bundle import CARD_NAME, card_input_size, read_card
from cityseg.inference.runtimes import KERAS, LoadedModel, cpu_threads, model_format, open_model

logger = logging.getLogger(__name__)
WARMUP_CALLS = 3


@dataclass(frozen=True)
class BenchmarkRow:
    """One runtime's timing: latency per call and throughput."""

    path: Path
    format: str
    runtime: str
    bytes: int
    latency_ms: Latency
    images_per_second: float

    def to_dict(self) -> dict[str, Any]:
        """`benchmark --json`'s row: the path is its "model"."""
        return {"model": str(self.path), **json_record(self, exclude={"path"})}


@dataclass(frozen=True)
class ComputeCost:
    """What the Keras model computes: parameters and GFLOPs of one image."""

    parameters: int
    gflops: float

    def to_dict(self) -> dict[str, Any]:
        return json_record(self)


@dataclass(frozen=True)
class BenchmarkReport:
    """Every runtime timed at one input size; `to_dict()` is what `--json` writes."""

    input_size: tuple[int, int]
    batch: int
    runs: int
    threads: int
    keras: ComputeCost | None
    """None when no Keras bundle was timed (exports only)."""
    results: list[BenchmarkRow]

    def to_dict(self) -> dict[str, Any]:
        rows = [row.to_dict() for row in self.results]
        return {**json_record(self, exclude={"results"}), "results": rows}


def time_models(
    models: list[Path],
    *,
    size: tuple[int, int] | None = None,
    runs: int = BENCHMARK.runs,
    batch: int = BENCHMARK.batch,
    include_exports: bool = BENCHMARK.include_exports,
) -> BenchmarkReport:
    """Time every model in `models` (and, for bundles, their exports) at one input size."""
    if runs < 1 or batch < 1:
        raise UsageError("--runs and --batch must be at least 1")
    paths = _with_exports(models) if include_exports else list(models)
    first = open_model(paths[0], size=size)
    height, width = card_input_size(first.card)
    inputs = sample_inputs(batch, height, width)
    rows: list[BenchmarkRow] = []
    keras_model: LoadedModel | None = None
    for path in paths:
        _, card = read_card(path)
        exported_at = card_input_size(card)
        if model_format(card) != KERAS and exported_at != (height, width):
            logger.info(f"skipped {path}: exported at {exported_at}, not {height}x{width}")
            continue
        loaded = first if path == paths[0] else open_model(path, size=(height, width))
        if loaded.format == KERAS and keras_model is None:
            keras_model = loaded
        logger.info(f"timing {loaded.format} ({path})")
        rows.append(time_model(loaded, inputs, runs))
    return BenchmarkReport(
        input_size=(height, width),
        batch=batch,
        runs=runs,
        threads=cpu_threads(),
        keras=describe_compute(keras_model, height, width) if keras_model else None,
        results=rows,
    )


def time_model(model: LoadedModel, inputs: np.ndarray, runs: int) -> BenchmarkRow:
    for _ in range(WARMUP_CALLS):
        model.runtime(inputs)
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        model.runtime(inputs)
        seconds.append(time.perf_counter() - start)
    return BenchmarkRow(
        path=model.path,
        format=model.format,
        runtime=model.runtime.name,
        bytes=int(model.card["weights"]["bytes"]),
        latency_ms=Latency.of(seconds),
        images_per_second=round(len(inputs) * runs / sum(seconds), 2),
    )


def describe_compute(model: LoadedModel, height: int, width: int) -> ComputeCost:
    """Parameters, and FLOPs of one image as TensorFlow's profiler counts them (a
    multiply-add is two), from the model's frozen graph."""
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2_as_graph,
    )

    from cityseg._tf import quiet, tf

    keras_model = model.runtime.model  # type: ignore[attr-defined]
    function = tf.function(lambda x: keras_model(x, training=False)).get_concrete_function(
        tf.TensorSpec((1, height, width, 3), tf.float32)
    )
    with quiet():
        frozen, _ = convert_variables_to_constants_v2_as_graph(function)
        options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
        options["output"] = "none"
        profile = tf.compat.v1.profiler.profile(
            graph=frozen.graph, run_meta=tf.compat.v1.RunMetadata(), cmd="op", options=options
        )
    return ComputeCost(
        parameters=int(keras_model.count_params()),
        gflops=round(profile.total_float_ops / 1e9, 3),
    )


def _with_exports(models: list[Path]) -> list[Path]:
    """Each bundle followed by the exports made from it (`<run>/export/*`)."""
    paths: list[Path] = []
    for model in models:
        folder, card = read_card(model)
        paths.append(model)
        if model_format(card) == KERAS:
            exports = folder.parent / "export"
            paths.extend(sorted(p.parent for p in exports.glob(f"*/{CARD_NAME}")))
    return list(dict.fromkeys(paths))


def sample_inputs(batch: int, height: int, width: int) -> np.ndarray:
    """A street-like synthetic frame: content does not change the speed of these models,
    but a real-looking picture keeps int8 activations in their calibrated range."""
    from cityseg.dataset.synthetic import draw_scene

    scene = draw_scene(np.random.default_rng(0), height, width)
    return np.repeat(scene.image[None].astype(np.float32), batch, axis=0)
