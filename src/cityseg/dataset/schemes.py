"""Class schemes: how the 34 Cityscapes labelIds collapse into the classes a model learns.

A scheme is a 256-entry lookup table plus the class names and palette that go with it.
The built-in `categories` (8 classes) and `trainids` (19 + 255 ignore) come from the label
table; users can bring their own as a JSON file. Keeping every scheme in this one shape
lets remap, prepare and (later) training treat them all alike.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cityseg.dataset import labels
from cityseg.errors import DataError, UsageError

BUILTIN_SCHEMES = ("categories", "trainids")
IGNORE_INDEX = 255


@dataclass(frozen=True, eq=False)
class Scheme:
    name: str
    class_names: tuple[str, ...]
    palette: np.ndarray
    """(len(class_names), 3) uint8 RGB colours, one per class id."""
    lookup: np.ndarray
    """256 uint8 entries: labelId -> class id (or `IGNORE_INDEX`)."""
    known: np.ndarray
    """256 bools: the labelIds this scheme maps; any other id in a mask is an error."""
    void_value: int
    """What `--unknown void` writes for an id outside `known`."""
    ignore_index: int | None
    """A value in the output that is not a class (255 for trainids), if any."""

    def to_manifest(self) -> dict[str, Any]:
        """The scheme as recorded in a prepared dataset's manifest.json."""
        mapping = {str(i): int(self.lookup[i]) for i in range(256) if self.known[i]}
        return {
            "classes": list(self.class_names),
            "palette": self.palette.tolist(),
            "ignore_index": self.ignore_index,
            "mapping": mapping,
        }


def _frozen(array: np.ndarray) -> np.ndarray:
    array = np.array(array, copy=True)
    array.flags.writeable = False
    return array


CATEGORIES = Scheme(
    name="categories",
    class_names=labels.CATEGORY_NAMES,
    palette=labels.CATEGORY_PALETTE,
    lookup=labels.LABEL_TO_CATEGORY,
    known=labels.LABEL_ID_KNOWN,
    void_value=0,
    ignore_index=None,
)

TRAIN_IDS = Scheme(
    name="trainids",
    class_names=labels.TRAIN_ID_NAMES,
    palette=labels.TRAIN_ID_PALETTE,
    lookup=labels.LABEL_TO_TRAIN_ID,
    known=labels.LABEL_ID_KNOWN,
    void_value=IGNORE_INDEX,
    ignore_index=IGNORE_INDEX,
)


def get_scheme(spec: str) -> Scheme:
    """Resolve `--scheme`: a built-in name or the path of a JSON scheme file."""
    if spec == CATEGORIES.name:
        return CATEGORIES
    if spec == TRAIN_IDS.name:
        return TRAIN_IDS
    path = Path(spec)
    if path.suffix.lower() == ".json" or path.exists():
        return load_json_scheme(path)
    raise UsageError(
        f"unknown scheme {spec!r}: use one of {', '.join(BUILTIN_SCHEMES)} or a JSON file path"
    )


def load_json_scheme(path: Path) -> Scheme:
    """Read a user scheme.

    Either a plain object `{"7": 1, "8": 1, ...}` (labelId -> class id) or
    `{"name", "mapping", "classes", "palette", "default", "void"}` where only `mapping` is
    required. `default` maps every labelId not in `mapping`; without it those ids are
    unknown. A class id of 255 means "ignore" and is not a class.
    """
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise UsageError(f"scheme file {path} does not exist") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"scheme file {path} is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise DataError(f"scheme file {path} must hold a JSON object")
    body: dict[str, Any] = raw if "mapping" in raw else {"mapping": raw}
    mapping_raw = body["mapping"]
    if not isinstance(mapping_raw, dict) or not mapping_raw:
        raise DataError(f"scheme file {path}: 'mapping' must be a non-empty object")

    lookup = np.zeros(256, dtype=np.uint8)
    known = np.zeros(256, dtype=bool)
    if "default" in body:
        lookup[:] = _byte(path, body["default"], "default")
        known[:] = True
    for key, value in mapping_raw.items():
        label_id = _byte(path, key, "labelId")
        lookup[label_id] = _byte(path, value, f"class id for labelId {label_id}")
        known[label_id] = True

    values = {int(v) for v in lookup[known]}
    ignore_index = IGNORE_INDEX if IGNORE_INDEX in values else None
    num_classes = max((v for v in values if v != IGNORE_INDEX), default=-1) + 1
    class_names = _class_names(body.get("classes"), num_classes, path)
    palette = _palette(body.get("palette"), len(class_names), path)
    void_value = _byte(path, body.get("void", IGNORE_INDEX), "void")
    return Scheme(
        name=str(body.get("name", path.stem)),
        class_names=class_names,
        palette=_frozen(palette),
        lookup=_frozen(lookup),
        known=_frozen(known),
        void_value=void_value,
        ignore_index=ignore_index,
    )


def _byte(path: Path, value: Any, what: str) -> int:
    """JSON keys are strings and values ints; accept both spellings of a number, nothing else."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value.strip().isdigit():
        number = int(value)
    else:
        number = -1
    if not 0 <= number <= 255:
        raise DataError(f"scheme file {path}: {what} {value!r} is not an integer 0..255")
    return number


def _class_names(raw: Any, num_classes: int, path: Path) -> tuple[str, ...]:
    if raw is None:
        return tuple(f"class_{i}" for i in range(num_classes))
    if not isinstance(raw, list) or not all(isinstance(n, str) for n in raw):
        raise DataError(f"scheme file {path}: 'classes' must be a list of names")
    if len(raw) < num_classes:
        raise DataError(
            f"scheme file {path}: 'classes' names {len(raw)} classes "
            f"but the mapping uses ids up to {num_classes - 1}"
        )
    return tuple(raw)


def _palette(raw: Any, num_classes: int, path: Path) -> np.ndarray:
    if raw is None:
        return default_palette(num_classes)
    try:
        palette = np.array(raw, dtype=np.int64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"scheme file {path}: 'palette' must be a list of [r, g, b]") from exc
    if palette.shape != (num_classes, 3) or palette.min() < 0 or palette.max() > 255:
        raise DataError(
            f"scheme file {path}: 'palette' must hold {num_classes} [r, g, b] triples of 0..255"
        )
    return palette.astype(np.uint8)


def default_palette(num_classes: int) -> np.ndarray:
    """Distinct, stable colours for a scheme that brings none: Cityscapes' own come first."""
    base = [label.colour for label in labels.TRAIN_LABELS]
    rng = np.random.default_rng(num_classes)
    extra = rng.integers(0, 256, size=(max(0, num_classes - len(base)), 3))
    colours = np.array(base[:num_classes] + [tuple(c) for c in extra], dtype=np.uint8)
    return colours.reshape(num_classes, 3)
