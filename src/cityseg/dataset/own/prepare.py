"""Write an own dataset: images as upright RGB PNGs, masks, then `manifest.json` last.

Everything is read and checked first (see `formats`), so bad annotations stop prepare
before the first write. Files are written atomically; a plan stamp written before them
lets an interrupted run resume, while a run with other inputs or options rewrites every
file before it replaces the manifest, so the manifest never points at a mix.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cityseg import __version__, images
from cityseg.config import OWN, default_workers
from cityseg.dataset import manifest, sized
from cityseg.dataset.annotations.rasterise import RasterStats
from cityseg.dataset.own import splits
from cityseg.dataset.own.classes import ClassTable
from cityseg.dataset.own.files import ImageIndex, dataset_keys, split_folder
from cityseg.dataset.own.formats import read_source
from cityseg.dataset.own.options import OwnDataOptions
from cityseg.dataset.own.probe import check_samples
from cityseg.dataset.own.readers import Collected
from cityseg.dataset.own.samples import Sample
from cityseg.dataset.prepare import PrepareReport, SplitSummary
from cityseg.errors import DataError, UsageError
from cityseg.fsutil import atomic_write_json, remove_stale_parts
from cityseg.progress import run_parallel

logger = logging.getLogger(__name__)
PLAN_STAMP = ".cityseg-plan.json"
STAGING = ".cityseg-staging"


@dataclass(frozen=True)
class _Job:
    sample: Sample
    key: str
    image: Path
    mask: Path


def prepare_own(
    source: Path,
    output: Path,
    options: OwnDataOptions,
    *,
    sizes: Sequence[tuple[int, int]] = (),
    workers: int | None = None,
    show_progress: bool = True,
) -> PrepareReport:
    """Prepare `output` from the annotated images under `source` (docs/datasets.md)."""
    options.check()
    if not source.exists():
        raise DataError(f"{source} does not exist")
    found, table, index = read_source(source, output, options)
    _report_reading(found, table, index, options)
    keys = dataset_keys(sample.name for sample in found.samples)
    planned = _plan(source, found, table, keys, options)
    previous = manifest.existing_manifest(output)
    if previous is None and (output / STAGING / PLAN_STAMP).is_file():
        _finish_swap(output / STAGING, output)  # an earlier run stopped while swapping
    sized.record_sizes(planned, [*sized.recorded_sizes(previous), *sizes])
    final = [_job(output, s, keys[s.name]) for s in found.samples]
    if _same_files(previous, planned) and all(_done(job) for job in final):
        if sized.copies_present(output, planned):
            return _report(output, True, planned)
        return _finish(output, planned, workers, show_progress, overwrite=False)
    check_samples(found.samples, table, workers)
    _check_output(output, planned, previous)
    # A dataset already there stays whole until the new files are all written: they go to
    # a staging folder first, then replace the old ones.
    root = output if previous is None else output / STAGING
    resume = _claim(root, planned)
    jobs = [_job(root, s, keys[s.name]) for s in found.samples]
    stats = _write(jobs, table, resume, workers, show_progress)
    _report_writing(stats)
    if root != output:
        (output / manifest.MANIFEST_NAME).unlink(missing_ok=True)
        _finish_swap(root, output)
    return _finish(output, planned, workers, show_progress, overwrite=not resume or root != output)


def _finish(
    output: Path,
    planned: dict[str, Any],
    workers: int | None,
    show_progress: bool,
    *,
    overwrite: bool,
) -> PrepareReport:
    """Training-size copies, then the manifest: the last write, which makes it a dataset."""
    copies = sized.plan_copies(output, planned, overwrite=overwrite)
    sized.write_copies(copies, workers=workers, show_progress=show_progress)
    manifest.write_manifest(output, planned)
    return _report(output, False, planned)


def _same_files(previous: dict[str, Any] | None, planned: dict[str, Any]) -> bool:
    """Whether the images and masks would come out the same (sizes may differ)."""
    if previous is None:
        return False
    return _comparable(previous, manifest.SIZED) == _comparable(planned, manifest.SIZED)


def _report_reading(
    found: Collected, table: ClassTable, index: ImageIndex, options: OwnDataOptions
) -> None:
    if not found.samples:
        raise DataError("no annotated image was found; check SOURCE and --annotations")
    named = ", ".join(f"{i} {name}" for i, name in enumerate(table.names))
    logger.info(
        f"classes ({table.origin}): {named}"
        + (f"; ignored: {table.ignore}" if table.ignore else "")
    )
    if found.missing:
        logger.warning(
            f"warning: {len(found.missing)} annotated image(s) not found under {index.root}, "
            f"skipped (e.g. {found.missing[0]})"
        )
    used = {sample.image for sample in found.samples}
    unannotated = [p for p in index.paths if p not in used]
    if unannotated:
        logger.warning(
            f"warning: {len(unannotated)} image(s) without annotations skipped "
            f"(e.g. {index.relative(unannotated[0])})"
        )
    for why, count in sorted(found.skipped.items()):
        logger.warning(f"warning: skipped {count} {why} region(s): they have no area")


def _report_writing(stats: list[RasterStats]) -> None:
    clipped = sum(s.clipped for s in stats)
    degenerate = sum(s.degenerate for s in stats)
    example = next((s.first_degenerate for s in stats if s.first_degenerate), None)
    if degenerate:
        where = f" (e.g. {example})" if example else ""
        logger.warning(f"warning: skipped {degenerate} region(s) with fewer than 3 points{where}")
    if clipped:
        logger.info(f"note: {clipped} region(s) reached outside their image and were clipped to it")


def _job(root: Path, sample: Sample, key: str) -> _Job:
    scheme = OWN.scheme
    return _Job(sample, key, root / f"images/{key}.png", root / f"masks/{scheme}/{key}.png")


def _plan(
    source: Path,
    found: Collected,
    table: ClassTable,
    keys: dict[str, str],
    options: OwnDataOptions,
) -> dict[str, Any]:
    pattern = splits.compile_group_by(options.group_by)
    groups = {s.name: splits.group_of(s.name, pattern) for s in found.samples}
    items = [splits.Item(s.name, split_folder(s.name)) for s in found.samples]
    chosen = splits.assign(
        items, groups, val_ratio=options.val_ratio, test_ratio=options.test_ratio, seed=options.seed
    )
    ids = {key: i for i, key in enumerate(sorted(keys.values()))}
    scheme = OWN.scheme
    entries = {
        split: [
            {
                "id": ids[keys[name]],
                "key": keys[name],
                "group": groups[name],
                "image": f"images/{keys[name]}.png",
                "masks": {scheme: f"masks/{scheme}/{keys[name]}.png"},
                "source": name,
            }
            for name in names
        ]
        for split, names in chosen.items()
    }
    return {
        "format_version": manifest.FORMAT_VERSION,
        "created_by": f"cityseg {__version__}",
        "source": _source_record(source, found, options),
        "options": options.to_manifest(),
        "default_scheme": scheme,
        "schemes": {scheme: table.to_manifest()},
        "groups": {split: sorted({groups[n] for n in names}) for split, names in chosen.items()},
        "splits": entries,
    }


def _source_record(source: Path, found: Collected, options: OwnDataOptions) -> dict[str, Any]:
    """Where the data came from, and a fingerprint of every input file's size and time,
    so editing an annotation or an image makes the next prepare rewrite."""
    files = {str(s.image) for s in found.samples if s.image is not None}
    files |= {s.source.split(":")[0] for s in found.samples}
    if options.annotations is not None and options.annotations.is_file():
        files.add(str(options.annotations))
    digest = hashlib.sha256()
    for name in sorted(files):
        path = Path(name)
        stat = path.stat() if path.is_file() else None
        digest.update(f"{name}\0{stat and stat.st_size}\0{stat and stat.st_mtime_ns}\n".encode())
    return {
        "format": options.format.value,
        "path": str(source.resolve()),
        "annotations": None if options.annotations is None else str(options.annotations.resolve()),
        "fingerprint": digest.hexdigest(),
    }


def _comparable(index: dict[str, Any], *also: str) -> dict[str, Any]:
    return {k: v for k, v in index.items() if k not in ("created_by", *also)}


def _plan_digest(planned: dict[str, Any]) -> str:
    text = json.dumps(_comparable(planned), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _check_output(output: Path, planned: dict[str, Any], previous: dict[str, Any] | None) -> None:
    """Never write into someone else's folder or over a dataset of other data."""
    if previous is not None and previous.get("source", {}).get("path") != planned["source"]["path"]:
        raise UsageError(
            f"{output} holds a dataset prepared from other data; choose another -o or delete it"
        )
    fresh = previous is None and not (output / PLAN_STAMP).is_file()
    if fresh and output.is_dir() and any(output.iterdir()):
        raise UsageError(f"{output} is not empty and not a cityseg dataset; choose another -o")


