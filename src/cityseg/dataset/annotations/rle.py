"""COCO run-length masks decoded with numpy, so pycocotools stays a test-only reference.

Runs alternate background/foreground starting with background and walk the image in
column-major (Fortran) order. Compressed counts are COCO's LEB128-like string: 6 bits per
character (offset 48), 5 data bits plus a continuation bit, sign-extended, and from the
fourth count on each value is stored as the difference to the count two places back.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class RleError(ValueError):
    """Counts that do not describe an image of the stated size."""


def string_to_counts(text: str) -> list[int]:
    """Port of pycocotools' `rleFrString`."""
    counts: list[int] = []
    p = 0
    while p < len(text):
        value, shift, more = 0, 0, True
        while more:
            if p >= len(text):
                raise RleError("compressed counts end in the middle of a number")
            c = ord(text[p]) - 48
            if not 0 <= c < 64:
                raise RleError(f"character {text[p]!r} cannot appear in compressed counts")
            value |= (c & 0x1F) << shift
            more = bool(c & 0x20)
            p += 1
            shift += 5
            if not more and c & 0x10:
                value -= 1 << shift
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
    return counts


def decode_counts(counts: Sequence[int], height: int, width: int) -> np.ndarray:
    """A bool HxW mask from uncompressed counts; they must cover the image exactly."""
    runs = np.asarray(counts, np.int64)
    if (runs < 0).any():
        raise RleError("counts must not be negative")
    if int(runs.sum()) != height * width:
        raise RleError(f"counts cover {int(runs.sum())} pixels, the image {height}x{width}")
    values = np.arange(len(runs)) % 2 == 1
    return np.repeat(values, runs).reshape(width, height).T
