"""Every default in one place, as frozen dataclasses, plus the option choices.

The CLI reads its defaults from here and run directories save these objects, so a
default changed here changes everywhere at once. This module imports nothing heavy:
`cityseg --help` builds its option list from it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import Enum
from pathlib import Path


class UnknownPolicy(str, Enum):
    """What remap does with a pixel id that the scheme does not map."""

    error = "error"
    void = "void"


def default_workers() -> int:
    """Threads for file-parallel work: OpenCV's PNG codecs release the GIL."""
    return max(1, min(8, os.cpu_count() or 1))


@dataclass(frozen=True)
class RemapConfig:
    scheme: str = "categories"
    glob: str = "*_labelIds.png"
    colour: bool = False
    unknown: UnknownPolicy = UnknownPolicy.error


@dataclass(frozen=True)
class PrepareConfig:
    output: Path = Path("data/cityscapes")
    val_ratio: float = 0.15
    seed: int = 0
    limit: int | None = None
    fraction: float | None = None
    verify: bool = True
    scheme: str = "categories"
    max_member_bytes: int = 256 * 1024 * 1024
    """A Cityscapes PNG is at most a few MB; anything this large in a zip is not one."""
    max_compression_ratio: int = 200
    """Deflate rarely beats 100:1 on real PNGs; far beyond that is a zip bomb."""


@dataclass(frozen=True)
class SyntheticConfig:
    output: Path = Path("cityseg-demo")
    height: int = 128
    width: int = 256
    images_per_city: int = 3
    seed: int = 0
