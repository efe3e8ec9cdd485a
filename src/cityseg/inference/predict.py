"""`cityseg predict`: images in, masks out, each at its input's own size.

Everything that can be checked without TensorFlow (inputs exist, output names do not
collide or overwrite an input, alpha is in range, the bundle's scheme suits `labelids`)
is checked before the model is loaded, so a typo costs milliseconds, not the seconds of
a TF import and model build. Inference itself goes through `cityseg.inference.predictor`, the one
path that evaluate and serve share, so a mask written here is the mask they would score.

A bad file among many (a truncated PNG, a text file named .png) must not throw away an
hour of work on the rest: it is skipped with a warning and listed in the report, and every
output is written atomically, so what was written stays whole whatever happens next.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cityseg import __version__, images
from cityseg.config import DEFAULT_PROJECT, PREDICT, OutputFormat, PredictConfig
from cityseg.dataset.manifest import is_dataset
from cityseg.errors import DataError, UsageError
from cityseg.fsutil import (
    atomic_write_bytes,
    atomic_write_json,
    check_output_plan,
    collect_inputs,
)
from cityseg.inference.bundle import read_card
from cityseg.inference.render import JPEG_SUFFIXES, check_alpha, encode, render
from cityseg.inference.sliding import Window
from cityseg.progress import track

if TYPE_CHECKING:
    from cityseg.inference.predictor import Predictor

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
"""What a directory input contributes (case-insensitive); files and globs are taken as given."""
FILE_SUFFIXES = (".png", *JPEG_SUFFIXES)
"""What `-o` may name as a single output file."""
IMAGE_LIKE_SUFFIXES = (*FILE_SUFFIXES, ".bmp", ".gif", ".tif", ".tiff", ".webp")
"""An `-o` ending so is meant as a file, never as a folder named like one."""
CATEGORIES_SCHEME = "categories"


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
    inputs: Sequence[Path], *, output: Path | None = None
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
        logger.info(
            f"note: folder inputs {describe_skipped(skipped)}; name files to predict them anyway"
        )
    return found


def plan_jobs(
    inputs: Sequence[Path],
    output: Path,
    *,
    format: OutputFormat,
) -> list[PredictJob]:
    """One job per input; refuses plans that would overwrite an input or write a file twice.

    An `-o` with an image suffix is a file whatever the inputs, never a folder named like
    one: it takes exactly one image.
    """
    sources = collect_images(inputs, output=output)
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
    config: PredictConfig = PREDICT,
    show_progress: bool = True,
    loader: Callable[[], Predictor] | None = None,
    slide: Window | None = None,
) -> PredictReport:
    """The `cityseg predict` entry point: every input image -> one output file.

    Inputs are resolved and checked first (missing paths raise DataError), then the
    model is loaded; images that cannot be decoded are skipped with a
    warning (logged) and listed in `failed`, the rest are written. Strings are
    accepted so that a blank argument is refused rather than read as `.`. `config` holds
    what the command's options choose (format, alpha, legend, tta, batch), passed on as
    one. `loader` gives the predictor of a model already open (the Python API's `Model`,
    which keeps it loaded) instead of loading `model`; it is called only once the inputs
    are checked.
    """
    format, batch = OutputFormat(config.format), config.batch
    paths, output = input_paths(inputs), output_path(output)
    if batch < 1:
        raise UsageError(f"--batch must be at least 1, got {batch}")
    check_alpha(config.alpha)
    jobs = plan_jobs(paths, output, format=format)
    mark = not names_a_file(output) and fresh_output_folder(output)

    from cityseg.inference.predictor import load_predictor, resolve_model

    bundle_path = resolve_model(model, project)
    _check_model(bundle_path, format, config.legend)
    if loader is not None:
        predictor = loader()
    else:
        predictor = load_predictor(
            bundle_path, project=project, tta_flip=config.tta_flip, window=slide
        )
    if mark:
        mark_output_folder(output, bundle_path, format)
    style = _Style(format, predictor.palette, predictor.classes, config.alpha, config.legend)
    written, failed = _run_jobs(jobs, predictor, style, batch, show_progress)
    return PredictReport(written=written, failed=failed, model=bundle_path)


@dataclass(frozen=True)
class _Style:
    """How each mask is rendered: one set of options for the whole run."""

    format: OutputFormat
    palette: np.ndarray
    class_names: list[str]
    alpha: float
    legend: bool

    def write(self, item: _Decoded, mask: np.ndarray) -> Path:
        assert item.image is not None
        array = render(
            item.image,
            mask,
            format=self.format,
            palette=self.palette,
            class_names=self.class_names,
            alpha=self.alpha,
            legend=self.legend,
        )
        atomic_write_bytes(item.job.target, encode(array, item.job.target.suffix))
        return item.job.target


def _run_jobs(
    jobs: Sequence[PredictJob],
    predictor: Predictor,
    style: _Style,
    batch: int,
    show_progress: bool,
) -> tuple[list[Path], list[tuple[Path, str]]]:
    """(written, failed): unreadable inputs are warned of and skipped, not fatal."""
    written: list[Path] = []
    failed: list[tuple[Path, str]] = []
    chunks = list(_batches(jobs, batch))
    # OpenCV's codecs release the GIL: decode and encode on two threads beside the model.
    with ThreadPoolExecutor(max_workers=2) as pool:
        for chunk in track(chunks, len(chunks), f"predict {len(jobs)}", enabled=show_progress):
            decoded = list(pool.map(_decode, chunk))
            good = [item for item in decoded if item.image is not None]
            for item in decoded:
                if item.error is not None:
                    logger.warning(f"warning: {item.error}; skipped")
                    failed.append((item.job.source, item.error))
            if not good:
                continue
            masks = predictor.predict([item.image for item in good if item.image is not None])
            written.extend(pool.map(style.write, good, masks))
    return written, failed


def _check_model(bundle_path: Path, format: OutputFormat, legend: bool) -> None:
    """What the card alone can refuse (or warn of), before the model is loaded."""
    _, card = read_card(bundle_path)
    if format is OutputFormat.labelids and card.get("scheme") != CATEGORIES_SCHEME:
        raise UsageError(
            f"--format labelids needs a model trained on the {CATEGORIES_SCHEME!r} scheme; "
            f"{bundle_path} was trained on {card.get('scheme')!r} (use --format ids)"
        )
    if legend and format in (OutputFormat.ids, OutputFormat.labelids):
        logger.info(
            f"note: --legend is ignored for --format {format.value} (it would corrupt the ids)"
        )
