"""Read every image's header before the first write, so a bad file stops prepare early.

Decoding each photo twice would double prepare's main cost; Pillow's lazy `Image.open`
reads only the header: enough to refuse a non-image or a pixel bomb, and to check the
upright size (EXIF orientations 5-8 swap width and height) against what an annotation
file states, or against a mask's size, while nothing has been written yet.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from cityseg.config import OWN, default_workers
from cityseg.dataset.annotations.rasterise import RasterStats
from cityseg.dataset.own.classes import ClassTable
from cityseg.dataset.own.samples import FileMask, Sample
from cityseg.errors import DataError

ORIENTATION = 0x0112
SWAPPING_ORIENTATIONS = frozenset({5, 6, 7, 8})


def upright_size(source: Path | bytes, name: str) -> tuple[int, int]:
    """(height, width) as the image is shown, from its header only."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
                width, height = image.size
                turned = image.getexif().get(ORIENTATION) in SWAPPING_ORIENTATIONS
    except FileNotFoundError as exc:
        raise DataError(f"{name} does not exist") from exc
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as exc:
        raise DataError(f"{name} is not a readable image ({exc})") from exc
    if width * height > OWN.max_pixels:
        raise DataError(f"{name} has {width}x{height} pixels, more than cityseg reads")
    return (width, height) if turned else (height, width)


def check_sample(sample: Sample, table: ClassTable) -> None:
    """The image is readable; the annotation's stated size and a mask file's size fit it;
    a mask file holds only known ids or palette colours (decoded: masks are small)."""
    source = sample.image if sample.image is not None else sample.image_data
    assert source is not None
    height, width = upright_size(source, sample.name)
    if sample.stated_size is not None and sample.stated_size != (height, width):
        h, w = sample.stated_size
        turned = (w, h) == (height, width)
        hint = " (EXIF orientation turns it: was it annotated unrotated?)" if turned else ""
        raise DataError(
            f"{sample.source}: the annotation is for a {w}x{h} image but {sample.name} "
            f"is {width}x{height}{hint}"
        )
    if isinstance(sample.mask, FileMask):
        mask_size = upright_size(sample.mask.path, str(sample.mask.path))
        if mask_size != (height, width):
            raise DataError(
                f"{sample.mask.path} is {mask_size[1]}x{mask_size[0]} but its image "
                f"{sample.name} is {width}x{height}"
            )
        sample.mask.make(height, width, table, RasterStats())


def check_samples(samples: Sequence[Sample], table: ClassTable, workers: int | None) -> None:
    with ThreadPoolExecutor(max_workers=workers or default_workers()) as pool:
        for _ in pool.map(lambda sample: check_sample(sample, table), samples):
            pass
