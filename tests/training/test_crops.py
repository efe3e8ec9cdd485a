"""`train --crop`: random training windows, val tiles that score each pixel once, the checks,
and a real run whose val mIoU is `cityseg evaluate --slide CROP:CROP` of its saved model."""

from __future__ import annotations

import csv
import json
import shutil
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from cityseg.api.run import with_overrides
from cityseg.config import TrainConfig
from cityseg.dataset.entries import split_entries
from cityseg.dataset.manifest import read_manifest
from cityseg.errors import DataError, UsageError
from cityseg.training.crops import (
    IGNORE,
    RandomCrop,
    card_crop,
    check_crop,
    crop_card_field,
    val_tiles,
)
from cityseg.training.pipeline import DataConfig, make_dataset, steps_per_epoch
from cityseg.tuning.best import retrain_command

SIZE = (64, 128)
"""The fixtures' stored size: training at it resizes nothing, so pixels stay traceable."""
CROPPED = DataConfig(height=64, width=128, batch_size=2, aug="none", crop=(32, 32))


def coded_image(index: int) -> np.ndarray:
    """RGB whose pixel (y, x) reads (4y, 2x, 20 * index): a window gives away its origin."""
    y, x = np.mgrid[: SIZE[0], : SIZE[1]]
    return np.stack([4 * y, 2 * x, np.full_like(y, 20 * index)], axis=-1).astype(np.uint8)


def origin(window: np.ndarray) -> tuple[int, int, int]:
    """(image index, top, left) a window of a `coded_image` was cut from."""
    red, green, blue = (int(v) for v in window[0, 0])
    return blue // 20, red // 4, green // 2