def _claim(root: Path, planned: dict[str, Any]) -> bool:
    """Stamp `root` with this plan; True when the files there are this plan's (resume)."""
    stamp = root / PLAN_STAMP
    digest = _plan_digest(planned)
    try:
        resume = json.loads(stamp.read_text()).get("plan") == digest
    except (OSError, ValueError, AttributeError):
        resume = False
    root.mkdir(parents=True, exist_ok=True)
    remove_stale_parts(root)
    atomic_write_json(stamp, {"plan": digest})
    return resume


def _finish_swap(staging: Path, output: Path) -> None:
    """Move the staged files over the old dataset's (its manifest is already gone, so an
    interruption here is finished by the next run: the staged files are all complete)."""
    atomic_write_json(output / PLAN_STAMP, json.loads((staging / PLAN_STAMP).read_text()))
    for staged in sorted(p for p in staging.rglob("*.png") if p.is_file()):
        target = output / staged.relative_to(staging)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, target)
    shutil.rmtree(staging)


def _write(
    jobs: Sequence[_Job], table: ClassTable, resume: bool, workers: int | None, show_progress: bool
) -> list[RasterStats]:
    stats: list[RasterStats] = []

    def write_one(job: _Job) -> None:
        if resume and job.image.is_file() and job.mask.is_file():
            return
        image = job.sample.read_image()
        height, width = image.shape[:2]
        counts = RasterStats()
        mask = job.sample.mask.make(height, width, table, counts)
        if mask.shape != (height, width):
            raise DataError(
                f"{job.sample.source}: the mask is {mask.shape[1]}x{mask.shape[0]} but "
                f"{job.sample.name} is {width}x{height}"
            )
        images.write_rgb(job.image, image)
        images.write_mask(job.mask, mask.astype(np.uint8, copy=False))
        stats.append(counts)

    run_parallel(
        write_one,
        jobs,
        "prepare",
        workers=workers or default_workers(),
        show_progress=show_progress,
    )
    return stats


def _done(job: _Job) -> bool:
    return job.image.is_file() and job.mask.is_file()


def _report(output: Path, up_to_date: bool, planned: dict[str, Any]) -> PrepareReport:
    copies = {
        name: sorted(record.get("masks", {}))
        for name, record in manifest.sized_records(planned).items()
    }
    return PrepareReport(output, up_to_date, _summary(output, planned), copies)


def _summary(output: Path, planned: dict[str, Any]) -> list[SplitSummary]:
    rows = []
    for name in manifest.SPLITS:
        entries = planned["splits"].get(name, [])
        paths = [output / rel for e in entries for rel in (e["image"], *e["masks"].values())]
        size = sum(p.stat().st_size for p in paths if p.is_file())
        rows.append(SplitSummary(name, len({e["group"] for e in entries}), len(entries), size))
    return rows
