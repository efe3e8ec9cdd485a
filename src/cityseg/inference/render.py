"""A predicted mask made into what users look at or read: colour, ids, an overlay on the
photo, Cityscapes labelIds, a legend, and PNG or JPEG bytes.

`cityseg predict` writes these to files and `cityseg serve` answers with them, so both
render through here and a mask looks the same whichever way it was asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from cityseg import images
from cityseg.config import OutputFormat
from cityseg.dataset import labels
from cityseg.errors import DataError, UsageError

JPEG_SUFFIXES = (".jpg", ".jpeg")
LEGEND_BACKGROUND = (32, 32, 32)
LEGEND_TEXT = (255, 255, 255)


def check_alpha(alpha: float) -> None:
    if not 0.0 <= alpha <= 1.0:
        raise UsageError(f"--alpha {alpha} is outside [0, 1] (0 = photo only, 1 = mask only)")


@dataclass(frozen=True)
class _LegendLayout:
    """Sizes for a legend on an image of a given shape, shared by the box and the drawing."""

    scale: float
    thickness: int
    text_h: int
    row: int
    pad: int
    swatch: int

    @classmethod
    def for_shape(cls, shape: tuple[int, ...]) -> _LegendLayout:
        # Text about 1/50 of the shorter side: readable on 2048x1024, still fits on 96x48.
        scale = max(0.3, min(shape[0], shape[1]) / 1024 * 0.8)
        thickness = max(1, round(scale * 1.5))
        (_, text_h), baseline = cv2.getTextSize("Hg", cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        return cls(
            scale=scale,
            thickness=thickness,
            text_h=text_h,
            row=text_h + baseline + max(2, round(6 * scale)),
            pad=max(2, round(8 * scale)),
            swatch=text_h + baseline,
        )

    def size(self, names: Sequence[str]) -> tuple[int, int]:
        """(width, height) of the whole box for these names."""
        widest = max(
            cv2.getTextSize(name, cv2.FONT_HERSHEY_SIMPLEX, self.scale, self.thickness)[0][0]
            for name in names
        )
        width = self.pad + self.swatch + self.pad + widest + self.pad
        height = 2 * self.pad + self.row * (len(names) - 1) + self.swatch
        return width, height


def _legend_entries(class_names: Sequence[str], present: set[int] | None) -> list[int]:
    return [i for i in range(len(class_names)) if present is None or i in present]


def legend_box(
    shape: tuple[int, ...], class_names: Sequence[str], present: set[int] | None = None
) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1), exclusive ends, of the legend `draw_legend` would draw; None if empty.

    Public so that callers (and tests) know exactly which pixels a legend may change.
    """
    entries = _legend_entries(class_names, present)
    if not entries:
        return None
    layout = _LegendLayout.for_shape(shape)
    width, height = layout.size([class_names[i] for i in entries])
    x0 = y0 = layout.pad
    return x0, y0, min(shape[1], x0 + width), min(shape[0], y0 + height)


def draw_legend(
    image: np.ndarray,
    class_names: Sequence[str],
    palette: np.ndarray,
    present: set[int] | None = None,
) -> np.ndarray:
    """A copy of RGB `image` with a swatch-and-name box (top-left) for the `present` classes.

    Only the classes in the image are listed (all when `present` is None), so the legend
    stays small and answers the reader's question ("what is that blue?"). Pixels outside
    `legend_box` are untouched; on an image too small for it the box is clipped.
    """
    out = image.copy()
    box = legend_box(image.shape, class_names, present)
    if box is None or box[2] <= box[0] or box[3] <= box[1]:
        return out
    x0, y0, x1, y1 = box
    entries = _legend_entries(class_names, present)
    layout = _LegendLayout.for_shape(image.shape)
    width, height = layout.size([class_names[i] for i in entries])
    # Draw on a canvas of the full box and copy back only what fits: text can never
    # reach pixels outside the box, whatever OpenCV's glyphs do at the edges.
    canvas = np.empty((height, width, 3), dtype=np.uint8)
    canvas[:] = LEGEND_BACKGROUND
    pad, swatch = layout.pad, layout.swatch
    for n, class_id in enumerate(entries):
        top = pad + n * layout.row
        colour = tuple(int(c) for c in palette[class_id]) if class_id < len(palette) else (0, 0, 0)
        corner = (pad + swatch - 1, top + swatch - 1)
        cv2.rectangle(canvas, (pad, top), corner, colour, cv2.FILLED)
        cv2.rectangle(canvas, (pad, top), corner, LEGEND_TEXT, 1)
        cv2.putText(
            canvas,
            class_names[class_id],
            (pad + swatch + pad, top + layout.text_h),
            cv2.FONT_HERSHEY_SIMPLEX,
            layout.scale,
            LEGEND_TEXT,
            layout.thickness,
            cv2.LINE_AA,
        )
    out[y0:y1, x0:x1] = canvas[: y1 - y0, : x1 - x0]
    return out


def _labelid_table(ids_to_labelids: np.ndarray | None) -> np.ndarray:
    source = labels.CATEGORY_TO_LABEL_ID if ids_to_labelids is None else ids_to_labelids
    table = np.zeros(256, dtype=np.uint8)  # unknown class ids -> 0 'unlabeled' (void)
    table[: len(source)] = source
    return table


def render(
    image: np.ndarray,
    mask: np.ndarray,
    *,
    format: OutputFormat,
    palette: np.ndarray,
    class_names: Sequence[str],
    alpha: float = 0.5,
    legend: bool = False,
    ids_to_labelids: np.ndarray | None = None,
) -> np.ndarray:
    """The array to write for one image: pure numpy/OpenCV, so it is tested without TF.

    `image` is the RGB input, `mask` the class ids at the same size. `alpha` is the
    weight of the colour mask in an overlay. `legend` is applied to colour and overlay
    only: drawing text into ids or labelIds would corrupt the values programs read.
    `ids_to_labelids` maps class ids to labelIds (default: categories' representatives).
    """
    if image.shape[:2] != mask.shape[:2]:
        raise ValueError(f"mask {mask.shape[:2]} and image {image.shape[:2]} sizes differ")
    if format is OutputFormat.ids:
        return mask
    if format is OutputFormat.labelids:
        result: np.ndarray = _labelid_table(ids_to_labelids)[mask]
        return result
    colour = images.colourise(mask, palette)
    if format is OutputFormat.overlay:
        check_alpha(alpha)
        colour = cv2.addWeighted(image, 1.0 - alpha, colour, alpha, 0.0)
    if legend:
        present = {int(v) for v in np.flatnonzero(np.bincount(mask.ravel(), minlength=1))}
        colour = draw_legend(colour, class_names, palette, present)
    return colour


def encode(array: np.ndarray, suffix: str) -> bytes:
    """PNG (lossless, what masks need) or, for a .jpg target, JPEG of an RGB array."""
    if suffix.lower() in JPEG_SUFFIXES:
        bgr = cv2.cvtColor(array, cv2.COLOR_RGB2BGR) if array.ndim == 3 else array
        ok, buffer = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])
        if not ok:  # pragma: no cover - OpenCV fails only on unsupported dtypes
            raise DataError(f"cannot encode an array of shape {array.shape} as JPEG")
        return buffer.tobytes()
    return images.encode_png(array, rgb=array.ndim == 3)