@pytest.fixture(scope="module")
def coded(prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Any]]:
    """A copy of `prepared` whose train images are `coded_image`s and whose category masks
    are random ids, so a misaligned mask window cannot pass for the right one."""
    root = tmp_path_factory.mktemp("coded") / "cityscapes"
    shutil.copytree(prepared, root)
    rng = np.random.default_rng(0)
    masks = []
    for index, entry in enumerate(read_manifest(root)["splits"]["train"]):
        image = coded_image(index)
        assert cv2.imwrite(str(root / entry["image"]), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        mask = rng.integers(0, 8, SIZE, dtype=np.uint8)
        assert cv2.imwrite(str(root / entry["masks"]["categories"]), mask)
        masks.append(mask)
    return root, masks


def windows(dataset: Any) -> list[tuple[np.ndarray, np.ndarray]]:
    return [
        (image.astype(np.uint8), mask)
        for images, masks in dataset
        for image, mask in zip(images.numpy(), masks.numpy(), strict=True)
    ]


def origins(root: Path, config: DataConfig, **kwargs: Any) -> list[tuple[int, int, int]]:
    """Where each sample of one training epoch was cut, in the order they came out."""
    dataset = make_dataset(root, "train", config, training=True, **kwargs)
    return [origin(image) for image, _ in windows(dataset)]


# ----------------------------------------------------------------------------- training crops


def test_random_crop_cuts_image_and_mask_at_the_same_place() -> None:
    image = coded_image(3)
    mask = np.arange(SIZE[0] * SIZE[1], dtype=np.int64).reshape(SIZE) % 251
    crop = RandomCrop((32, 64))
    corners = set()
    for draw in range(40):
        window, mask_window = crop(image, mask.astype(np.uint8), np.int64(draw))
        index, top, left = origin(window)
        assert window.shape == (32, 64, 3) and mask_window.shape == (32, 64)
        assert np.array_equal(window, image[top : top + 32, left : left + 64]) and index == 3
        assert np.array_equal(mask_window, mask[top : top + 32, left : left + 64])
        corners.add((top, left))
    assert len(corners) > 30  # 33x65 places, so distinct draws rarely share one
    assert {top for top, _ in corners} <= set(range(33))
    assert {left for _, left in corners} <= set(range(65))
    same = crop(image, mask.astype(np.uint8), np.int64(7))[0]
    assert np.array_equal(same, crop(image, mask.astype(np.uint8), np.int64(7))[0])


def test_pipeline_crops_are_aligned_windows_of_the_training_images(
    coded: tuple[Path, list[np.ndarray]],
) -> None:
    root, masks = coded
    dataset = make_dataset(root, "train", CROPPED, training=True)
    places: Counter[tuple[int, int, int]] = Counter()
    for epoch in range(1, 4):
        samples = windows(dataset)
        assert len(samples) == steps_per_epoch(root, "train", CROPPED) * 2 == len(masks)
        for image, mask in samples:
            index, top, left = origin(image)
            assert image.shape == (32, 32, 3) and mask.shape == (32, 32)
            assert np.array_equal(image, coded_image(index)[top : top + 32, left : left + 32])
            assert np.array_equal(mask, masks[index][top : top + 32, left : left + 32])
            places[index, top, left] += 1
        assert sorted(i for i, _, _ in places.elements()) == sorted(list(range(len(masks))) * epoch)
    assert len({(top, left) for _, top, left in places}) > 20  # 24 samples, 33x97 places


def test_crops_are_reproducible_under_the_seed_and_differ_per_worker(
    coded: tuple[Path, list[np.ndarray]],
) -> None:
    root, _ = coded
    config = replace(CROPPED, batch_size=1)
    # The maps may hand samples out in any order; which sample is cut where may not vary.
    first = sorted(origins(root, config))
    assert first == sorted(origins(root, config))  # a fresh pipeline, the same seed
    assert first != sorted(origins(root, replace(config, seed=1)))
    shards = [{place[1:] for place in origins(root, config, shard=(2, i))} for i in range(2)]
    assert not shards[0] & shards[1]  # each input pipeline draws its own windows

    # A cache holds the whole resized images; crops (and augmentations) come after it.
    cached = replace(config, cache="memory", aug="soft")
    for _ in range(2):
        samples = origins(root, cached)
        assert len(samples) == 8 and len({s[1:] for s in samples}) > 1


# ----------------------------------------------------------------------------- val tiles


@pytest.mark.parametrize("crop", [(32, 64), (48, 96)])
def test_val_tiles_score_every_pixel_exactly_once(prepared: Path, crop: tuple[int, int]) -> None:
    config = replace(CROPPED, crop=crop, batch_size=3)
    tiles = val_tiles(SIZE, crop)
    assert len(tiles) == 4  # 2x2: a grid for 32x64; for 48x96 the last tiles are flush
    tiled = windows(make_dataset(prepared, "val", config, training=False))
    entries = split_entries(prepared, "val", "categories")
    assert len(tiled) == len(entries) * 4
    assert steps_per_epoch(prepared, "val", config, training=False) == -(-len(tiled) // 3)
    for number, entry in enumerate(entries):
        image = cv2.cvtColor(cv2.imread(str(prepared / entry["image"])), cv2.COLOR_BGR2RGB)
        truth = cv2.imread(str(prepared / entry["mask"]), cv2.IMREAD_UNCHANGED)
        stitched = np.full(SIZE, IGNORE, np.uint8)
        for (top, left, owned), (window, mask) in zip(
            tiles, tiled[number * 4 : number * 4 + 4], strict=True
        ):
            region = (slice(top, top + crop[0]), slice(left, left + crop[1]))
            assert np.array_equal(window, image[region])  # the whole tile, overlap included
            assert np.array_equal(mask[~owned], np.full((~owned).sum(), IGNORE))
            assert (stitched[region][owned] == IGNORE).all()  # nobody scored these yet
            stitched[region][owned] = mask[owned]
        assert np.array_equal(stitched, truth)
    if crop == (48, 96):
        assert [(top, left) for top, left, _ in tiles] == [(0, 0), (0, 32), (16, 0), (16, 32)]


# ----------------------------------------------------------------------------- checks


def test_bad_crops_are_one_line() -> None:
    with pytest.raises(
        UsageError, match=r"not divisible by 32 for fpn; nearest valid crop: 32x64$"
    ):
        check_crop("fpn", "efficientnetb0", (40, 70), SIZE)
    with pytest.raises(UsageError, match=r"nearest valid crop: 64x128$"):
        check_crop("fpn", "efficientnetb0", (60, 120), SIZE)  # never beyond --size
    with pytest.raises(UsageError, match=r"--crop 96x96 does not fit in --size 64x128"):
        check_crop("fpn", "efficientnetb0", (96, 96), SIZE)
    check_crop("unet-scratch", "efficientnetb0", (48, 16), SIZE)
    with pytest.raises(UsageError, match="does not fit in the size 64x128"):
        DataConfig(height=64, width=128, crop=(32, 256))
    with pytest.raises(UsageError, match="--crop must look like HEIGHTxWIDTH"):
        with_overrides(TrainConfig(), {"crop": "32"})
    with pytest.raises(UsageError, match="crop must be"):
        with_overrides(TrainConfig(), {"crop": (32,)})
    assert with_overrides(TrainConfig(), {"crop": "32x64"}).crop == (32, 64)
    assert with_overrides(TrainConfig(), {"crop": [32, 64]}).crop == (32, 64)


def test_cli_refuses_bad_crops_before_training(train_data: Path, tmp_path: Path, cli) -> None:
    common = ("train", "--data", train_data, "--size", "64x128", "--weights", "none")
    cases = {
        "40x64": "--crop 40x64 is not divisible by 32 for fpn; nearest valid crop: 32x64",
        "64x192": "--crop 64x192 does not fit in --size 64x128",
        "32": "--crop must look like HEIGHTxWIDTH",
    }
    for crop, message in cases.items():
        result = cli(*common, "--crop", crop, "--project", tmp_path / "runs")
        lines = result.stderr.strip().splitlines()
        assert result.exit_code == 2 and len(lines) == 1 and message in lines[0], result.stderr
    assert not (tmp_path / "runs").exists()


def test_cards_record_the_crop_and_old_cards_have_none() -> None:
    assert card_crop({"arch": "fpn", "height": 64, "width": 128}) is None  # before crops
    assert card_crop({"crop": None}) is None
    assert card_crop({"crop": crop_card_field((32, 64), SIZE)}) == (32, 64)
    with pytest.raises(DataError, match="crop record"):
        card_crop({"crop": {"height": 32}})
    assert crop_card_field((32, 64), SIZE) == {
        "height": 32,
        "width": 64,
        "image_height": 64,
        "image_width": 128,
    }


def test_a_study_retrains_with_its_crop() -> None:
    base = TrainConfig(height=64, width=128, crop=(32, 64))
    command = retrain_command(base, {"lr": 0.01})
    assert "--size 64x128 --epochs 40 --crop 32x64" in command and "(32" not in command
    assert "--crop" not in retrain_command(replace(base, crop=None), {})


# ----------------------------------------------------------------------------- a real run


@pytest.mark.slow
def test_a_crop_run_builds_at_the_crop_and_validates_as_evaluate_slides(
    train_data: Path, tmp_path: Path, cli, messages: list[str]
) -> None:
    from cityseg.api.model import Model
    from cityseg.inference.bundle import load_bundle
    from cityseg.training.models import build_from_card

    result = cli(
        "train", "--data", train_data, "--project", tmp_path / "runs", "--name", "crop",
        "--arch", "unet-scratch", "--base-filters", "4", "--weights", "none",
        "--size", "64x128", "--crop", "32x64", "--epochs", "2", "--batch", "4",
        "--steps-per-epoch", "2", "--lr", "3e-3", "--aug", "soft", "--patience", "0",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "crop: one random 32x64 window of each 64x128 image" in messages
    assert any("4 tiles of 32x64" in m and "--slide 32x64:32x64" in m for m in messages)
    run = tmp_path / "runs" / "crop"
    assert json.loads((run / "config.json").read_text())["crop"] == [32, 64]
    # Trained at the crop, the bundle runs whole 64x128 images, as any other run's does.
    bundle = load_bundle(run / "best", build_from_card)
    assert bundle.model.input_shape == (None, 64, 128, 3)
    assert (bundle.card["height"], bundle.card["width"]) == (64, 128)
    assert card_crop(bundle.card) == (32, 64) and bundle.card["crop"]["image_width"] == 128

    with (run / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    best_epoch = bundle.card["training"]["best_epoch"]
    logged = float(rows[best_epoch - 1]["val_miou"])
    model = Model(run / "best", verbose=False)  # `cityseg evaluate --model RUN/best`
    evaluated = model.evaluate(train_data, "val", slide="32x64:32x64", project=tmp_path / "e")
    assert evaluated.slide == "32x64:32x64"
    assert evaluated.mean_iou == pytest.approx(logged, abs=1e-6)
    # Not so for any window: overlapping tiles average their probabilities, and score
    # other numbers (so the equality above says something).
    overlapping = model.evaluate(train_data, "val", slide="32x64:16x32", project=tmp_path / "e")
    assert overlapping.mean_iou != pytest.approx(logged, abs=1e-6)
