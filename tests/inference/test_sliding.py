"""Sliding-window inference: tiles that cover any size, and averages that change nothing
where the model's answer does not depend on where the crop is."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cityseg.errors import UsageError
from cityseg.inference.sliding import Window, slide_probabilities, tile_starts


@pytest.mark.parametrize("crop, stride", [(16, 5), (16, 11), (16, 16), (7, 3)])
def test_tiles_cover_every_pixel_of_odd_sizes_and_stay_inside(crop: int, stride: int) -> None:
    for length in range(1, 61):
        starts = tile_starts(length, crop, stride)
        covered = np.zeros(max(length, crop), int)
        for start in starts:
            covered[start : start + crop] += 1
        assert covered[:length].min() >= 1, (length, starts)
        assert starts[0] == 0 and starts[-1] == max(0, length - crop)
        assert all(b - a <= stride for a, b in zip(starts, starts[1:], strict=False))


def per_pixel_model(crops: np.ndarray) -> np.ndarray:
    """A 4-class softmax of each pixel's colour alone: the same wherever the crop is."""
    weights = np.array(
        [[0.02, -0.01, 0.0, 0.01], [0.0, 0.03, -0.02, 0.0], [-0.01, 0.0, 0.02, 0.01]]
    )
    logits = crops.astype(np.float32) @ weights.astype(np.float32)
    exp = np.exp(logits - logits.max(-1, keepdims=True))
    return exp / exp.sum(-1, keepdims=True)


@pytest.mark.parametrize("size", [(37, 53), (64, 64), (10, 90), (9, 9)])
def test_sliding_equals_the_whole_image_for_a_per_pixel_model(size: tuple[int, int]) -> None:
    image = np.random.default_rng(sum(size)).integers(0, 256, (*size, 3), dtype=np.uint8)
    whole = per_pixel_model(image[None])[0]
    for window in (Window.parse("16x24:8x10"), Window.parse("32"), Window.parse("16x16:16x16")):
        slid = slide_probabilities(image, window, per_pixel_model, batch=3)
        assert slid.shape == (*size, 4)
        np.testing.assert_allclose(slid, whole, rtol=1e-5, atol=1e-6)


def test_averages_are_weighted_by_how_many_tiles_cover_a_pixel() -> None:
    """A model whose answer is its tile's number: overlaps get the mean of the tiles."""
    image = np.zeros((10, 10, 3), np.uint8)
    calls: list[int] = []

    def counting(crops: np.ndarray) -> np.ndarray:
        calls.append(len(crops))
        return (
            np.ones((*crops.shape[:3], 2), np.float32) * np.arange(len(crops))[:, None, None, None]
        )

    slid = slide_probabilities(image, Window((6, 6), (4, 4)), counting, batch=8)
    assert calls == [4]  # tiles at rows 0, 4 and columns 0, 4: four tiles in one batch
    assert slid[0, 0, 0] == 0 and slid[9, 9, 0] == 3
    assert slid[5, 5, 0] == pytest.approx((0 + 1 + 2 + 3) / 4)  # the middle is in all four


def test_a_model_on_its_own_input_size_gives_the_whole_image_answer(tiny_bundle: Path) -> None:
    from cityseg.inference.predictor import load_predictor

    predictor = load_predictor(tiny_bundle)
    height, width = predictor.input_size
    image = np.random.default_rng(5).integers(0, 256, (height, width, 3), dtype=np.uint8)
    whole = predictor.probabilities([image])[0]

    def model(crops: np.ndarray) -> np.ndarray:
        return np.stack(predictor.probabilities(list(crops)))

    slid = slide_probabilities(image, Window((height, width), (height, width)), model)
    np.testing.assert_array_equal(slid, whole)


@pytest.mark.parametrize("text", ["", "x", "0x4", "8x8:9x8", "8x8:", "8y8", "8x8:4:4"])
def test_bad_slide_values_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError, match="--slide"):
        Window.parse(text)


def test_the_default_stride_is_two_thirds_of_the_crop() -> None:
    assert Window.parse("512x1024") == Window((512, 1024), (341, 682))
    assert Window.parse("512:384x256") == Window((512, 512), (384, 256))


@pytest.mark.slow
def test_slide_through_the_api_and_the_cli(tiny_bundle: Path, tmp_path: Path, cli) -> None:
    import cityseg
    from cityseg.images import read_mask, write_rgb

    model = cityseg.Model(tiny_bundle, verbose=False)
    height, width = model.input_size
    rng = np.random.default_rng(11)
    same = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    assert np.array_equal(model.predict(same, slide=f"{height}x{width}"), model.predict(same))

    wide = rng.integers(0, 256, (height + 13, 2 * width + 7, 3), dtype=np.uint8)
    mask, probs = model.predict(wide, probabilities=True, slide=Window.parse(f"{height}x{width}"))
    assert mask.shape == wide.shape[:2] and probs.shape[:2] == wide.shape[:2]
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-4)

    write_rgb(tmp_path / "wide.png", wide)
    window = f"{height}x{width}:{height // 2}"
    result = cli("predict", tmp_path / "wide.png", "-o", tmp_path / "ids.png", "--model",
                 tiny_bundle, "--format", "ids", "--slide", window)  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert read_mask(tmp_path / "ids.png").shape == wide.shape[:2]
    bad = cli("predict", tmp_path / "wide.png", "-o", tmp_path / "x.png", "--model", tiny_bundle,
              "--slide", "48x96:50x96")  # fmt: skip
    assert bad.exit_code == 2 and "--slide" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.slow
def test_evaluate_slides_too(tiny_bundle: Path, prepared: Path, tmp_path: Path, cli) -> None:
    result = cli("evaluate", "--model", tiny_bundle, "--data", prepared, "--split", "val",
                 "--project", tmp_path, "--slide", "48x96:24x48", "-q")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "mean IoU" in result.stdout
    (metrics,) = tmp_path.glob("*/metrics.json")
    assert json.loads(metrics.read_text())["slide"] == "48x96:24x48"
