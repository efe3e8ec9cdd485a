"""One interface over the ways a cityseg model can run: Keras, SavedModel, TFLite, ONNX.

Predict, evaluate, serve, export's parity report and `cityseg benchmark` all call a
`Runtime` with a batch of RGB float32 images (0..255, at the model's input size) and get
softmax probabilities back, so the pre- and post-processing around the model is one
piece of code whichever engine runs it, and an exported model is judged on exactly the
path users will run.

A model is a folder with `cityseg.json`: a Keras bundle (the card names a weights file)
or an export (the card's `export` record names the artefact and its format). `--model`
may point at the folder, its card or the artefact itself (`model.tflite`).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from cityseg.errors import CitysegError, DataError
from cityseg.inference.bundle import card_input_size, read_card, verified_weights

KERAS = "keras"
SAVEDMODEL = "savedmodel"
TFLITE_FORMATS = ("tflite", "tflite-fp16", "tflite-int8")
ONNX = "onnx"
EXPORT_FORMATS = (SAVEDMODEL, *TFLITE_FORMATS, ONNX)
ONNX_EXTRA = "pip install 'cityseg[onnx]'"


class Runtime(Protocol):
    """Runs a model: (N, H, W, 3) float32 RGB 0..255 -> (N, H, W, C) float32 probabilities."""

    @property
    def name(self) -> str: ...

    def __call__(self, batch: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class LoadedModel:
    path: Path
    card: dict[str, Any]
    runtime: Runtime

    @property
    def format(self) -> str:
        return model_format(self.card)


def model_format(card: dict[str, Any]) -> str:
    export = card.get("export")
    return str(export.get("format")) if isinstance(export, dict) else KERAS


def cpu_threads() -> int:
    """The cores this process may use (a container's CPU set, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class KerasRuntime:
    name = KERAS

    def __init__(self, model: Any) -> None:
        from cityseg._tf import tf

        self.model = model
        self._call = tf.function(lambda x: model(x, training=False), reduce_retracing=True)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self._call(batch), dtype=np.float32)


class SavedModelRuntime:
    name = SAVEDMODEL

    def __init__(self, path: Path) -> None:
        from cityseg._tf import tf

        try:
            self._loaded = tf.saved_model.load(str(path))
        except (OSError, ValueError) as exc:
            raise DataError(f"{path} is not a readable SavedModel ({exc})") from exc
        self._serve = self._loaded.signatures["serving_default"]
        self._input = next(iter(self._serve.structured_input_signature[1]))

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        from cityseg._tf import tf

        outputs = self._serve(**{self._input: tf.constant(batch, tf.float32)})
        return np.asarray(next(iter(outputs.values())), dtype=np.float32)


class TFLiteRuntime:
    """TensorFlow's bundled interpreter with XNNPACK, one image per invoke.

    Converted models have a fixed batch of one; invoking per image avoids re-allocating
    tensors whenever the batch size changes. An int8 model takes uint8 pixels (its input
    scale is ~1, as pixels are 0..255) and its output is dequantised here.
    """

    name = "tflite"

    def __init__(self, path: Path, threads: int | None = None) -> None:
        from cityseg._tf import quiet, tf

        with warnings.catch_warnings(), quiet():  # "deprecated, use ai_edge_litert": shipped
            warnings.simplefilter("ignore")
            try:
                self._interpreter = tf.lite.Interpreter(
                    model_path=str(path), num_threads=threads or cpu_threads()
                )
                self._interpreter.allocate_tensors()
            except (ValueError, RuntimeError) as exc:
                raise DataError(f"{path} is not a readable TFLite model ({exc})") from exc
        self._input = self._interpreter.get_input_details()[0]
        self._output = self._interpreter.get_output_details()[0]

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return np.stack([self._invoke(image) for image in batch])

    def _invoke(self, image: np.ndarray) -> np.ndarray:
        dtype = self._input["dtype"]
        scale, zero = self._input["quantization"]
        if dtype != np.float32:
            info = np.iinfo(dtype)
            image = np.clip(np.round(image / scale + zero), info.min, info.max)
        self._interpreter.set_tensor(self._input["index"], image[None].astype(dtype))
        self._interpreter.invoke()
        result = self._interpreter.get_tensor(self._output["index"])[0]
        if result.dtype != np.float32:
            out_scale, out_zero = self._output["quantization"]
            result = (result.astype(np.float32) - out_zero) * out_scale
        return np.asarray(result, dtype=np.float32)


class OnnxRuntime:
    name = ONNX

    def __init__(self, path: Path) -> None:
        ort = import_onnxruntime()
        try:
            self._session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise DataError(f"{path} is not a readable ONNX model ({exc})") from exc
        self._input = self._session.get_inputs()[0].name

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        result = self._session.run(None, {self._input: batch.astype(np.float32)})[0]
        return np.asarray(result, dtype=np.float32)


def import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise CitysegError(f"ONNX models need onnxruntime: {ONNX_EXTRA}") from exc
    return onnxruntime


def open_model(path: Path, *, size: tuple[int, int] | None = None) -> LoadedModel:
    """The model at `path` (bundle or export folder, its card, or the artefact itself).

    `size` rebuilds a Keras bundle at another input size (its weights do not depend on
    it); an export has its size fixed at export time, so asking for another is an error.
    """
    folder, card = read_card(path)
    fmt = model_format(card)
    if fmt == KERAS:
        return _open_bundle(folder, card, size)
    if fmt not in EXPORT_FORMATS:
        raise DataError(f"{folder / 'cityseg.json'} names an unknown export format {fmt!r}")
    if size is not None and size != card_input_size(card):
        raise CitysegError(
            f"{folder} was exported at {card['height']}x{card['width']}; re-export it with "
            f"`cityseg export --size {size[0]}x{size[1]}` to run at that size"
        )
    artefact = verified_weights(folder, card)
    runtime: Runtime
    if fmt == SAVEDMODEL:
        runtime = SavedModelRuntime(artefact)
    elif fmt == ONNX:
        runtime = OnnxRuntime(artefact)
    else:
        runtime = TFLiteRuntime(artefact)
    return LoadedModel(folder, card, runtime)


def _open_bundle(folder: Path, card: dict[str, Any], size: tuple[int, int] | None) -> LoadedModel:
    from cityseg.inference.bundle import load_bundle
    from cityseg.training.models import build_from_card

    if size is not None:
        card = {**card, "height": size[0], "width": size[1]}
    bundle = load_bundle(folder, lambda _: build_from_card(card))
    return LoadedModel(folder, card, KerasRuntime(bundle.model))
