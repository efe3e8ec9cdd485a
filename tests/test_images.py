"""Image helpers: the fast colourise path must match plain palette indexing exactly."""

from __future__ import annotations

import numpy as np
import pytest

from cityseg.images import colourise


@pytest.fixture
def palette() -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, size=(8, 3)).astype(np.uint8)


def reference(ids: np.ndarray, palette: np.ndarray) -> np.ndarray:
    expected = np.zeros((*ids.shape, 3), dtype=np.uint8)
    known = ids < len(palette)
    expected[known] = palette[ids[known]]
    return expected


def test_colourise_matches_palette_indexing_and_blacks_out_unknown_ids(
    palette: np.ndarray,
) -> None:
    ids = np.random.default_rng(0).integers(0, 12, size=(37, 53)).astype(np.uint8)
    ids[0, :5] = 255
    result = colourise(ids, palette)
    assert result.dtype == np.uint8 and result.shape == (37, 53, 3)
    np.testing.assert_array_equal(result, reference(ids, palette))
    assert not result[0, :5].any()


def test_colourise_handles_views_and_wider_integer_types(palette: np.ndarray) -> None:
    ids = np.random.default_rng(1).integers(0, 8, size=(20, 30)).astype(np.uint8)
    strided = ids[::2, ::3]
    np.testing.assert_array_equal(colourise(strided, palette), reference(strided, palette))
    wide = ids.astype(np.int64)
    np.testing.assert_array_equal(colourise(wide, palette), reference(ids, palette))
