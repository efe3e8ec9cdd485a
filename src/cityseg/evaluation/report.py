"""What `cityseg evaluate` found, as typed records, and metrics.json, written from them.

The report is the thing people and programs read: `report.scores.mean_iou`,
`report.scores.of("vehicle").iou`, `report.official.mean_iou`. metrics.json is its
`to_dict()`, key for key and in the same order as it always was (tests, notebooks and
other tools read that file), and `EvalReport.read` turns a metrics.json back into a
report, so an evaluation folder written last month reads like one made now. Numbers are
the JSON's: None (never NaN) where a score is undefined.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from cityseg import __version__
from cityseg.configio import json_record
from cityseg.errors import DataError
from cityseg.evaluation.metrics import ScoreTable
from cityseg.fsutil import read_folder_record

OFFICIAL_METHOD = (
    "cityscapesScripts evalPixelLevelSemanticLabeling category IoU: ground-truth pixels whose "
    "labelId is ignoreInEval are not counted; a prediction of void on a counted pixel is a "
    "false negative of its category and a false positive of none; mean over the 7 non-void "
    "categories with a defined IoU"
)
REPORT_NAME = "metrics.json"

__all__ = ["EvalReport", "EvalSource", "GroupScores", "OfficialScore", "REPORT_NAME"]


@dataclass(frozen=True)
class GroupScores:
    """The means of one city (Cityscapes) or one `--group-by` group (own data)."""

    images: int
    mean_iou: float | None
    mean_iou_non_void: float | None
    pixel_accuracy: float | None

    def to_dict(self) -> dict[str, Any]:
        return json_record(self)


@dataclass(frozen=True)
class OfficialScore:
    """The official Cityscapes category IoU (see `evaluate.official_category_scores`)."""

    mean_iou: float | None
    """Over the 7 non-void categories with a defined IoU; None if none is defined."""
    per_category: dict[str, float | None]
    counted_pixels: int
    method: str = OFFICIAL_METHOD

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "mean_iou": self.mean_iou,
            "per_category": dict(self.per_category),
            "counted_pixels": self.counted_pixels,
        }


@dataclass(frozen=True)
class EvalSource:
    """What was scored: a model (with a summary of its card) or a folder of PNGs."""

    kind: Literal["model", "predictions"]
    path: Path
    card: dict[str, Any] | None = None
    """The model card's architecture, size, scheme and training fields, as recorded."""

    def to_dict(self) -> dict[str, Any]:
        if self.kind == "model":
            return {"kind": "model", "model": str(self.path), "card": self.card}
        return {"kind": "predictions", "predictions": str(self.path)}

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> EvalSource:
        if record["kind"] == "model":
            return cls("model", Path(record["model"]), record.get("card"))
        return cls("predictions", Path(record["predictions"]))


@dataclass(frozen=True, eq=False)
class EvalReport:
    """One evaluation: its scores, where they came from, and the folder holding its files."""

    out_dir: Path
    split: str
    images: int
    scheme: str
    classes: tuple[str, ...]
    scores: ScoreTable
    """Per class and their means, from one confusion matrix over the whole split."""
    groups: dict[str, GroupScores]
    """Per city for Cityscapes (`per_city` in metrics.json), per group for own data."""
    confusion_matrix: np.ndarray
    """(ground truth, prediction) pixel counts, int64, classes in `classes` order."""
    source: EvalSource
    dataset: Path
    tta_flip: bool
    cityscapes: bool
    """A Cityscapes dataset: cities, and an official score (computed or skipped)."""
    official: OfficialScore | None = None
    official_skipped: str | None = None
    """Why a Cityscapes evaluation has no official score (its scheme, missing labelIds)."""
    labelids_dir: Path | None = None
    cityseg_version: str = field(default=__version__)
    slide: str | None = None
    """The sliding window the model ran with (`--slide`), or None for whole images."""

    @property
    def mean_iou(self) -> float | None:
        return self.scores.mean_iou

    def to_dict(self) -> dict[str, Any]:
        """Exactly what metrics.json holds, in its key order."""
        record: dict[str, Any] = {
            "cityseg_version": self.cityseg_version,
            "source": self.source.to_dict(),
            "dataset": str(self.dataset),
            "split": self.split,
            "scheme": self.scheme,
            "images": self.images,
            "tta_flip": self.tta_flip,
            "slide": self.slide,
            "scores": self.scores.to_dict(),
            ("per_city" if self.cityscapes else "per_group"): {
                name: group.to_dict() for name, group in self.groups.items()
            },
            "classes": list(self.classes),
            "confusion_matrix": np.asarray(self.confusion_matrix).tolist(),
        }
        if self.cityscapes:
            record["official"] = (
                self.official.to_dict()
                if self.official is not None
                else {"skipped": self.official_skipped}
            )
        if self.labelids_dir is not None:
            record["labelids_dir"] = str(self.labelids_dir)
        return record

    @classmethod
    def from_dict(cls, record: dict[str, Any], out_dir: Path) -> EvalReport:
        cityscapes = "per_city" in record
        official = record.get("official") or {}
        return cls(
            out_dir=out_dir,
            split=record["split"],
            images=int(record["images"]),
            scheme=record["scheme"],
            classes=tuple(record["classes"]),
            scores=ScoreTable.from_dict(record["scores"]),
            groups={
                name: GroupScores(**values)
                for name, values in record["per_city" if cityscapes else "per_group"].items()
            },
            confusion_matrix=np.array(record["confusion_matrix"], dtype=np.int64),
            source=EvalSource.from_dict(record["source"]),
            dataset=Path(record["dataset"]),
            tta_flip=bool(record["tta_flip"]),
            cityscapes=cityscapes,
            official=None if "skipped" in official or not official else _official(official),
            official_skipped=official.get("skipped"),
            labelids_dir=Path(record["labelids_dir"]) if "labelids_dir" in record else None,
            cityseg_version=record["cityseg_version"],
            slide=record.get("slide"),  # absent from reports written before --slide
        )

    @classmethod
    def read(cls, out_dir: str | Path) -> EvalReport:
        """The report of an evaluation folder, from its metrics.json."""
        folder = Path(out_dir)
        record = read_folder_record(folder, REPORT_NAME, "an evaluation folder")
        try:
            return cls.from_dict(record, folder)
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(
                f"{folder / REPORT_NAME} is not a cityseg evaluate record ({exc})"
            ) from exc

    def __repr__(self) -> str:
        miou = "-" if self.scores.mean_iou is None else f"{self.scores.mean_iou:.4f}"
        official = ""
        if self.official is not None and self.official.mean_iou is not None:
            official = f", official {self.official.mean_iou:.4f}"
        return (
            f"EvalReport({self.split}: {self.images} images, {self.scheme}, "
            f"mIoU {miou}{official}, out_dir={str(self.out_dir)!r})"
        )


def _official(record: dict[str, Any]) -> OfficialScore:
    return OfficialScore(
        mean_iou=record["mean_iou"],
        per_category=dict(record["per_category"]),
        counted_pixels=int(record["counted_pixels"]),
        method=record["method"],
    )
