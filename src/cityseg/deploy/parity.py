"""How much an exported model differs from the Keras model it came from, measured.

Conversion (and above all int8 quantisation) changes numbers; whether it changes
answers is an empirical question per model. Both models run through the same
`Predictor` on the same validation images, so the report compares exactly what
`cityseg predict` would write with each: pixel agreement of the class maps, mIoU of
each against the real masks, and model latency of each, timed in the same run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cityseg.configio import config_from_json, json_record
from cityseg.evaluation.metrics import ConfusionMatrix
from cityseg.images import read_image, read_mask
from cityseg.inference.predictor import Predictor
from cityseg.inference.runtimes import LoadedModel, Runtime


@dataclass(frozen=True)
class Tolerance:
    min_pixel_agreement: float
    max_miou_drop: float


FLOAT_TOLERANCE = Tolerance(min_pixel_agreement=0.999, max_miou_drop=0.002)
TOLERANCES = {
    "savedmodel": FLOAT_TOLERANCE,
    "tflite": FLOAT_TOLERANCE,
    "onnx": FLOAT_TOLERANCE,
    "tflite-fp16": Tolerance(min_pixel_agreement=0.99, max_miou_drop=0.005),
    "tflite-int8": Tolerance(min_pixel_agreement=0.97, max_miou_drop=0.01),
}


@dataclass
class TimedRuntime:
    """Wraps a runtime to record the seconds each call takes (model only, no resizing)."""

    inner: Runtime
    seconds: list[float] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.inner.name

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        start = time.perf_counter()
        result = self.inner(batch)
        self.seconds.append(time.perf_counter() - start)
        return result


@dataclass(frozen=True)
class Latency:
    """Milliseconds per call: median, 95th percentile and mean."""

    p50: float
    p95: float
    mean: float

    @classmethod
    def of(cls, seconds: list[float]) -> Latency:
        values = np.asarray(seconds, dtype=np.float64) * 1000.0
        return cls(
            p50=round(float(np.percentile(values, 50)), 3),
            p95=round(float(np.percentile(values, 95)), 3),
            mean=round(float(values.mean()), 3),
        )

    def to_dict(self) -> dict[str, float]:
        return json_record(self)


def latency_summary(seconds: list[float]) -> dict[str, float]:
    """p50/p95/mean in milliseconds (`Latency.of` as a dict)."""
    return Latency.of(seconds).to_dict()


@dataclass(frozen=True)
class MiouComparison:
    """The mIoU of the Keras model and of the export on the same images."""

    keras: float
    export: float
    drop: float
    """Keras minus export: positive when the export is worse."""


@dataclass(frozen=True)
class LatencyComparison:
    keras: Latency
    export: Latency


@dataclass(frozen=True)
class ParityReport:
    """How far an export strays from its Keras model: export.json's `parity` record."""

    images: int
    pixel_agreement: float
    """Share of pixels whose class both models agree on."""
    miou: MiouComparison
    latency_ms: LatencyComparison
    speedup_p50: float
    tolerance: Tolerance
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        """Exactly the `parity` record export.json holds: the fields, in their order."""
        return json_record(self)

    @classmethod
    def from_dict(cls, record: dict[str, Any], where: str = "parity") -> ParityReport:
        """Read back a `parity` record; a missing or wrong value is one line naming it."""
        return config_from_json(cls, record, where)


def evenly_spaced(entries: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """`count` entries spread over the list, so a small sample still spans every city."""
    if count >= len(entries):
        return list(entries)
    picks = np.linspace(0, len(entries) - 1, num=count).round().astype(int)
    return [entries[int(i)] for i in picks]


@dataclass
class Reference:
    """The Keras model's answers on the parity images, computed once for every format."""

    root: Path
    entries: list[dict[str, Any]]
    masks: list[np.ndarray]
    miou: float
    latency_ms: Latency
    num_classes: int
    ignore_index: int | None


def run_reference(model: LoadedModel, root: Path, entries: list[dict[str, Any]]) -> Reference:
    """Run the Keras model on `entries` (with `mask`), as `cityseg predict` would."""
    num_classes = len(model.card["classes"])
    ignore = model.card.get("ignore_index")
    masks, matrix, seconds = _predict_all(model, root, entries, num_classes, ignore)
    return Reference(
        root=root,
        entries=entries,
        masks=masks,
        miou=matrix.scores().mean_iou,
        latency_ms=Latency.of(seconds),
        num_classes=num_classes,
        ignore_index=ignore,
    )


def measure_parity(
    reference: Reference, candidate: LoadedModel, tolerance: Tolerance
) -> ParityReport:
    """The parity report of `candidate` against the Keras `reference`."""
    masks, matrix, seconds = _predict_all(
        candidate, reference.root, reference.entries, reference.num_classes, reference.ignore_index
    )
    agreeing = sum(
        int(np.count_nonzero(ours == theirs))
        for ours, theirs in zip(masks, reference.masks, strict=True)
    )
    agreement = agreeing / sum(m.size for m in masks)
    miou = matrix.scores().mean_iou
    drop = reference.miou - miou
    latency = Latency.of(seconds)
    return ParityReport(
        images=len(masks),
        pixel_agreement=round(agreement, 6),
        miou=MiouComparison(
            keras=round(reference.miou, 6), export=round(miou, 6), drop=round(drop, 6)
        ),
        latency_ms=LatencyComparison(keras=reference.latency_ms, export=latency),
        speedup_p50=round(reference.latency_ms.p50 / latency.p50, 3),
        tolerance=tolerance,
        passed=bool(agreement >= tolerance.min_pixel_agreement and drop <= tolerance.max_miou_drop),
    )


def _predict_all(
    model: LoadedModel,
    root: Path,
    entries: list[dict[str, Any]],
    num_classes: int,
    ignore_index: int | None,
) -> tuple[list[np.ndarray], ConfusionMatrix, list[float]]:
    """Class maps for `entries`, their confusion matrix, and the model-call seconds."""
    timed = TimedRuntime(model.runtime)
    predictor = Predictor(LoadedModel(model.path, model.card, timed))
    predictor.predict([read_image(root / entries[0]["image"])])  # warm-up: not latency
    timed.seconds.clear()
    matrix = ConfusionMatrix(num_classes, ignore_index)
    masks = []
    for entry in entries:
        mask = predictor.predict([read_image(root / entry["image"])])[0]
        matrix.update(read_mask(root / entry["mask"]), mask)
        masks.append(mask)
    return masks, matrix, timed.seconds
