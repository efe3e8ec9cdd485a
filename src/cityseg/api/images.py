"""What `Model.predict` accepts as an image, turned into the RGB array the predictor takes.

A path is decoded exactly as `cityseg predict` decodes files (`images.decode_image`:
OpenCV, EXIF orientation applied), so a mask from Python equals the CLI's for the same
file. A PIL image gets the same EXIF rotation (`ImageOps.exif_transpose`), because
`Image.open` does not apply it and a photo from a phone would otherwise be predicted on
its side. A numpy array is taken as the pixels the caller means: HxWx3 uint8 RGB, with
grey (HxW) and RGBA (HxWx4) converted rather than refused.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np

from cityseg import images
from cityseg.errors import UsageError

if TYPE_CHECKING:
    from PIL import Image

ImageInput: TypeAlias = "str | os.PathLike[str] | np.ndarray | Image.Image"
"""A file path, an HxWx3 uint8 RGB array (or HxW grey, HxWx4 RGBA) or a PIL image."""


def is_single(images_in: object) -> bool:
    """One image rather than several: only a list or a tuple holds several (an array is
    one image, so that a batch is never mistaken for a tall image or the reverse)."""
    return not isinstance(images_in, (list, tuple))


def as_list(images_in: ImageInput | Sequence[ImageInput]) -> list[ImageInput]:
    if isinstance(images_in, (list, tuple)):
        return list(images_in)
    return [images_in]  # type: ignore[list-item]


def to_rgb(image: ImageInput) -> np.ndarray:
    """HxWx3 uint8 RGB for any accepted input; a one-line error for anything else."""
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        return images.decode_image(images.read_bytes(path), str(path))
    if isinstance(image, np.ndarray):
        return _array_rgb(image)
    if _is_pil(image):
        return _pil_rgb(image)
    raise UsageError(
        f"cannot predict a {type(image).__name__}; give a path, a numpy array (HxWx3 uint8 "
        "RGB) or a PIL image"
    )


def _array_rgb(array: np.ndarray) -> np.ndarray:
    if array.dtype != np.uint8:
        raise UsageError(
            f"image arrays must be uint8 RGB (0..255), got {array.dtype}; for floats in "
            "0..1 pass (array * 255).round().astype(np.uint8)"
        )
    if array.ndim == 2:
        return np.repeat(array[..., None], 3, axis=-1)
    if array.ndim == 3 and array.shape[-1] in (3, 4):
        return np.ascontiguousarray(array[..., :3])
    hint = "; pass a batch as a list, list(batch)" if array.ndim == 4 else ""
    raise UsageError(f"an image array must be HxW, HxWx3 or HxWx4, got shape {array.shape}{hint}")


def _is_pil(image: object) -> bool:
    """Without importing Pillow for callers that never pass a PIL image."""
    return any(cls.__module__.startswith("PIL.") for cls in type(image).__mro__)


def _pil_rgb(image: Any) -> np.ndarray:
    from PIL import ImageOps

    upright = ImageOps.exif_transpose(image)
    return np.asarray(upright.convert("RGB"), dtype=np.uint8).copy()
