"""`cityseg.prepare` and `cityseg.remap`: raw data to a prepared dataset, and labelIds to
class ids.

One `prepare` for both kinds of raw data, as one command is: `format` says what `raw`
holds, and the options are `cityseg prepare`'s flags as keywords. An option that does
not apply to the format is refused rather than silently ignored, so a `classes=` meant
for own data never vanishes into a Cityscapes run; `check_format_options` is that check,
for the command's flags too.
`remap` is `cityseg remap`: a prepared dataset in place, or files into `output`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cityseg.api._common import PathLike, optional_path, size_of
from cityseg.config import (
    OWN,
    PREPARE,
    REMAP,
    Background,
    DataFormat,
    GroundTruth,
    LabelSource,
    SplitBy,
    UnknownPolicy,
)
from cityseg.errors import UsageError
from cityseg.logs import api_messages

if TYPE_CHECKING:
    from cityseg.dataset.own.options import OwnDataOptions
    from cityseg.dataset.prepare import PrepareReport
    from cityseg.dataset.remap import RemapReport
    from cityseg.dataset.schemes import Scheme

Size = str | tuple[int, int]

OWN_ONLY = ("annotations", "classes", "ignore", "palette", "class_attr", "test_ratio", "group_by")
"""`prepare`'s options for own data, refused with the cityscapes format."""
CITYSCAPES_ONLY = ("limit", "fraction", "split_by", "labels", "gt", "verify")
"""`prepare`'s options for Cityscapes, refused with an own-data format."""
UNSET: dict[str, object] = {
    "split_by": PREPARE.split_by,
    "labels": PREPARE.labels,
    "gt": PREPARE.annotations,
    "verify": PREPARE.verify,
}
"""What an option is when not given, where that is not None."""
CLI_LETS_PASS = ("annotations", "verify")
"""`cityseg prepare` has always ignored --annotations for Cityscapes and --no-verify for
own data (neither changes the result) rather than refusing them."""


def check_format_options(
    format: DataFormat, options: Mapping[str, object], *, flags: bool = False
) -> None:
    """Refuse an option of the other kind of data: `options` (prepare's keywords, by
    name) given with a `format` they do not apply to. One check for `cityseg.prepare`
    and, worded with its flags (`flags`), for `cityseg prepare`."""
    cityscapes = format is DataFormat.cityscapes
    names = [
        name
        for name in (OWN_ONLY if cityscapes else CITYSCAPES_ONLY)
        if not (flags and name in CLI_LETS_PASS)
    ]
    if all(options.get(name, UNSET.get(name)) == UNSET.get(name) for name in names):
        return
    listed = [f"--{name.replace('_', '-')}" if flags else name for name in names]
    listing = f"{', '.join(listed[:-1])} and {listed[-1]}"
    raise UsageError(f"{listing} are for {_FOR[cityscapes, flags]}")


_FOR = {
    (True, False): "own data (format='via', 'labelme', 'coco' or 'masks')",
    (True, True): "own data (--format via|labelme|coco|masks)",
    (False, False): "Cityscapes",
    (False, True): "--format cityscapes",
}
"""(the format is cityscapes, worded as flags): what the refused options are for."""


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
    test_ratio: float | None = None,
    group_by: str | None = None,
) -> PrepareReport:
    """Prepare `raw` into `out` (default: data/cityscapes, or data/<raw's name> for own
    data), as `cityseg prepare RAW -o OUT --format FORMAT`; docs/prepare.md and
    docs/datasets.md describe every option (`test_ratio` defaults to 0.15). `sizes` adds
    training-size copies ("512x1024" or (512, 1024)); `classes` is a list, a comma list
    or a file. `verbose` shows bars and messages (`verbose=False`: warnings only).
    """
    options = dict(locals())  # every argument by name, before any other local exists
    kind = DataFormat(format)
    check_format_options(kind, options)
    copies = [size for size in (size_of(s) for s in sizes) if size is not None]
    common = _Common(Path(raw), optional_path(out), copies, workers, verbose)
    with api_messages(verbose):
        if kind is DataFormat.cityscapes:
            return _cityscapes(common, options)
        return _own(common, _own_options(kind, options))


@dataclass(frozen=True)
class _Common:
    """What both kinds of prepare take alike."""

    source: Path
    out: Path | None
    sizes: list[tuple[int, int]]
    workers: int | None
    verbose: bool


def _cityscapes(common: _Common, options: Mapping[str, Any]) -> PrepareReport:
    from cityseg.dataset.prepare import prepare_dataset

    return prepare_dataset(
        common.source,
        common.out or PREPARE.output,
        val_ratio=options["val_ratio"],
        split_by=SplitBy(options["split_by"]),
        labels=LabelSource(options["labels"]),
        annotations=GroundTruth(options["gt"]),
        seed=options["seed"],
        limit=options["limit"],
        fraction=options["fraction"],
        verify=options["verify"],
        sizes=common.sizes,
        workers=common.workers,
        show_progress=common.verbose,
    )


def _own_options(kind: DataFormat, options: Mapping[str, Any]) -> OwnDataOptions:
    from cityseg.dataset.own.options import OwnDataOptions

    test_ratio = options["test_ratio"]
    return OwnDataOptions(
        format=kind,
        annotations=optional_path(options["annotations"]),
        class_attr=options["class_attr"],
        classes=_class_list(options["classes"]),
        ignore=options["ignore"],
        palette=optional_path(options["palette"]),
        background=Background(options["background"]),
        val_ratio=options["val_ratio"],
        test_ratio=OWN.test_ratio if test_ratio is None else test_ratio,
        seed=options["seed"],
        group_by=options["group_by"],
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
    )


def _class_list(classes: Sequence[str] | str | None) -> list[str] | None:
    """A comma list or a file of names, as `--classes` reads it; a list as given."""
    if classes is None:
        return None
    if isinstance(classes, str):
        from cityseg.dataset.own.classes import parse_class_list

        return parse_class_list(classes)
    return [str(name) for name in classes]


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
    with api_messages(verbose):
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
