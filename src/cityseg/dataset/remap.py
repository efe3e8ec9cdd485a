"""labelIds masks -> scheme class ids, with one 256-entry lookup table.

The notebooks this replaces called `np.vectorize` over a dict, about half a second per
1024x2048 mask; a table lookup does the same mapping exactly, in milliseconds
(`benchmarks/remap.py` measures it). Files are processed on a thread pool because
OpenCV's PNG codecs release the GIL.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from cityseg import images
from cityseg.config import UnknownPolicy, default_workers
from cityseg.dataset import manifest, sized
from cityseg.dataset.schemes import Scheme
from cityseg.errors import DataError, UnknownLabelError, UsageError
from cityseg.fsutil import check_output_plan, collect_inputs
from cityseg.progress import run_parallel


def remap_array(
    label_ids: np.ndarray,
    scheme: Scheme,
    *,
    unknown: UnknownPolicy = UnknownPolicy.error,
    name: str = "mask",
) -> np.ndarray:
    """Map a uint8 labelIds array to class ids; ids the scheme does not know are refused."""
    if label_ids.dtype != np.uint8:
        raise DataError(f"{name} has {label_ids.dtype} pixels; label masks must be uint8")
    unknown_pixels = cv2.LUT(label_ids, (~scheme.known).astype(np.uint8))
    mapped: np.ndarray = cv2.LUT(label_ids, scheme.lookup)
    if cv2.countNonZero(unknown_pixels):
        if unknown is UnknownPolicy.error:
            values = sorted(int(v) for v in np.unique(label_ids[unknown_pixels > 0]))
            shown = ", ".join(map(str, values[:10])) + (" ..." if len(values) > 10 else "")
            raise UnknownLabelError(
                f"{name} holds id(s) {shown} that scheme {scheme.name!r} does not map "
                "(use --unknown void to map them to void)"
            )
        mapped[unknown_pixels > 0] = scheme.void_value
    return mapped


@dataclass(frozen=True)
class RemapJob:
    source: Path
    target: Path
    colour_target: Path | None


@dataclass(frozen=True)
class RemapReport:
    written: int
    scheme: str
    output: Path
    dataset: bool


def remap_file(job: RemapJob, scheme: Scheme, unknown: UnknownPolicy) -> None:
    ids = remap_array(images.read_mask(job.source), scheme, unknown=unknown, name=str(job.source))
    images.write_mask(job.target, ids)
    if job.colour_target is not None:
        images.write_rgb(job.colour_target, images.colourise(ids, scheme.palette))


def run_jobs(
    jobs: Sequence[RemapJob],
    scheme: Scheme,
    *,
    unknown: UnknownPolicy = UnknownPolicy.error,
    workers: int | None = None,
    show_progress: bool = True,
) -> int:
    """Run every job on a thread pool; the first failure stops the rest and is raised.

    Each output is written atomically, so files finished before a failure stay valid.
    """
    run_parallel(
        lambda job: remap_file(job, scheme, unknown),
        jobs,
        f"remap {scheme.name}",
        workers=workers or default_workers(),
        show_progress=show_progress,
    )
    return len(jobs)


def output_name(source: Path, scheme: Scheme) -> tuple[str, str]:
    """Names for the class-id and colour PNGs: `x_labelIds.png` -> `x_<scheme>.png`."""
    stem = source.stem
    if stem.endswith("_labelIds"):
        stem = stem[: -len("labelIds")] + scheme.name
    return f"{stem}.png", f"{stem}_colour.png"


def collect_sources(inputs: Sequence[Path], pattern: str) -> list[tuple[Path, Path]]:
    """(source file, path relative to the output folder) for every input file."""
    return collect_inputs(
        inputs, lambda path: path.match(pattern), f"files matching {pattern!r} (see --glob)"
    )


def plan_jobs(
    inputs: Sequence[Path], output: Path, scheme: Scheme, *, pattern: str, colour: bool
) -> list[RemapJob]:
    sources = collect_sources(inputs, pattern)
    single_file = len(sources) == 1 and inputs[0].is_file() and output.suffix.lower() == ".png"
    jobs: list[RemapJob] = []
    if single_file:
        source = sources[0][0]
        colour_target = output.with_name(f"{output.stem}_colour.png") if colour else None
        jobs.append(RemapJob(source, output, colour_target))
    else:
        if output.is_file():
            raise UsageError(f"-o {output} is a file; several inputs need an output folder")
        for source, relative in sources:
            ids_name, colour_name = output_name(relative, scheme)
            folder = output / relative.parent
            jobs.append(
                RemapJob(source, folder / ids_name, folder / colour_name if colour else None)
            )
    check_output_plan(
        (
            (job.source, target)
            for job in jobs
            for target in (job.target, job.colour_target)
            if target is not None
        ),
        "remap",
    )
    return jobs


def remap_dataset(
    root: Path,
    scheme: Scheme,
    *,
    unknown: UnknownPolicy = UnknownPolicy.error,
    colour: bool = False,
    workers: int | None = None,
    show_progress: bool = True,
) -> RemapReport:
    """Add (or refresh) `masks/<scheme>/` in a prepared dataset and record it in the manifest.

    Training-size copies (`prepare --size`) get the scheme's masks too, resized from the
    new full-size masks, so training at a recorded size keeps reading copies whatever
    the scheme; they are rewritten, not skipped, since a refresh may change every mask.
    """

    index = manifest.read_manifest(root)
    entries = manifest.iter_entries(index)
    if not manifest.is_cityscapes(index) or not all("labelIds" in e for e in entries):
        raise DataError(
            f"{root} holds no Cityscapes labelIds to remap (it was prepared from "
            f"{index.get('source', {}).get('format', 'another format')} annotations); "
            "choose its classes with `cityseg prepare --classes` instead"
        )
    mask_dir = Path("masks") / scheme.name
    jobs = []
    for entry in entries:
        relative = mask_dir / f"{entry['key']}.png"
        colour_target = root / "masks" / f"{scheme.name}_colour" / f"{entry['key']}.png"
        jobs.append(
            RemapJob(root / entry["labelIds"], root / relative, colour_target if colour else None)
        )
        entry.setdefault("masks", {})[scheme.name] = relative.as_posix()
    run_jobs(jobs, scheme, unknown=unknown, workers=workers, show_progress=show_progress)
    sized.record_scheme(index, scheme.name)
    copies = sized.plan_copies(
        root, index, schemes=[scheme.name], with_images=False, overwrite=True
    )
    sized.write_copies(copies, workers=workers, show_progress=show_progress)
    index.setdefault("schemes", {})[scheme.name] = scheme.to_manifest()
    manifest.write_manifest(root, index)
    return RemapReport(written=len(jobs), scheme=scheme.name, output=root / mask_dir, dataset=True)


def remap_paths(
    inputs: Sequence[Path],
    output: Path | None,
    scheme: Scheme,
    *,
    pattern: str = "*_labelIds.png",
    colour: bool = False,
    unknown: UnknownPolicy = UnknownPolicy.error,
    workers: int | None = None,
    show_progress: bool = True,
) -> RemapReport:
    """The `cityseg remap` entry point: a prepared dataset in place, or files into `output`."""
    if not inputs:
        raise UsageError("give at least one INPUT (files, folders or a prepared dataset)")
    if len(inputs) == 1 and inputs[0].is_dir() and manifest.is_dataset(inputs[0]):
        if output is not None:
            raise UsageError("a prepared dataset is remapped in place (masks/<scheme>/); drop -o")
        return remap_dataset(
            inputs[0],
            scheme,
            unknown=unknown,
            colour=colour,
            workers=workers,
            show_progress=show_progress,
        )
    if output is None:
        raise UsageError("give -o OUT: a folder, or a .png file for a single input")
    jobs = plan_jobs(inputs, output, scheme, pattern=pattern, colour=colour)
    written = run_jobs(jobs, scheme, unknown=unknown, workers=workers, show_progress=show_progress)
    return RemapReport(written=written, scheme=scheme.name, output=output, dataset=False)
