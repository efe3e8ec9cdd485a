"""Sliding-window inference: a model run on overlapping crops of a larger image.

This is mmsegmentation's "slide" test mode, the way Cityscapes models are run at
1024x2048, and the only way to run a square-only model (keras-hub's SegFormer) on a
2:1 street image without squashing it. Tiles start every `stride` pixels, the last one
flush with the far edge, so every pixel is covered; overlapping probabilities are
averaged. An image smaller than the crop is padded (edge pixels repeated) and the
padding cut away again.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from cityseg.errors import UsageError

ModelProbabilities = Callable[[np.ndarray], np.ndarray]
"""A batch of crops (N, h, w, 3) uint8 to its probabilities (N, h, w, classes)."""


@dataclass(frozen=True)
class Window:
    crop: tuple[int, int]
    """(height, width) of a tile: the model's input size, as a rule."""
    stride: tuple[int, int]

    @classmethod
    def parse(cls, text: str) -> Window:
        """`--slide CROP[:STRIDE]`: `512x512`, or `512x512:384x384`; a stride of two
        thirds of the crop (mmsegmentation's Cityscapes setting) when none is given."""
        crop_text, colon, stride_text = text.partition(":")
        crop = _size(crop_text, text)
        stride = _size(stride_text, text) if colon else _two_thirds(crop)
        if any(s > c for s, c in zip(stride, crop, strict=True)):
            raise UsageError(f"--slide {text}: the stride is larger than the crop")
        return cls(crop, stride)

    def __str__(self) -> str:
        """The `--slide` text that parses back to this window."""
        (crop_h, crop_w), (stride_h, stride_w) = self.crop, self.stride
        return f"{crop_h}x{crop_w}:{stride_h}x{stride_w}"


def as_window(value: str | Window | None) -> Window | None:
    """The API's `slide=`: a `Window`, its `--slide` text, or None for whole images."""
    return Window.parse(value) if isinstance(value, str) else value


def _size(part: str, text: str) -> tuple[int, int]:
    """`HxW`, or `N` for a square."""
    match = re.fullmatch(r"\s*(\d+)\s*(?:[xX]\s*(\d+)\s*)?", part)
    if not match or int(match[1]) < 1 or int(match[2] or match[1]) < 1:
        raise UsageError(
            f"--slide must look like CROP[:STRIDE], each HxW or N (e.g. 512x512:384), got {text!r}"
        )
    return int(match[1]), int(match[2] or match[1])


def _two_thirds(crop: tuple[int, int]) -> tuple[int, int]:
    return (max(1, crop[0] * 2 // 3), max(1, crop[1] * 2 // 3))


def tile_starts(length: int, crop: int, stride: int) -> list[int]:
    """Where the tiles along one axis start: every `stride`, the last flush with the end."""
    if length <= crop:
        return [0]
    starts = list(range(0, length - crop, stride))
    return [*starts, length - crop]


def slide_probabilities(
    image: np.ndarray, window: Window, model: ModelProbabilities, batch: int = 4
) -> np.ndarray:
    """The (H, W, classes) probabilities of `image`, averaged over every tile."""
    height, width = image.shape[:2]
    crop_h, crop_w = window.crop
    padded = np.pad(
        image,
        ((0, max(0, crop_h - height)), (0, max(0, crop_w - width)), (0, 0)),
        mode="edge",
    )
    corners = [
        (top, left)
        for top in tile_starts(padded.shape[0], crop_h, window.stride[0])
        for left in tile_starts(padded.shape[1], crop_w, window.stride[1])
    ]
    total: np.ndarray | None = None
    counts = np.zeros(padded.shape[:2], np.float32)
    for first in range(0, len(corners), batch):
        group = corners[first : first + batch]
        crops = np.stack([padded[y : y + crop_h, x : x + crop_w] for y, x in group])
        for (top, left), probs in zip(group, model(crops), strict=True):
            if total is None:
                total = np.zeros((*padded.shape[:2], probs.shape[-1]), np.float32)
            total[top : top + crop_h, left : left + crop_w] += probs
            counts[top : top + crop_h, left : left + crop_w] += 1
    assert total is not None  # there is always at least one tile
    return (total / counts[..., None])[:height, :width]
