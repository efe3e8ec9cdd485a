"""Training on random crops (`train --crop HxW`), and the val tiles that score every pixel.

Cityscapes models are trained on crops of the frames (512x1024 or 1024x1024 of 1024x2048)
and run with a sliding window at full resolution; square-only models (SegFormer) can
only be trained that way. Each training image is first brought to `--size` as always,
then cut to one uniformly random crop-sized window (image and mask alike), before the
augmentations; the model is built at the crop size.

A crop must fit inside `--size`. Padding a larger crop would spend every step on pixels
that are not there and teach the model a black border that inference never shows (the
sliding window pads by repeating edge pixels); a larger `--size` does the same honestly.

Validation scores every val pixel exactly once, as a sliding window at stride = crop:
each val image (at `--size`) is cut into the tiles `cityseg.inference.sliding` places
for `--slide CROP:CROP`, one every crop along each axis and the last flush with the far
edge. Where that last tile overlaps the one before, its overlap is scored as ignore
(255), so no pixel counts twice. When the crop divides `--size` the tiles are a plain
grid and the val mIoU is exactly `cityseg evaluate --slide CROP:CROP` on images stored
at `--size`; otherwise they differ only on that overlap, where evaluate averages the two
tiles' probabilities.

Nothing here imports TensorFlow: the checks run before it starts.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cityseg.errors import DataError, UsageError
from cityseg.inference.sliding import Window, tile_starts
from cityseg.training.models import check_size, nearest_valid, required_stride, square_only

IGNORE = 255
"""The mask value the losses and metrics skip (out of every scheme's class range)."""

Size = tuple[int, int]


def check_crop(arch: str, backbone: str, crop: Size, size: Size) -> None:
    """Refuse a crop the architecture cannot take or `--size` cannot hold, in one line."""
    (crop_h, crop_w), (height, width) = crop, size
    if crop_h < 1 or crop_w < 1:
        raise UsageError(f"--crop {crop_h}x{crop_w} must be positive (height x width in pixels)")
    if crop_h > height or crop_w > width:
        raise UsageError(
            f"--crop {crop_h}x{crop_w} does not fit in --size {height}x{width}; use a crop "
            f"of at most {height}x{width} or a larger --size"
        )
    stride = required_stride(arch, backbone)
    if crop_h % stride or crop_w % stride:
        nearest_h = min(nearest_valid(crop_h, stride), height)
        nearest_w = min(nearest_valid(crop_w, stride), width)
        raise UsageError(
            f"--crop {crop_h}x{crop_w} is not divisible by {stride} for {arch}; nearest "
            f"valid crop: {nearest_h}x{nearest_w}"
        )
    if square_only(arch):  # the crop is the model's input: square, and large enough
        check_size(arch, backbone, crop_h, crop_w)


def crop_corner(shape: Size, crop: Size, draw: int) -> Size:
    """(top, left) of a uniformly random `crop` window inside `shape`, from one draw."""
    rng = np.random.default_rng(draw & (2**64 - 1))
    top = int(rng.integers(shape[0] - crop[0] + 1))
    left = int(rng.integers(shape[1] - crop[1] + 1))
    return top, left


class RandomCrop:
    """`tf.numpy_function` step: cut an (image, mask) pair to the window its draw places.

    The draw comes with the sample from the pipeline (`cityseg.training.pipeline`), so
    where a sample is cut does not depend on which thread handles it."""

    def __init__(self, crop: Size) -> None:
        self.crop = crop

    def __call__(
        self, image: np.ndarray, mask: np.ndarray, draw: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        top, left = crop_corner(image.shape[:2], self.crop, int(draw))
        bottom, right = top + self.crop[0], left + self.crop[1]
        return image[top:bottom, left:right], mask[top:bottom, left:right]


def val_window(crop: Size) -> Window:
    """The sliding window validation scores as: the crop, at stride = crop."""
    return Window(crop, crop)


def val_tiles(size: Size, crop: Size) -> list[tuple[int, int, np.ndarray]]:
    """(top, left, owned) of every val tile of a `size` image; `owned` (crop-sized, bool)
    marks the pixels this tile scores: all of them but where it overlaps an earlier tile."""
    rows = tile_starts(size[0], crop[0], crop[0])
    columns = tile_starts(size[1], crop[1], crop[1])
    counted = np.zeros(size, dtype=bool)
    tiles = []
    for top in rows:
        for left in columns:
            region = (slice(top, top + crop[0]), slice(left, left + crop[1]))
            owned = ~counted[region]
            counted[region] = True
            tiles.append((top, left, owned))
    return tiles


def val_note(size: Size, crop: Size) -> str:
    """The training log's line on how val mIoU is computed with crops."""
    window = val_window(crop)
    count = len(val_tiles(size, crop))
    tiles = "1 tile" if count == 1 else f"{count} tiles"
    note = (
        f"val: each {size[0]}x{size[1]} image scored as {tiles} of {crop[0]}x{crop[1]} "
        f"(a sliding window at stride = crop, each pixel once), as `cityseg evaluate "
        f"--slide {window}`"
    )
    if size[0] % crop[0] or size[1] % crop[1]:
        note += "; the crop does not divide the size, so the last tiles overlap and evaluate "
        note += "averages them there"
    return note


def card_crop(card: dict[str, Any]) -> Size | None:
    """The crop a bundle was trained on, or None (whole images, or a card from before
    crops were recorded)."""
    crop = card.get("crop")
    if crop is None:
        return None
    try:
        return int(crop["height"]), int(crop["width"])
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"the model card's crop record {crop!r} is damaged ({exc})") from exc


def crop_card_field(crop: Size | None, size: Size) -> dict[str, Any] | None:
    """The card's `crop` record: the window and the size the images were brought to
    first, so that a later step can predict with the matching sliding window."""
    if crop is None:
        return None
    return {"height": crop[0], "width": crop[1], "image_height": size[0], "image_width": size[1]}
