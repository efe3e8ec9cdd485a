"""`cityseg.prepare` and `cityseg.remap`: raw data to a prepared dataset, and labelIds to
class ids.

One `prepare` for both kinds of raw data, as one command is: `format` says what `raw`
holds, and the options are `cityseg prepare`'s flags as keywords. An option that does
not apply to the format is refused (as the CLI refuses the flag) rather than silently
ignored, so a `classes=` meant for own data never vanishes into a Cityscapes run.
`remap` is `cityseg remap`: a prepared dataset in place, or files into `output`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cityseg.api._common import Log, PathLike, logger, optional_path, size_of
from cityseg.config import (
    Background,
    DataFormat,
    GroundTruth,
    LabelSource,
    OwnDataConfig,
    PrepareConfig,
    RemapConfig,
    SplitBy,
    UnknownPolicy,
)
from cityseg.errors import UsageError

if TYPE_CHECKING:
    from cityseg.dataset.own.options import OwnDataOptions
    from cityseg.dataset.prepare import PrepareReport
    from cityseg.dataset.remap import RemapReport
    from cityseg.dataset.schemes import Scheme

PREPARE = PrepareConfig()
OWN = OwnDataConfig()
REMAP = RemapConfig()
Size = str | tuple[int, int]


def prepare(
    raw: PathLike,
    out: PathLike | None = None,
    *,
    format: str | DataFormat = DataFormat.cityscapes,
    val_ratio: float = PREPARE.val_ratio,
    seed: int = PREPARE.seed,
    sizes: Sequence[Size] = (),
    workers: int | None = None,
    verbose: bool = True,
    log: Log | None = None,
    # Cityscapes only
    split_by: str | SplitBy = PREPARE.split_by,
    labels: str | LabelSource = PREPARE.labels,
    gt: str | GroundTruth = PREPARE.annotations,
    limit: int | None = PREPARE.limit,
    fraction: float | None = PREPARE.fraction,
    verify: bool = PREPARE.verify,
    # own data only (format="via", "labelme", "coco" or "masks")
    annotations: PathLike | None = None,
    classes: Sequence[str] | str | None = None,
    ignore: str | None = None,
    palette: PathLike | None = None,
    background: str | Background = OWN.background,
    class_attr: str | None = None,
    test_ratio: float = OWN.test_ratio,
    group_by: str | None = None,
) -> PrepareReport:
    """Prepare `raw` into `out` (default: data/cityscapes, or data/<raw's name> for own
    data), as `cityseg prepare RAW -o OUT --format FORMAT`; docs/prepare.md and
    docs/datasets.md describe every option. `sizes` adds training-size copies
    ("512x1024" or (512, 1024)); `classes` is a list, a comma list or a file. `verbose`
    shows bars and messages; `log` takes the messages instead of `print`.
    """
    kind, source = DataFormat(format), Path(raw)
    copies = [size for size in (size_of(s) for s in sizes) if size is not None]
    common = _Common(source, optional_path(out), copies, workers, verbose, logger(verbose, log))
    if kind is DataFormat.cityscapes:
        own = (annotations, classes, ignore, palette, class_attr, group_by)
        if any(v is not None for v in own) or test_ratio != OWN.test_ratio:
            raise UsageError(
                "annotations, classes, ignore, palette, class_attr, test_ratio and group_by "
                "are for own data (format='via', 'labelme', 'coco' or 'masks')"
            )
        return _cityscapes(
            common,
            val_ratio=val_ratio,
            split_by=SplitBy(split_by),
            labels=LabelSource(labels),
            annotations=GroundTruth(gt),
            seed=seed,
            limit=limit,
            fraction=fraction,
            verify=verify,
        )
    cityscapes = (SplitBy(split_by), LabelSource(labels), GroundTruth(gt))
    if limit is not None or fraction is not None or not verify or cityscapes != _CITYSCAPES:
        raise UsageError("split_by, labels, gt, limit, fraction and verify are for Cityscapes")
    from cityseg.dataset.own.options import OwnDataOptions

    options = OwnDataOptions(
        format=kind,
        annotations=optional_path(annotations),
        class_attr=class_attr,
        classes=_class_list(classes),
        ignore=ignore,
        palette=optional_path(palette),
        background=Background(background),
        val_ratio=val_ratio,
        test_ratio=test_ratio,
        seed=seed,
        group_by=group_by,
    )
    return _own(common, options)


@dataclass(frozen=True)
class _Common:
    """What both kinds of prepare take alike."""

    source: Path
    out: Path | None
    sizes: list[tuple[int, int]]
    workers: int | None
    verbose: bool
    log: Log


def _cityscapes(common: _Common, **options: Any) -> PrepareReport:
    from cityseg.dataset.prepare import prepare_dataset

    return prepare_dataset(
        common.source,
        common.out or PREPARE.output,
        sizes=common.sizes,
        workers=common.workers,
        show_progress=common.verbose,
        log=common.log,
        **options,
    )


def _own(common: _Common, options: OwnDataOptions) -> PrepareReport:
    from cityseg.dataset.own.prepare import prepare_own

    output = common.out or Path("data") / (common.source.resolve().name or "dataset")
    return prepare_own(
        common.source,
        output,
        options,
        sizes=common.sizes,
        workers=common.workers,
        show_progress=common.verbose,
        log=common.log,
    )


def _class_list(classes: Sequence[str] | str | None) -> list[str] | None:
    """A comma list or a file of names, as `--classes` reads it; a list as given."""
    if classes is None:
        return None
    if isinstance(classes, str):
        from cityseg.dataset.own.classes import parse_class_list

        return parse_class_list(classes)
    return [str(name) for name in classes]


_CITYSCAPES = (PREPARE.split_by, PREPARE.labels, PREPARE.annotations)


def remap(
    inputs_or_dataset: PathLike | Sequence[PathLike],
    output: PathLike | None = None,
    *,
    scheme: PathLike | Scheme = REMAP.scheme,
    glob: str = REMAP.glob,
    colour: bool = REMAP.colour,
    unknown: str | UnknownPolicy = REMAP.unknown,
    workers: int | None = None,
    verbose: bool = True,
) -> RemapReport:
    """Map Cityscapes labelIds PNGs to class-id PNGs, as `cityseg remap INPUT... -o OUT`.

    A prepared dataset (the only input, no `output`) gains `masks/<scheme>/` in place and
    in its manifest, so `cityseg.train(scheme=...)` can use it; files and folders
    (searched for `glob`) are written into the folder `output`, or to `output` as a .png
    for a single input. `scheme` is categories, trainids or a JSON scheme file; `unknown`
    says what an id the scheme does not map does ("error" or "void"); `colour` also
    writes palette PNGs. Nothing here imports TensorFlow.
    """
    from cityseg.dataset.remap import remap_paths
    from cityseg.dataset.schemes import Scheme, get_scheme

    if isinstance(inputs_or_dataset, (str, os.PathLike)):
        inputs_or_dataset = [inputs_or_dataset]
    return remap_paths(
        [Path(item) for item in inputs_or_dataset],
        optional_path(output),
        scheme if isinstance(scheme, Scheme) else get_scheme(str(scheme)),
        pattern=glob,
        colour=colour,
        unknown=UnknownPolicy(unknown),
        workers=workers,
        show_progress=verbose,
    )
