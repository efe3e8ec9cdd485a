"""`cityseg predict`: images in, masks out, each at its input's own size.

Everything that can be checked without TensorFlow (inputs exist, output names do not
collide or overwrite an input, alpha is in range, the bundle's scheme suits `labelids`)
is checked before the model is loaded, so a typo costs milliseconds, not the seconds of
a TF import and model build. Inference itself goes through `cityseg.inference`, the one
path that evaluate and serve share, so a mask written here is the mask they would score.

A bad file among many (a truncated PNG, a text file named .png) must not throw away an
hour of work on the rest: it is skipped with a warning and listed in the report, and every
output is written atomically, so what was written stays whole whatever happens next.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from cityseg import __version__, images, labels
from cityseg.bundle import read_card
from cityseg.config import OutputFormat
from cityseg.errors import DataError, UsageError
from cityseg.fsutil import (
    atomic_write_bytes,
    atomic_write_json,
    check_output_plan,
    collect_inputs,
)
from cityseg.manifest import is_dataset
from cityseg.progress import track

Log = Callable[[str], None]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
"""What a directory input contributes (case-insensitive); files and globs are taken as given."""
JPEG_SUFFIXES = (".jpg", ".jpeg")
FILE_SUFFIXES = (".png", *JPEG_SUFFIXES)
"""What `-o` may name as a single output file."""
IMAGE_LIKE_SUFFIXES = (*FILE_SUFFIXES, ".bmp", ".gif", ".tif", ".tiff", ".webp")
"""An `-o` ending so is meant as a file, never as a folder named like one."""
CATEGORIES_SCHEME = "categories"
DEFAULT_PROJECT = Path("runs/train")

LEGEND_BACKGROUND = (32, 32, 32)
LEGEND_TEXT = (255, 255, 255)


@dataclass(frozen=True)
class PredictReport:
    written: list[Path]
    failed: list[tuple[Path, str]]
    """(input, one-line reason) for each input that could not be read; the CLI exits 1."""
    model: Path


@dataclass(frozen=True)
class PredictJob:
    source: Path
    target: Path


@dataclass
class _Decoded:
    job: PredictJob
    image: np.ndarray | None = None
    error: str | None = None


# --------------------------------------------------------------------------- inputs


def input_paths(inputs: Sequence[str | Path]) -> list[Path]:
    """The CLI's INPUT strings as paths, refusing blank ones.

    `Path("")` is `.`, so an empty argument (an unset shell variable) would otherwise
    predict the whole working directory; only a string can still tell the two apart.
    """
    if not inputs:
        raise UsageError("give at least one INPUT (image files, folders or glob patterns)")
    for item in inputs:
        if isinstance(item, str) and not item.strip():
            raise UsageError(
                f"INPUT {item!r} is empty; give image files, folders or glob patterns "
                "(write . for the current folder)"
            )
    return [Path(item) for item in inputs]


def output_path(output: str | Path) -> Path:
    """`-o` as a path; a blank one would mean the current folder, which nobody asks for."""
    if isinstance(output, str) and not output.strip():
        raise UsageError(f"-o {output!r} is empty; give an output folder or a .png file")
    return Path(output)


def collect_images(
    inputs: Sequence[Path], *, output: Path | None = None, log: Log = lambda message: None
) -> list[tuple[Path, Path]]:
    """(image file, its path relative to the output folder) for every input.

    Directories contribute their photos recursively and keep their sub-folders; what
    `PhotoFilter` takes for a label, a mask or an earlier output is skipped, and one line
    says how many and why. Files and glob matches are taken as given and land flat. A path
    that is none of these is a one-line DataError now, before any model is loaded.
    """
    found: list[tuple[Path, Path]] = []
    skipped: Counter[str] = Counter()
    for item in inputs:
        keep = PhotoFilter(item, output)
        found.extend(collect_inputs([item], keep, keep.hint))
        skipped.update(keep.skipped)
    if skipped:
        log(f"note: folder inputs {describe_skipped(skipped)}; name files to predict them anyway")
    return found


def plan_jobs(
    inputs: Sequence[Path],
    output: Path,
    *,
    format: OutputFormat,
    log: Log = lambda message: None,
) -> list[PredictJob]:
    """One job per input; refuses plans that would overwrite an input or write a file twice.

    An `-o` with an image suffix is a file whatever the inputs, never a folder named like
    one: it takes exactly one image.
    """
    sources = collect_images(inputs, output=output, log=log)
    if names_a_file(output):
        jobs = [_single_job(sources, output, format)]
    else:
        if output.is_file():
            raise UsageError(f"-o {output} is a file; several inputs need an output folder")
        jobs = [
            PredictJob(source, output / relative.parent / f"{relative.stem}.png")
            for source, relative in sources
        ]
    check_output_plan(((job.source, job.target) for job in jobs), "predict")
    return jobs


def names_a_file(output: Path) -> bool:
    return output.suffix.lower() in IMAGE_LIKE_SUFFIXES


def _single_job(
    sources: Sequence[tuple[Path, Path]], output: Path, format: OutputFormat
) -> PredictJob:
    suffix = output.suffix.lower()
    if len(sources) != 1:
        raise UsageError(
            f"-o {output} names one file but {len(sources)} images were given; "
            f"give a folder for several (e.g. -o {output.with_suffix('')}/)"
        )
    if suffix not in FILE_SUFFIXES:
        raise UsageError(f"-o {output}: predict writes .png or .jpg files, not {suffix}")
    if suffix in JPEG_SUFFIXES and format in (OutputFormat.ids, OutputFormat.labelids):
        raise UsageError(
            f"-o {output}: JPEG would blur the {format.value} values; write a .png instead"
        )
    return PredictJob(sources[0][0], output)


# --------------------------------------------------------------------------- folder inputs

LABEL_NAME_ENDINGS = (
    "_labelids",
    "_labeltrainids",
    "_instanceids",
    "_instancetrainids",
    "_color",
    "_colour",
)
"""Stems (lower-cased) of Cityscapes ground truth and of remap's colour PNGs."""
LABEL_NAME_PARTS = ("_gtfine_", "_gtcoarse_")
DATASET_LABEL_FOLDERS = frozenset({"labelIds", "masks"})
OUTPUT_MARKER = ".cityseg-predict.json"
"""Left in every output folder predict creates, so later folder inputs skip its masks."""
MASK_COLOUR_TYPES = frozenset({0, 3, 4})
"""PNG IHDR colour types grey, palette, grey+alpha: how masks are stored, photos are not."""

