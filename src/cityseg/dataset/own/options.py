"""Everything `cityseg prepare` needs to read an own dataset, in one value.

One frozen object instead of a dozen keyword arguments: the CLI builds it from flags, the
Python API from arguments, and the options that decide the result are saved in the
manifest, so a re-run with other options rewrites instead of mixing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cityseg.config import OWN, Background, DataFormat
from cityseg.errors import UsageError


@dataclass(frozen=True)
class OwnDataOptions:
    format: DataFormat
    annotations: Path | None = None
    """The VIA/COCO file, LabelMe folder or mask folder; found under SOURCE when None."""
    class_attr: str | None = None
    classes: Sequence[str] | None = None
    ignore: str | None = None
    palette: Path | None = None
    background: Background = OWN.background
    val_ratio: float = OWN.val_ratio
    test_ratio: float = OWN.test_ratio
    seed: int = OWN.seed
    group_by: str | None = None

    def check(self) -> None:
        if self.format is DataFormat.cityscapes:
            raise UsageError("the cityscapes format is prepared by cityseg.dataset.prepare")
        for name, ratio in (("--val-ratio", self.val_ratio), ("--test-ratio", self.test_ratio)):
            if not 0.0 <= ratio < 1.0:
                raise UsageError(f"{name} must be in [0, 1), got {ratio}")
        if self.val_ratio + self.test_ratio >= 1.0:
            raise UsageError("--val-ratio and --test-ratio together must leave images to train on")
        if self.class_attr is not None and self.format is not DataFormat.via:
            raise UsageError("--class-attr is for --format via (VIA region attributes)")

    def to_manifest(self) -> dict[str, Any]:
        """The options that decide what is written (so a change means a rewrite)."""
        return {
            "class_attr": self.class_attr,
            "classes": None if self.classes is None else list(self.classes),
            "ignore": self.ignore,
            "palette": None if self.palette is None else str(self.palette),
            "background": self.background.value,
            "val_ratio": self.val_ratio,
            "test_ratio": self.test_ratio,
            "seed": self.seed,
            "group_by": self.group_by,
        }
