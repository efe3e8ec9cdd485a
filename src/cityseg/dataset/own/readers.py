"""Each annotation format read into samples, with what was missing or skipped.

Nothing here writes or decodes pixels (except a class-id mask folder without a class list,
which is scanned for the ids it holds): `cityseg prepare` reads everything first and stops
on the first bad file before writing, then paints masks in parallel.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from cityseg import images
from cityseg.dataset.annotations.coco import read_coco
from cityseg.dataset.annotations.labelme import read_labelme
from cityseg.dataset.annotations.shapes import ImageAnnotation, ReadResult
from cityseg.dataset.annotations.via import read_via
from cityseg.dataset.own.files import ImageIndex
from cityseg.dataset.own.samples import CocoMask, FileMask, RegionMask, Sample
from cityseg.errors import DataError


@dataclass
class Collected:
    samples: list[Sample] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    """Each region label -> where it first appears, in order of first appearance."""
    missing: list[str] = field(default_factory=list)
    """Images the annotations name that are not under SOURCE."""
    skipped: Counter[str] = field(default_factory=Counter)

    def saw(self, label: str, source: str) -> None:
        self.labels.setdefault(label, source)


def collect_via(index: ImageIndex, annotations: Path, class_attr: str | None) -> Collected:
    """VIA stores bare file names: images are looked up under SOURCE."""
    return _from_regions(index, read_via(annotations, class_attr), beside_file=False)


def collect_labelme(index: ImageIndex, annotations: Path, output: Path) -> Collected:
    """LabelMe's `imagePath` is relative to its JSON file; the name is the fallback."""
    result = read_labelme(annotations, exclude=[output])
    return _from_regions(index, result, beside_file=True)


def _from_regions(index: ImageIndex, result: ReadResult, *, beside_file: bool) -> Collected:
    found = Collected(skipped=result.skipped)
    for item in result.images:
        for region in item.regions:
            found.saw(region.label, region.source)
        sample = _region_sample(index, item, Path(item.source).parent if beside_file else None)
        if sample is None:
            found.missing.append(item.file_name)
        else:
            found.samples.append(sample)
    return found


def _region_sample(index: ImageIndex, item: ImageAnnotation, near: Path | None) -> Sample | None:
    """The image file when there is one, else LabelMe's embedded `imageData`."""
    path = index.find(item.file_name, near)
    size = None if item.height is None or item.width is None else (item.height, item.width)
    mask = RegionMask(tuple(item.regions))
    if path is not None:
        return Sample(index.relative(path), mask, image=path, stated_size=size, source=item.source)
    if item.image_data is None:
        return None
    embedded = Path(item.source).with_suffix(Path(item.file_name).suffix or ".png")
    return Sample(
        index.relative(embedded),
        mask,
        image_data=item.image_data,
        stated_size=size,
        source=item.source,
    )


def coco_categories(annotations: Path) -> list[str]:
    """The category names in the file's order: the default class list."""
    return list(read_coco(annotations).class_ids)


def collect_coco(index: ImageIndex, annotations: Path, class_ids: dict[str, int]) -> Collected:
    dataset = read_coco(annotations, class_ids)
    found = Collected(skipped=dataset.skipped)
    for image in dataset.images:
        path = index.find(image.file_name, annotations.parent)
        if path is None:
            found.missing.append(image.file_name)
            continue
        found.samples.append(
            Sample(
                index.relative(path),
                CocoMask(dataset, image),
                image=path,
                stated_size=(image.height, image.width),
                source=image.source,
            )
        )
    return found


def collect_masks(
    index: ImageIndex,
    masks: ImageIndex,
    colours: dict[tuple[int, int, int], int] | None,
) -> Collected:
    """Images and masks paired by file stem; unpaired images count as unannotated."""
    by_stem: dict[str, Path] = {}
    for path in masks.paths:
        if path.stem in by_stem:
            raise DataError(
                f"two masks are named {path.stem!r} ({by_stem[path.stem]} and {path}); "
                "masks pair with images by file name"
            )
        by_stem[path.stem] = path
    found = Collected()
    images_by_stem = {path.stem for path in index.paths}
    found.missing = sorted(masks.relative(p) for s, p in by_stem.items() if s not in images_by_stem)
    for path in index.paths:
        mask = by_stem.get(path.stem)
        if mask is not None:
            name = index.relative(path)
            found.samples.append(
                Sample(name, FileMask(mask, colours), image=path, source=str(mask))
            )
    return found


def highest_mask_id(samples: list[Sample]) -> int:
    """The largest class id (255 = ignore aside) in a folder of class-id masks."""
    highest = 0
    for sample in samples:
        assert isinstance(sample.mask, FileMask)
        mask = images.read_mask(sample.mask.path)
        values = mask[mask != 255]
        highest = max(highest, int(values.max()) if values.size else 0)
    return highest
