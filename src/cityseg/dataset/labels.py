"""The Cityscapes label table, its 8 categories, and lookup tables over them.

These are facts copied from cityscapesScripts' `helpers/labels.py` (a test checks every
field against it) so that cityseg needs no runtime dependency on that package. Lookup
tables are 256 entries long because label PNGs are uint8: indexing a table with a whole
mask is the fast, exact remap the rest of the package relies on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Colour = tuple[int, int, int]


@dataclass(frozen=True)
class Label:
    name: str
    id: int
    train_id: int
    category: str
    category_id: int
    has_instances: bool
    ignore_in_eval: bool
    colour: Colour


@dataclass(frozen=True)
class Category:
    name: str
    id: int
    colour: Colour
    representative_label_id: int
    """The labelId written for this category when the official evaluator must read it."""


# fmt: off
LABELS: tuple[Label, ...] = (
    #     name                     id  trainId category        catId inst   ignore colour
    Label("unlabeled",              0, 255, "void",         0, False, True,  (0, 0, 0)),
    Label("ego vehicle",            1, 255, "void",         0, False, True,  (0, 0, 0)),
    Label("rectification border",   2, 255, "void",         0, False, True,  (0, 0, 0)),
    Label("out of roi",             3, 255, "void",         0, False, True,  (0, 0, 0)),
    Label("static",                 4, 255, "void",         0, False, True,  (0, 0, 0)),
    Label("dynamic",                5, 255, "void",         0, False, True,  (111, 74, 0)),
    Label("ground",                 6, 255, "void",         0, False, True,  (81, 0, 81)),
    Label("road",                   7,   0, "flat",         1, False, False, (128, 64, 128)),
    Label("sidewalk",               8,   1, "flat",         1, False, False, (244, 35, 232)),
    Label("parking",                9, 255, "flat",         1, False, True,  (250, 170, 160)),
    Label("rail track",            10, 255, "flat",         1, False, True,  (230, 150, 140)),
    Label("building",              11,   2, "construction", 2, False, False, (70, 70, 70)),
    Label("wall",                  12,   3, "construction", 2, False, False, (102, 102, 156)),
    Label("fence",                 13,   4, "construction", 2, False, False, (190, 153, 153)),
    Label("guard rail",            14, 255, "construction", 2, False, True,  (180, 165, 180)),
    Label("bridge",                15, 255, "construction", 2, False, True,  (150, 100, 100)),
    Label("tunnel",                16, 255, "construction", 2, False, True,  (150, 120, 90)),
    Label("pole",                  17,   5, "object",       3, False, False, (153, 153, 153)),
    Label("polegroup",             18, 255, "object",       3, False, True,  (153, 153, 153)),
    Label("traffic light",         19,   6, "object",       3, False, False, (250, 170, 30)),
    Label("traffic sign",          20,   7, "object",       3, False, False, (220, 220, 0)),
    Label("vegetation",            21,   8, "nature",       4, False, False, (107, 142, 35)),
    Label("terrain",               22,   9, "nature",       4, False, False, (152, 251, 152)),
    Label("sky",                   23,  10, "sky",          5, False, False, (70, 130, 180)),
    Label("person",                24,  11, "human",        6, True,  False, (220, 20, 60)),
    Label("rider",                 25,  12, "human",        6, True,  False, (255, 0, 0)),
    Label("car",                   26,  13, "vehicle",      7, True,  False, (0, 0, 142)),
    Label("truck",                 27,  14, "vehicle",      7, True,  False, (0, 0, 70)),
    Label("bus",                   28,  15, "vehicle",      7, True,  False, (0, 60, 100)),
    Label("caravan",               29, 255, "vehicle",      7, True,  True,  (0, 0, 90)),
    Label("trailer",               30, 255, "vehicle",      7, True,  True,  (0, 0, 110)),
    Label("train",                 31,  16, "vehicle",      7, True,  False, (0, 80, 100)),
    Label("motorcycle",            32,  17, "vehicle",      7, True,  False, (0, 0, 230)),
    Label("bicycle",               33,  18, "vehicle",      7, True,  False, (119, 11, 32)),
    Label("license plate",         -1,  -1, "vehicle",      7, False, True,  (0, 0, 142)),
)

CATEGORIES: tuple[Category, ...] = (
    Category("void",         0, (0, 0, 0),        0),
    Category("flat",         1, (128, 64, 128),   7),
    Category("construction", 2, (70, 70, 70),     11),
    Category("object",       3, (153, 153, 153),  17),
    Category("nature",       4, (107, 142, 35),   21),
    Category("sky",          5, (70, 130, 180),   23),
    Category("human",        6, (220, 20, 60),    24),
    Category("vehicle",      7, (0, 0, 142),      26),
)
# fmt: on

TRAIN_ID_IGNORE = 255
"""The trainId of every label that the 19-class benchmark does not score."""

PNG_LABELS: tuple[Label, ...] = tuple(label for label in LABELS if label.id >= 0)
"""The 34 labels that can appear in a labelIds PNG ('license plate', id -1, never does)."""

LABEL_BY_ID: dict[int, Label] = {label.id: label for label in LABELS}
CATEGORY_NAMES: tuple[str, ...] = tuple(category.name for category in CATEGORIES)
CATEGORY_PALETTE: np.ndarray = np.array([c.colour for c in CATEGORIES], dtype=np.uint8)

TRAIN_LABELS: tuple[Label, ...] = tuple(
    sorted(
        (label for label in PNG_LABELS if label.train_id != TRAIN_ID_IGNORE),
        key=lambda label: label.train_id,
    )
)
TRAIN_ID_NAMES: tuple[str, ...] = tuple(label.name for label in TRAIN_LABELS)
TRAIN_ID_PALETTE: np.ndarray = np.array([label.colour for label in TRAIN_LABELS], dtype=np.uint8)


def _lookup(values: dict[int, int], fill: int) -> np.ndarray:
    table = np.full(256, fill, dtype=np.uint8)
    for label_id, value in values.items():
        table[label_id] = value
    table.flags.writeable = False
    return table


LABEL_ID_KNOWN: np.ndarray = np.zeros(256, dtype=bool)
"""True for the 34 labelIds a labelIds PNG may hold."""
LABEL_ID_KNOWN[[label.id for label in PNG_LABELS]] = True
LABEL_ID_KNOWN.flags.writeable = False

LABEL_TO_CATEGORY: np.ndarray = _lookup({lb.id: lb.category_id for lb in PNG_LABELS}, 0)
LABEL_TO_TRAIN_ID: np.ndarray = _lookup({lb.id: lb.train_id for lb in PNG_LABELS}, TRAIN_ID_IGNORE)
IGNORE_IN_EVAL: np.ndarray = np.zeros(256, dtype=bool)
"""True for labelIds whose ground-truth pixels the official evaluation skips."""
IGNORE_IN_EVAL[[lb.id for lb in PNG_LABELS if lb.ignore_in_eval]] = True
IGNORE_IN_EVAL[[i for i in range(256) if not LABEL_ID_KNOWN[i]]] = True
IGNORE_IN_EVAL.flags.writeable = False

CATEGORY_TO_LABEL_ID: np.ndarray = np.array(
    [c.representative_label_id for c in CATEGORIES], dtype=np.uint8
)
"""Category id -> the labelId the official evaluator maps back to that category."""