SKIP_REASONS = {
    "hidden": "hidden",
    "output": "in cityseg predict output folders",
    "dataset": "in prepared labelIds/ or masks/ folders",
    "name": "named like labels (_labelIds, _color, _gtFine_...)",
    "mask": "grayscale/palette mask PNGs",
}


def describe_skipped(skipped: Counter[str]) -> str:
    """The `skipped N: 2 hidden, ...` text, in SKIP_REASONS order so that runs read alike."""
    parts = [f"{skipped[key]} {text}" for key, text in SKIP_REASONS.items() if skipped[key]]
    return f"skipped {sum(skipped.values())}: {', '.join(parts)}"


class PhotoFilter:
    """Which images under one folder input are photos to predict.

    A folder input is "the pictures in there", but folders also hold what cityseg and
    Cityscapes put beside them (labelIds, masks, earlier predictions); predicting those
    writes nonsense and can feed outputs back in as inputs. Checks run cheapest first,
    folder verdicts are cached, and only PNG headers are read, never whole images.
    """

    def __init__(self, root: Path, output: Path | None) -> None:
        self.root = root
        self.output = output.resolve() if output is not None else None
        self.skipped: Counter[str] = Counter()
        self._folders: dict[Path, str | None] = {}

    def __call__(self, path: Path) -> bool:
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            return False
        reason = self.reason(path)
        if reason is not None:
            self.skipped[reason] += 1
        return reason is None

    def hint(self, folder: Path) -> str:
        """What an empty folder lacked, with what was skipped in it."""
        if not self.skipped:
            return "PNG or JPEG files"
        return f"PNG or JPEG photos ({describe_skipped(self.skipped)})"

    def reason(self, path: Path) -> str | None:
        if any(part.startswith(".") for part in path.relative_to(self.root).parts):
            return "hidden"
        folder_reason = self._folder_reason(path.parent.absolute())
        if folder_reason is not None:
            return folder_reason
        stem = path.stem.lower()
        if stem.endswith(LABEL_NAME_ENDINGS) or any(p in stem for p in LABEL_NAME_PARTS):
            return "name"
        header = images.png_header(path) if path.suffix.lower() == ".png" else None
        if header is not None and header.colour_type in MASK_COLOUR_TYPES:
            return "mask"
        return None

    def _folder_reason(self, folder: Path) -> str | None:
        """A folder's verdict is its own or its parent's: outputs and datasets nest."""
        if folder not in self._folders:
            own = _own_folder_reason(folder, self.output)
            parent = folder.parent
            self._folders[folder] = own or (
                None if parent == folder else self._folder_reason(parent)
            )
        return self._folders[folder]


