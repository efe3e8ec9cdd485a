"""`cityseg export`: a bundle as a SavedModel, TFLite (fp32, fp16, int8) or ONNX model.

An export is a model folder like a bundle: `cityseg.json` (the bundle's card, with the
export's format, input size and the artefact's SHA-256) beside the artefact, so
`predict`, `evaluate` and `serve` take it as `--model` with no other flag, plus
`export.json`, the record of how it was made and how far it strays from the Keras model
(`cityseg.deploy.parity`). Every format starts from the same rebuilt Keras model, at the
bundle's input size or `--size`; the TFLite formats are converted from a SavedModel
(Keras 3 models convert reliably that way), ONNX through tf2onnx.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cityseg import __version__
from cityseg.config import DEFAULT_DATA, EXPORT
from cityseg.deploy.parity import ParityReport
from cityseg.errors import CitysegError, DataError, UsageError
from cityseg.fsutil import atomic_write_json, read_folder_record
from cityseg.inference.bundle import (
    CARD_NAME,
    card_input_size,
    read_card,
    write_model_folder,
)
from cityseg.inference.runtimes import (
    EXPORT_FORMATS,
    KERAS,
    ONNX,
    ONNX_EXTRA,
    SAVEDMODEL,
    LoadedModel,
    model_format,
    open_model,
)

if TYPE_CHECKING:
    from cityseg.deploy.parity import Reference

logger = logging.getLogger(__name__)
EXPORT_NAME = "export.json"
ARTEFACT_NAMES = {SAVEDMODEL: "saved_model", ONNX: "model.onnx"}
ONNX_OPSET = 17


@dataclass(frozen=True)
class ExportReport:
    """One export: where it is, what it cost in bytes, and its parity with the Keras model.

    `to_dict()` is export.json, key for key; `ExportReport.read(folder)` reads one back.
    """

    folder: Path
    format: str
    bytes: int
    """The artefact's size on disk (a SavedModel: every file in it)."""
    artefact: str
    """The artefact's name in `folder` (model.tflite, model.onnx, saved_model)."""
    input_size: tuple[int, int]
    keras_weights_bytes: int
    size_ratio: float
    """`bytes` over the Keras weights' bytes."""
    bundle: Path
    """The Keras bundle it was exported from."""
    weights_sha256: str
    """The SHA-256 of that bundle's weights, as its card records it."""
    calibration_images: int | None
    """Training images int8 calibration saw; None for the float formats."""
    seconds: float
    parity: ParityReport | None
    """None when exported with `parity=0`."""
    cityseg_version: str = __version__

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "artefact": self.artefact,
            "bytes": self.bytes,
            "input_size": list(self.input_size),
            "keras_weights_bytes": self.keras_weights_bytes,
            "size_ratio": self.size_ratio,
            "source": {"bundle": str(self.bundle), "weights_sha256": self.weights_sha256},
            "calibration": (
                None
                if self.calibration_images is None
                else {"split": "train", "images": self.calibration_images}
            ),
            "seconds": self.seconds,
            "cityseg_version": self.cityseg_version,
            "parity": None if self.parity is None else self.parity.to_dict(),
        }

    @classmethod
    def read(cls, folder: str | Path) -> ExportReport:
        """The report of an export folder, from its export.json."""
        folder = Path(folder)
        record = read_folder_record(folder, EXPORT_NAME, "an export folder")
        where = f"{folder / EXPORT_NAME}: parity"
        try:
            calibration, parity = record["calibration"], record["parity"]
            return cls(
                folder=folder,
                format=record["format"],
                bytes=int(record["bytes"]),
                artefact=record["artefact"],
                input_size=(int(record["input_size"][0]), int(record["input_size"][1])),
                keras_weights_bytes=int(record["keras_weights_bytes"]),
                size_ratio=float(record["size_ratio"]),
                bundle=Path(record["source"]["bundle"]),
                weights_sha256=record["source"]["weights_sha256"],
                calibration_images=None if calibration is None else int(calibration["images"]),
                seconds=float(record["seconds"]),
                parity=None if parity is None else ParityReport.from_dict(parity, where),
                cityseg_version=record["cityseg_version"],
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(f"cannot read {folder / EXPORT_NAME}: {exc}") from exc


def export_model(
    model: Path,
    formats: str | Sequence[str],
    output: Path | None = None,
    *,
    data: Path = DEFAULT_DATA,
    size: tuple[int, int] | None = None,
    calib: int = EXPORT.calib,
    parity: int = EXPORT.parity,
) -> list[ExportReport]:
    """Export the bundle at `model` to each of `formats`, each with its parity report.

    One call builds the Keras model, its SavedModel and its reference predictions once
    for all formats. `output` is the export folder for a single format, and the parent of
    one folder per format for several; by default the run's `export/`.
    """
    formats = [formats] if isinstance(formats, str) else list(dict.fromkeys(formats))
    for fmt in formats:
        if fmt not in EXPORT_FORMATS:
            raise UsageError(f"unknown format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    if not formats or calib < 1 or parity < 0:
        raise UsageError("give a --format; --calib must be at least 1, --parity at least 0")
    bundle_folder, card = read_card(model)
    if model_format(card) != KERAS:
        raise UsageError(
            f"{bundle_folder} is already an export ({model_format(card)}); export from the "
            "Keras bundle it came from"
        )
    height, width = size or card_input_size(card)
    _check_size(card, height, width)
    folders = {
        fmt: _output_folder(output, bundle_folder, fmt, formats, (height, width), card)
        for fmt in formats
    }
    for folder in folders.values():
        _check_output(folder)
    entries = _dataset_entries(data, card, "tflite-int8" in formats, parity)

    keras_model = open_model(bundle_folder, size=(height, width))
    reference = None
    if parity > 0:
        from cityseg.deploy.parity import evenly_spaced, run_reference

        chosen = evenly_spaced(entries["val"], parity)
        logger.info(f"parity reference: Keras on {len(chosen)} val images")
        reference = run_reference(keras_model, data, chosen)
    calibration = (
        _calibration_images(data, entries["train"], calib, (height, width))
        if "tflite-int8" in formats
        else None
    )
    with tempfile.TemporaryDirectory() as scratch:
        converter = _Converter(keras_model, Path(scratch), calibration)
        return [
            _export_one(keras_model, card, bundle_folder, fmt, folders[fmt], converter, reference)
            for fmt in formats
        ]


def _export_one(
    keras_model: LoadedModel,
    card: dict[str, Any],
    bundle_folder: Path,
    fmt: str,
    folder: Path,
    converter: _Converter,
    reference: Reference | None,
) -> ExportReport:
    height, width = card_input_size(keras_model.card)
    started = time.perf_counter()
    logger.info(f"exporting {bundle_folder} as {fmt} at {height}x{width}")
    source = {"bundle": str(bundle_folder), "weights_sha256": card["weights"]["sha256"]}
    export_card = {
        **{k: v for k, v in card.items() if k not in ("weights", "format_version")},
        "height": height,
        "width": width,
        "export": {
            "format": fmt,
            "from": source,
            "input_dtype": "uint8" if fmt == "tflite-int8" else "float32",
        },
    }
    write_model_folder(folder, export_card, lambda staging: converter.write(fmt, staging))
    exported = open_model(folder)
    artefact_bytes = int(exported.card["weights"]["bytes"])
    calibrated = fmt == "tflite-int8" and converter.calibration is not None
    seconds = round(time.perf_counter() - started, 1)  # the export alone, not its parity
    parity = None
    if reference is not None:
        from cityseg.deploy.parity import TOLERANCES, measure_parity

        logger.info(f"parity: {fmt} against Keras on {len(reference.masks)} val images")
        parity = measure_parity(reference, exported, TOLERANCES[fmt])
    report = ExportReport(
        folder=folder,
        format=fmt,
        bytes=artefact_bytes,
        artefact=exported.card["weights"]["file"],
        input_size=(height, width),
        keras_weights_bytes=int(card["weights"]["bytes"]),
        size_ratio=round(artefact_bytes / int(card["weights"]["bytes"]), 4),
        bundle=bundle_folder,
        weights_sha256=card["weights"]["sha256"],
        calibration_images=len(converter.calibration or []) if calibrated else None,
        seconds=seconds,
        parity=parity,
    )
    atomic_write_json(folder / EXPORT_NAME, report.to_dict())
    return report


def _output_folder(
    output: Path | None,
    bundle_folder: Path,
    fmt: str,
    formats: list[str],
    size: tuple[int, int],
    card: dict[str, Any],
) -> Path:
    """`runs/train/<run>/export/<format>[-HxW]`: exports stay with the run they came from."""
    name = fmt
    if size != card_input_size(card):
        name += f"-{size[0]}x{size[1]}"
    if output is None:
        return bundle_folder.parent / "export" / name
    return output if len(formats) == 1 else output / name


def _check_size(card: dict[str, Any], height: int, width: int) -> None:
    from cityseg.training.models import check_size

    check_size(str(card["arch"]), str(card.get("backbone") or ""), height, width)


def _check_output(folder: Path) -> None:
    """Replace an earlier export, never a folder of something else."""
    if not folder.exists():
        return
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
        return
    card = folder / CARD_NAME
    if folder.is_dir() and card.is_file():
        with contextlib.suppress(CitysegError):
            if model_format(read_card(folder)[1]) != KERAS:
                return
    raise UsageError(f"{folder} exists and is not a cityseg export; choose another -o")


def _dataset_entries(
    data: Path, card: dict[str, Any], int8: bool, parity: int
) -> dict[str, list[dict[str, Any]]]:
    """The train (calibration) and val (parity) entries, with masks of the model's scheme."""
    from cityseg.dataset.entries import split_entries
    from cityseg.dataset.manifest import is_dataset

    if not int8 and parity == 0:
        return {}
    if not is_dataset(data):
        needs = "int8 calibration" if int8 else "the parity report"
        hint = "" if int8 else ", or --parity 0 to skip the report"
        raise DataError(f"{needs} needs a prepared dataset; none at {data} (pass --data{hint})")
    scheme = str(card.get("scheme") or "categories")
    entries = {}
    if int8:
        entries["train"] = split_entries(data, "train", scheme)
    if parity > 0:
        entries["val"] = split_entries(data, "val", scheme)
    return entries


def _calibration_images(
    root: Path, entries: list[dict[str, Any]], count: int, size: tuple[int, int]
) -> list[np.ndarray]:
    """Training images at the export size, as the model sees them (float32 0..255)."""
    from cityseg.deploy.parity import evenly_spaced
    from cityseg.images import read_image, resize_image

    return [
        resize_image(read_image(root / entry["image"]), *size).astype(np.float32)
        for entry in evenly_spaced(entries, count)
    ]


class _Converter:
    """Writes each format from one Keras model, tracing it to a SavedModel only once."""

    def __init__(
        self, model: LoadedModel, scratch: Path, calibration: list[np.ndarray] | None
    ) -> None:
        self.keras_model = model.runtime.model  # type: ignore[attr-defined]
        self.height, self.width = card_input_size(model.card)
        self.scratch = scratch
        self.calibration = calibration
        self._saved: Path | None = None
        self._tflite: Any = None

    def saved_model(self) -> Path:
        from cityseg._tf import quiet

        if self._saved is None:
            saved = self.scratch / "saved_model"
            with quiet():
                self.keras_model.export(str(saved), verbose=False)
            self._saved = saved
        return self._saved

    def tflite_converter(self) -> Any:
        """One TFLite converter for every TFLite format: `from_saved_model` loads the whole
        SavedModel (1.5-3 s) only to read its signatures, and `_tflite_bytes` sets every
        option it uses before each conversion (the artefacts are byte-identical)."""
        from cityseg._tf import tf

        if self._tflite is None:
            self._tflite = tf.lite.TFLiteConverter.from_saved_model(str(self.saved_model()))
        return self._tflite

    def write(self, fmt: str, staging: Path) -> str:
        """Write `fmt`'s artefact into `staging`; returns its name."""
        from cityseg._tf import quiet

        if fmt == ONNX:
            return _write_onnx(self.keras_model, staging, self.height, self.width)
        if fmt == SAVEDMODEL:
            shutil.copytree(self.saved_model(), staging / ARTEFACT_NAMES[SAVEDMODEL])
            return ARTEFACT_NAMES[SAVEDMODEL]
        with quiet():
            data = _tflite_bytes(self.tflite_converter(), fmt, self.calibration)
        name = "model.tflite"
        (staging / name).write_bytes(data)
        return name


def _tflite_bytes(conv: Any, fmt: str, calibration: list[np.ndarray] | None) -> bytes:
    """Convert with `conv` configured for `fmt` alone: the converter is shared by the
    TFLite formats, so every option is set here, defaults included."""
    from cityseg._tf import tf

    def configure(ops: set[Any]) -> Any:
        conv.optimizations = [] if fmt == "tflite" else [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16] if fmt == "tflite-fp16" else []
        conv.target_spec.supported_ops = ops
        conv.representative_dataset = None
        conv.inference_input_type = tf.float32
        if fmt == "tflite-int8":
            assert calibration is not None
            conv.representative_dataset = lambda: ([image[None]] for image in calibration)
            conv.inference_input_type = tf.uint8  # pixels are 0..255 already: scale ~1
        return conv

    builtins = {tf.lite.OpsSet.TFLITE_BUILTINS}
    if fmt != "tflite-int8":
        return bytes(configure(builtins).convert())
    try:
        return bytes(configure({tf.lite.OpsSet.TFLITE_BUILTINS_INT8}).convert())
    except Exception:  # an op without an int8 kernel: let it stay float
        return bytes(configure(builtins).convert())


def _write_onnx(keras_model: Any, staging: Path, height: int, width: int) -> str:
    try:
        import tf2onnx
    except ImportError as exc:
        raise CitysegError(f"ONNX export needs tf2onnx: {ONNX_EXTRA}") from exc
    from cityseg._tf import quiet, tf

    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    signature = (tf.TensorSpec((None, height, width, 3), tf.float32, name="image"),)
    name = ARTEFACT_NAMES[ONNX]
    with quiet():
        tf2onnx.convert.from_keras(
            keras_model,
            input_signature=signature,
            opset=ONNX_OPSET,
            output_path=str(staging / name),
        )
    return name
