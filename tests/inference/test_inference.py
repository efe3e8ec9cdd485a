"""The shared inference path: which bundle is picked, and probability resizing."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from cityseg.errors import CitysegError
from cityseg.inference.predictor import labels_at, newest_bundle, resize_probabilities


def fake_bundle(run: Path, mtime: int) -> Path:
    card = run / "best" / "cityseg.json"
    card.parent.mkdir(parents=True)
    card.write_text("{}")
    os.utime(card, (mtime, mtime))
    return card.parent


def test_newest_bundle_is_the_most_recent_best(tmp_path: Path) -> None:
    fake_bundle(tmp_path / "fpn", 1_000)
    newer = fake_bundle(tmp_path / "unet", 2_000)
    (tmp_path / "broken" / "best").mkdir(parents=True)  # no card: not a bundle
    assert newest_bundle(tmp_path) == newer


def test_no_bundle_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(CitysegError, match="no trained model found .* --model PATH"):
        newest_bundle(tmp_path)


@pytest.mark.parametrize("channels", [1, 8, 19, 600])
def test_resize_probabilities_keeps_channels_and_mass(channels: int) -> None:
    rng = np.random.default_rng(0)
    probs = rng.random((6, 10, channels)).astype(np.float32)
    probs /= probs.sum(-1, keepdims=True)
    out = resize_probabilities(probs, 12, 20)
    assert out.shape == (12, 20, channels) and out.dtype == np.float32
    np.testing.assert_allclose(out.sum(-1), 1.0, atol=1e-5)
    assert resize_probabilities(probs, 6, 10) is probs


@pytest.mark.parametrize(
    ("channels", "size"), [(1, (12, 20)), (8, (12, 20)), (19, (6, 10)), (8, (4, 7))]
)
def test_labels_at_is_the_argmax_of_the_resized_probabilities(
    channels: int, size: tuple[int, int]
) -> None:
    rng = np.random.default_rng(channels)
    probs = rng.random((6, 10, channels)).astype(np.float32)
    probs[0, :, :] = 0.25  # exact ties on a row: argmax takes the lowest class id
    expected = resize_probabilities(probs, *size).argmax(axis=-1).astype(np.uint8)
    labels = labels_at(probs, *size)
    assert labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, expected)
    np.testing.assert_array_equal(labels_at(probs, 6, 10), probs.argmax(axis=-1))