def _own_folder_reason(folder: Path, output: Path | None) -> str | None:
    if (folder / OUTPUT_MARKER).is_file() or (output is not None and folder.resolve() == output):
        return "output"
    if folder.name in DATASET_LABEL_FOLDERS:
        above = folder.parent
        if is_dataset(above) or (above.parent.name == "sized" and is_dataset(above.parent.parent)):
            return "dataset"
    return None


def fresh_output_folder(output: Path) -> bool:
    """Whether `output` is a folder this run may mark as cityseg's: new, empty or marked.

    A folder that already holds other files (the user's photos, say) is never marked, or
    a later folder input would skip those files as outputs.
    """
    if not output.exists():
        return True
    if not output.is_dir():
        return False
    return (output / OUTPUT_MARKER).is_file() or next(output.iterdir(), None) is None


def mark_output_folder(output: Path, model: Path, format: OutputFormat) -> None:
    atomic_write_json(
        output / OUTPUT_MARKER,
        {
            "written_by": f"cityseg {__version__} predict",
            "model": str(model),
            "format": format.value,
        },
    )


# --------------------------------------------------------------------------- rendering


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


# --------------------------------------------------------------------------- pipeline


def _decode(job: PredictJob) -> _Decoded:
    try:
        return _Decoded(
            job, image=images.decode_image(images.read_bytes(job.source), str(job.source))
        )
    except DataError as exc:
        return _Decoded(job, error=str(exc))


def _batches(jobs: Sequence[PredictJob], size: int) -> Iterator[Sequence[PredictJob]]:
    for start in range(0, len(jobs), size):
        yield jobs[start : start + size]


def predict_paths(
    inputs: Sequence[str | Path],
    output: str | Path,
    *,
    model: Path | None = None,
    project: Path = DEFAULT_PROJECT,
    format: OutputFormat = OutputFormat.colour,
    alpha: float = 0.5,
    legend: bool = False,
    tta_flip: bool = False,
    batch: int = 4,
    show_progress: bool = True,
    log: Log = lambda message: None,
) -> PredictReport:
    """The `cityseg predict` entry point: every input image -> one output file.

    Inputs are resolved and checked first (missing paths raise DataError), then the
    model is loaded; images that cannot be decoded are skipped with a
    `log("warning: ...")` and listed in `failed`, the rest are written. Strings are
    accepted so that a blank argument is refused rather than read as `.`.
    """
    format = OutputFormat(format)
    paths, output = input_paths(inputs), output_path(output)
    if batch < 1:
        raise UsageError(f"--batch must be at least 1, got {batch}")
    check_alpha(alpha)
    jobs = plan_jobs(paths, output, format=format, log=log)
    mark = not names_a_file(output) and fresh_output_folder(output)

    from cityseg.inference import load_predictor, resolve_model

    bundle_path = resolve_model(model, project, log)
    _, card = read_card(bundle_path)
    if format is OutputFormat.labelids and card.get("scheme") != CATEGORIES_SCHEME:
        raise UsageError(
            f"--format labelids needs a model trained on the {CATEGORIES_SCHEME!r} scheme; "
            f"{bundle_path} was trained on {card.get('scheme')!r} (use --format ids)"
        )
    if legend and format in (OutputFormat.ids, OutputFormat.labelids):
        log(f"note: --legend is ignored for --format {format.value} (it would corrupt the ids)")

    predictor = load_predictor(bundle_path, project=project, tta_flip=tta_flip, log=log)
    palette, class_names = predictor.palette, predictor.classes

    written: list[Path] = []
    failed: list[tuple[Path, str]] = []

    def finish(item: _Decoded, mask: np.ndarray) -> Path:
        assert item.image is not None
        array = render(
            item.image,
            mask,
            format=format,
            palette=palette,
            class_names=class_names,
            alpha=alpha,
            legend=legend,
        )
        atomic_write_bytes(item.job.target, encode(array, item.job.target.suffix))
        return item.job.target

    if mark:
        mark_output_folder(output, bundle_path, format)
    chunks = list(_batches(jobs, batch))
    # OpenCV's codecs release the GIL: decode and encode on two threads beside the model.
    with ThreadPoolExecutor(max_workers=2) as pool:
        for chunk in track(chunks, len(chunks), f"predict {len(jobs)}", enabled=show_progress):
            decoded = list(pool.map(_decode, chunk))
            good = [item for item in decoded if item.image is not None]
            for item in decoded:
                if item.error is not None:
                    log(f"warning: {item.error}; skipped")
                    failed.append((item.job.source, item.error))
            if not good:
                continue
            masks = predictor.predict([item.image for item in good if item.image is not None])
            written.extend(pool.map(finish, good, masks))
    return PredictReport(written=written, failed=failed, model=bundle_path)
