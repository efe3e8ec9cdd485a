"""One image of an own dataset and how to make its mask, whatever format it came from.

Readers run first and only describe the work: an image (a file, or bytes embedded in a
LabelMe JSON), the size the annotation states, and a mask maker. Every annotation is
parsed and every class checked before the first file is written, so bad input stops
prepare with nothing half-done.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from cityseg import images
from cityseg.dataset.annotations.coco import CocoDataset, CocoImage
from cityseg.dataset.annotations.rasterise import RasterStats, rasterise
from cityseg.dataset.annotations.shapes import Region
from cityseg.dataset.own.classes import IGNORE_VALUE, ClassTable
from cityseg.errors import DataError


class MaskMaker(Protocol):
    def make(self, height: int, width: int, table: ClassTable, stats: RasterStats) -> np.ndarray:
        """The uint8 HxW class ids for an image of this (decoded, upright) size."""
        ...


@dataclass(frozen=True)
class RegionMask:
    """VIA and LabelMe regions, painted in order: later regions over earlier ones."""

    regions: Sequence[Region]

    def make(self, height: int, width: int, table: ClassTable, stats: RasterStats) -> np.ndarray:
        return rasterise(self.regions, height, width, table.ids, stats)


@dataclass(frozen=True)
class CocoMask:
    dataset: CocoDataset
    image: CocoImage

    def make(self, height: int, width: int, table: ClassTable, stats: RasterStats) -> np.ndarray:
        """Class ids follow the dataset's own mapping, which was read with `table.ids`."""
        return self.dataset.mask(self.image, stats)


@dataclass(frozen=True)
class FileMask:
    """A mask image on disk: class ids as they are, or colours looked up in a palette."""

    path: Path
    colours: Mapping[tuple[int, int, int], int] | None = None
    """Colour -> class id, for colour masks (`--palette`); None for class-id masks."""

    def make(self, height: int, width: int, table: ClassTable, stats: RasterStats) -> np.ndarray:
        if self.colours is not None:
            return self._from_colours(images.read_image(self.path), self.colours)
        mask = images.read_mask(self.path)
        last = len(table.names) - 1
        bad = np.unique(mask[(mask > last) & (mask != IGNORE_VALUE)])
        if bad.size:
            raise DataError(
                f"{self.path}: holds class id(s) {bad[:5].tolist()} beyond the {last} "
                "classes named; name every id with --classes (255 means ignore)"
            )
        return mask

    def _from_colours(
        self, rgb: np.ndarray, colours: Mapping[tuple[int, int, int], int]
    ) -> np.ndarray:
        packed = (rgb[..., 0].astype(np.uint32) << 16) | (rgb[..., 1].astype(np.uint32) << 8)
        packed |= rgb[..., 2]
        values, inverse = np.unique(packed, return_inverse=True)
        table = np.zeros(len(values), np.uint8)
        for i, value in enumerate(values.tolist()):
            colour = ((value >> 16) & 255, (value >> 8) & 255, value & 255)
            if colour not in colours:
                known = len(colours)
                raise DataError(
                    f"{self.path}: colour {list(colour)} is not in the palette "
                    f"({known} colours); add it to --palette"
                )
            table[i] = colours[colour]
        return table[inverse.reshape(rgb.shape[:2])]


@dataclass(frozen=True)
class Sample:
    name: str
    """The image's path relative to SOURCE (or the annotation's name for embedded data)."""
    mask: MaskMaker
    image: Path | None = None
    image_data: bytes | None = field(default=None, repr=False)
    stated_size: tuple[int, int] | None = None
    """(height, width) as the annotation file records it, checked against the image."""
    source: str = ""
    """Where the annotation is, for errors."""

    def read_image(self) -> np.ndarray:
        """HxWx3 uint8 RGB, upright: EXIF orientation applied, grey/alpha/16-bit converted."""
        if self.image is not None:
            return images.read_image(self.image)
        assert self.image_data is not None
        return images.decode_image(self.image_data, f"{self.source} (embedded imageData)")
