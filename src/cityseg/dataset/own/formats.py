"""From SOURCE and the options to samples and a class table, one function per format.

Each format decides its class list its own way: VIA and LabelMe by first appearance of a
label (or `--classes`), COCO by its categories, mask folders by `--palette` or the ids in
the masks. Every label is checked against the table here, before anything is written.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from cityseg.config import DataFormat
from cityseg.dataset.own.classes import (
    BACKGROUND_ALIASES,
    ClassTable,
    read_palette,
    resolve_classes,
)
from cityseg.dataset.own.files import ImageIndex
from cityseg.dataset.own.options import OwnDataOptions
from cityseg.dataset.own.readers import (
    Collected,
    coco_categories,
    collect_coco,
    collect_labelme,
    collect_masks,
    collect_via,
    highest_mask_id,
)
from cityseg.errors import DataError, UsageError

Reader = Callable[[Path, Path, OwnDataOptions], tuple[Collected, ClassTable, ImageIndex]]
MASK_FOLDERS = ("masks", "labels", "annotations", "SegmentationClass")


def read_source(
    source: Path, output: Path, options: OwnDataOptions
) -> tuple[Collected, ClassTable, ImageIndex]:
    readers: dict[DataFormat, Reader] = {
        DataFormat.via: _via,
        DataFormat.labelme: _labelme,
        DataFormat.coco: _coco,
        DataFormat.masks: _masks,
    }
    return readers[options.format](source, output, options)


def _table(
    found: list[str], options: OwnDataOptions, order: str = "in order of first appearance"
) -> ClassTable:
    palette = None if options.palette is None else read_palette(options.palette)
    return resolve_classes(
        found,
        given=options.classes,
        ignore=options.ignore,
        palette=palette,
        background=options.background,
        found_order=order,
    )


def _checked(found: Collected, options: OwnDataOptions) -> ClassTable:
    table = _table(list(found.labels), options)
    for label, where in found.labels.items():
        table.check(label, where)
    return table


def _via(
    source: Path, output: Path, options: OwnDataOptions
) -> tuple[Collected, ClassTable, ImageIndex]:
    annotations = options.annotations or _only_file(source, ("*.csv", "*via*.json"), "VIA export")
    index = ImageIndex(source, exclude=[output])
    found = collect_via(index, annotations, options.class_attr)
    return found, _checked(found, options), index


def _labelme(
    source: Path, output: Path, options: OwnDataOptions
) -> tuple[Collected, ClassTable, ImageIndex]:
    index = ImageIndex(source, exclude=[output])
    found = collect_labelme(index, options.annotations or source, output)
    return found, _checked(found, options), index


def _coco(
    source: Path, output: Path, options: OwnDataOptions
) -> tuple[Collected, ClassTable, ImageIndex]:
    annotations = options.annotations or _only_file(source, ("*.json",), "COCO instances JSON")
    index = ImageIndex(source, exclude=[output])
    table = _table(coco_categories(annotations), options, "in the file's category order")
    return collect_coco(index, annotations, table.ids), table, index


def _masks(
    source: Path, output: Path, options: OwnDataOptions
) -> tuple[Collected, ClassTable, ImageIndex]:
    folder = options.annotations or _mask_folder(source)
    if not folder.is_dir():
        raise DataError(f"{folder} is not a folder of masks")
    images_root = source / "images" if (source / "images").is_dir() else source
    index = ImageIndex(images_root, exclude=[output, folder])
    masks = ImageIndex(folder, exclude=[output])
    if options.palette is None:
        found = collect_masks(index, masks, None)
        if options.classes is not None:
            return found, _table([], options), index
        count = highest_mask_id(found.samples)
        names = [f"class_{i}" for i in range(1, count + 1)]
        return found, _table(names, options, "named after the ids in the masks"), index
    palette = read_palette(options.palette)
    names = [n for n in palette if n not in BACKGROUND_ALIASES]
    table = _table(names, options, "in the palette's order")
    for name in names:
        table.check(name, f"{options.palette}")
    colours = {colour: table.ids.get(name, 0) for name, colour in palette.items()}
    colours.setdefault((0, 0, 0), 0)
    return collect_masks(index, masks, colours), table, index


def _mask_folder(source: Path) -> Path:
    for name in MASK_FOLDERS:
        if (source / name).is_dir():
            return source / name
    raise UsageError(
        f"{source} has no masks/ (or labels/) folder; pass the mask folder as --annotations"
    )


def _only_file(source: Path, patterns: tuple[str, ...], what: str) -> Path:
    """The one annotation file at SOURCE's top level; name it when there are several."""
    if source.is_file():
        return source
    found = sorted({p for pattern in patterns for p in source.glob(pattern) if p.is_file()})
    if len(found) == 1:
        return found[0]
    if not found:
        raise UsageError(f"no {what} in {source}; pass it as --annotations FILE")
    names = ", ".join(p.name for p in found[:4])
    raise UsageError(
        f"several candidates for the {what} in {source} ({names}); pick one with --annotations"
    )
