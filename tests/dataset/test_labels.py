"""The label table must equal cityscapesScripts' for every id and field."""

from __future__ import annotations

import numpy as np
import pytest
from cityscapesscripts.helpers import labels as cs

from cityseg.dataset import labels


@pytest.mark.parametrize("reference", cs.labels, ids=lambda label: label.name)
def test_every_label_matches_cityscapesscripts(reference: cs.Label) -> None:
    ours = labels.LABEL_BY_ID[reference.id]
    assert ours.name == reference.name
    assert ours.train_id == reference.trainId
    assert ours.category == reference.category
    assert ours.category_id == reference.categoryId
    assert ours.has_instances == reference.hasInstances
    assert ours.ignore_in_eval == reference.ignoreInEval
    assert ours.colour == tuple(reference.color)


def test_same_label_set_as_cityscapesscripts() -> None:
    assert {label.id for label in labels.LABELS} == {label.id for label in cs.labels}
    assert len(labels.PNG_LABELS) == 34


def test_lookup_tables_match_cityscapesscripts_for_all_png_ids() -> None:
    for label_id in range(34):
        reference = cs.id2label[label_id]
        assert labels.LABEL_TO_CATEGORY[label_id] == reference.categoryId
        assert labels.LABEL_TO_TRAIN_ID[label_id] == reference.trainId
        assert labels.IGNORE_IN_EVAL[label_id] == reference.ignoreInEval
        assert labels.LABEL_ID_KNOWN[label_id]
    assert not labels.LABEL_ID_KNOWN[34:].any()


def test_categories_and_palette_as_designed() -> None:
    assert labels.CATEGORY_NAMES == (
        "void",
        "flat",
        "construction",
        "object",
        "nature",
        "sky",
        "human",
        "vehicle",
    )
    expected = [
        (0, 0, 0),
        (128, 64, 128),
        (70, 70, 70),
        (153, 153, 153),
        (107, 142, 35),
        (70, 130, 180),
        (220, 20, 60),
        (0, 0, 142),
    ]
    assert labels.CATEGORY_PALETTE.tolist() == [list(c) for c in expected]


def test_representative_label_ids_map_back_to_their_category() -> None:
    for category in labels.CATEGORIES:
        rep = cs.id2label[category.representative_label_id]
        assert rep.categoryId == category.id
        # the evaluator only counts a representative id if it is itself evaluated (or void)
        assert category.id == 0 or not rep.ignoreInEval


def test_train_ids_are_19_in_order() -> None:
    assert len(labels.TRAIN_ID_NAMES) == 19
    expected = [
        label.name
        for label in sorted(
            (lb for lb in cs.labels if lb.trainId not in (255, -1)), key=lambda lb: lb.trainId
        )
    ]
    assert list(labels.TRAIN_ID_NAMES) == expected


def test_tables_are_read_only() -> None:
    with pytest.raises(ValueError):
        labels.LABEL_TO_CATEGORY[0] = 3
    assert labels.LABEL_TO_CATEGORY.dtype == np.uint8
