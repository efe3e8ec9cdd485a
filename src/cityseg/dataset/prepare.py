"""Raw Cityscapes packages -> a prepared dataset (images, labelIds, masks, manifest).

The split follows how the earlier projects evaluated: the original val becomes `test`
(the original test has no public labels), and the original train is divided into
`train` and `val` by whole cities, so no street appears on both sides. Files are written
atomically and skipped when present, so an interrupted run resumes where it stopped.
With `sizes`, training-size copies are written as well (see `cityseg.dataset.sized`).
"""

from __future__ import annotations

import json
import logging
import random
import shutil
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from cityseg import __version__, images
from cityseg.config import PREPARE, GroundTruth, LabelSource, SplitBy, default_workers
from cityseg.dataset import manifest, sized
from cityseg.dataset.annotations.cityscapes_polygons import parse_polygons, rasterise_annotation
from cityseg.dataset.remap import remap_array
from cityseg.dataset.schemes import Scheme, get_scheme
from cityseg.dataset.sources import (
    IMAGE_MEMBER,
    LEFTIMG_ZIP,
    OFFICIAL_SHA256,
    LabelLayout,
    Member,
    Package,
    PackageIndex,
    ZipPackage,
    file_digests,
    find_package,
    label_layout,
)
from cityseg.errors import DataError, DiskFullError, UsageError
from cityseg.fsutil import atomic_write_bytes, atomic_write_json, remove_stale_parts
from cityseg.progress import run_parallel

SOURCE_STAMP = ".cityseg-source.json"
"""Written before the first file, so a resumed run can tell it reads the same packages."""

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pair:
    key: str
    city: str
    source_split: str
    image: Member
    label: Member


@dataclass(frozen=True)
class SplitSummary:
    split: str
    cities: int
    images: int
    bytes: int


@dataclass(frozen=True)
class PrepareReport:
    output: Path
    up_to_date: bool
    splits: list[SplitSummary]
    sized: dict[str, list[str]] = field(default_factory=dict)
    """Each recorded training size ("512x1024") and the schemes it holds masks of."""


def _zip_bounds() -> dict[str, int]:
    """What a zip member may be before prepare refuses it (zip bombs, see sources.py)."""
    return {
        "max_member_bytes": PREPARE.max_member_bytes,
        "max_ratio": PREPARE.max_compression_ratio,
    }


def prepare_dataset(
    raw: Path,
    output: Path = PREPARE.output,
    *,
    val_ratio: float = PREPARE.val_ratio,
    split_by: SplitBy = PREPARE.split_by,
    labels: LabelSource = PREPARE.labels,
    annotations: GroundTruth = PREPARE.annotations,
    seed: int = PREPARE.seed,
    limit: int | None = PREPARE.limit,
    fraction: float | None = PREPARE.fraction,
    verify: bool = PREPARE.verify,
    scheme_name: str = PREPARE.scheme,
    sizes: Sequence[tuple[int, int]] = PREPARE.sizes,
    workers: int | None = None,
    show_progress: bool = True,
) -> PrepareReport:
    """Prepare `output` from the packages in `raw`; see the module docstring for the split.

    `sizes` adds training-size copies; sizes recorded by an earlier run are kept, so a
    re-run without `sizes` neither drops nor rewrites them. `annotations` picks gtFine or
    gtCoarse, `labels` their labelIds PNGs or their polygons, rasterised (see
    `cityseg.dataset.annotations.cityscapes_polygons`) into the dataset's labelIds.
    """
    _check_options(val_ratio, limit, fraction)
    _check_raw(raw)
    layout = label_layout(annotations, labels)
    left = find_package(raw, LEFTIMG_ZIP, "leftImg8bit", **_zip_bounds())
    gt = find_package(raw, layout.zip_name, layout.folder, **_zip_bounds())
    pairs = pair_members(left, gt, layout)
    splits = assign_splits(pairs, val_ratio=val_ratio, seed=seed, split_by=split_by)
    splits = {name: sample(items, limit, fraction, seed, name) for name, items in splits.items()}
    scheme = get_scheme(scheme_name)

    previous = manifest.existing_manifest(output)
    source = {
        kind: _describe(kind, package, previous, verify, show_progress)
        for kind, package in (("leftImg8bit", left), (layout.folder, gt))
    }
    options = {
        "val_ratio": val_ratio,
        "seed": seed,
        "limit": limit,
        "fraction": fraction,
        **_choices(split_by=split_by, labels=labels, annotations=annotations),
    }
    planned = build_manifest(splits, source, options, scheme)
    _keep_remapped_schemes(output, previous, planned)
    sized.record_sizes(planned, _merge_sizes(sized.recorded_sizes(previous), sizes))
    if _up_to_date(output, previous, planned):
        return PrepareReport(output, True, summarise(output, planned), _sized_summary(planned))

    _claim_output(output, source, layout)
    packages = {"leftImg8bit": left, "labels": gt}
    selected = [pair for items in splits.values() for pair in items]
    _write_dataset(output, planned, selected, packages, scheme, layout, workers, show_progress)
    return PrepareReport(output, False, summarise(output, planned), _sized_summary(planned))


def _write_dataset(
    output: Path,
    planned: dict[str, Any],
    selected: list[Pair],
    packages: dict[str, Package],
    scheme: Scheme,
    layout: LabelLayout,
    workers: int | None,
    show_progress: bool,
) -> None:
    """Every file of the dataset, then its manifest: the last write, which makes it one."""
    _check_disk_space(output, selected)
    write_pairs(
        output,
        selected,
        packages,
        scheme,
        workers=workers,
        show_progress=show_progress,
        layout=layout,
    )
    copies = sized.plan_copies(output, planned)
    sized.write_copies(copies, workers=workers, show_progress=show_progress)
    manifest.write_manifest(output, planned)


def _check_raw(raw: Path) -> None:
    if not raw.exists():
        raise DataError(f"{raw} does not exist; point prepare at the folder holding the zips")
    if not raw.is_dir():
        raise DataError(f"{raw} is a file; point prepare at the folder holding the zips")


def _up_to_date(output: Path, previous: dict[str, Any] | None, planned: dict[str, Any]) -> bool:
    """The same packages and options, and every file (copies included) on disk."""
    return (
        previous is not None
        and _same_dataset(previous, planned)
        and _files_present(output, planned)
        and sized.copies_present(output, planned)
    )


def _keep_remapped_schemes(
    output: Path, previous: dict[str, Any] | None, planned: dict[str, Any]
) -> None:
    """Carry over schemes `cityseg remap` added whose masks exist for every planned entry,
    so a re-run (to add `--size`, say) neither forgets them nor lacks their copies."""
    if previous is None:
        return
    recorded = {entry["key"]: entry.get("masks", {}) for entry in manifest.iter_entries(previous)}
    entries = manifest.iter_entries(planned)
    for name, record in previous.get("schemes", {}).items():
        if name in planned["schemes"]:
            continue
        paths = [recorded.get(entry["key"], {}).get(name) for entry in entries]
        if all(path is not None and (output / path).is_file() for path in paths):
            planned["schemes"][name] = record
            for entry, path in zip(entries, paths, strict=True):
                entry["masks"][name] = path


def _choices(**chosen: Enum) -> dict[str, str]:
    """The enum options that differ from their defaults, by value: a default is left out,
    so manifests written before the option existed stay current."""
    return {
        name: value.value for name, value in chosen.items() if value is not getattr(PREPARE, name)
    }


def _merge_sizes(
    recorded: Sequence[tuple[int, int]], requested: Sequence[tuple[int, int]]
) -> list[tuple[int, int]]:
    return [*recorded, *(size for size in requested if size not in recorded)]


def _sized_summary(planned: dict[str, Any]) -> dict[str, list[str]]:
    return {
        name: sorted(record.get("masks", {}))
        for name, record in manifest.sized_records(planned).items()
    }


def _check_options(val_ratio: float, limit: int | None, fraction: float | None) -> None:
    if not 0.0 <= val_ratio < 1.0:
        raise UsageError(f"--val-ratio must be in [0, 1), got {val_ratio}")
    if limit is not None and limit < 1:
        raise UsageError(f"--limit must be at least 1, got {limit}")
    if fraction is not None and not 0.0 < fraction <= 1.0:
        raise UsageError(f"--fraction must be in (0, 1], got {fraction}")


def pair_members(left: Package, fine: Package, layout: LabelLayout | None = None) -> list[Pair]:
    """Match images to label files by key; report what is unpaired, one line per kind."""
    layout = layout or label_layout()
    image_index = left.index(IMAGE_MEMBER)
    label_index = fine.index(layout.member, layout.siblings)
    for package, found, what in (
        (left, image_index, "leftImg8bit/{train,val,test}/<city>/*_leftImg8bit.png images"),
        (fine, label_index, layout.describe()),
    ):
        if not found.members:
            raise DataError(f"{package.path} holds no {what}; is it the right package?")
        if found.unrecognised:
            logger.info(
                f"note: ignored {len(found.unrecognised)} unrecognised file(s) in "
                f"{package.path.name} (e.g. {found.unrecognised[0]})"
            )

    test_keys = [k for k, m in image_index.members.items() if m.split == "test"]
    if test_keys:
        logger.info(
            f"note: skipped the original test split ({len(test_keys)} images): "
            "its labels are not public"
        )
    pairs: list[Pair] = []
    unlabelled: list[str] = []
    for key, image in sorted(image_index.members.items()):
        if image.split == "test":
            continue
        label = label_index.members.get(key)
        if label is None or label.split != image.split:
            unlabelled.append(key)
            continue
        pairs.append(Pair(key, image.city, image.split, image, label))
    orphans = sorted(
        k
        for k, m in label_index.members.items()
        if m.split != "test" and k not in image_index.members
    )
    _warn_unpaired(unlabelled, orphans, label_index, layout)
    if not pairs:
        raise DataError(
            f"no image has a matching {layout.noun} file in train or val; "
            "are the two packages from the same release?"
        )
    return pairs


def _warn_unpaired(
    unlabelled: list[str],
    orphans: list[str],
    label_index: PackageIndex,
    layout: LabelLayout,
) -> None:
    noun = layout.noun
    if unlabelled:
        logger.warning(
            f"warning: {len(unlabelled)} image(s) without {noun} skipped (e.g. {unlabelled[0]})"
        )
    if orphans:
        extra = sum(label_index.members[key].split == "train_extra" for key in orphans)
        why = (
            f"; {extra} of them in train_extra, whose images (leftImg8bit_trainextra.zip) "
            "prepare does not read"
            if extra
            else ""
        )
        logger.warning(
            f"warning: {len(orphans)} {noun} without an image skipped (e.g. {orphans[0]}){why}"
        )


def assign_splits(
    pairs: Sequence[Pair],
    *,
    val_ratio: float,
    seed: int,
    split_by: SplitBy = SplitBy.city,
) -> dict[str, list[Pair]]:
    """Original val -> test; original train -> train/val by whole cities (or by image)."""
    by_city: dict[str, list[Pair]] = defaultdict(list)
    for pair in pairs:
        if pair.source_split == "train":
            by_city[pair.city].append(pair)
    test = [p for p in pairs if p.source_split == "val"]
    if split_by is SplitBy.image:
        train, val = split_by_image(
            [p for c in sorted(by_city) for p in by_city[c]], val_ratio, seed
        )
        if val:
            logger.warning(
                "warning: --split-by image puts images of the same cities in train and val; "
                "val scores will read higher than on unseen streets"
            )
        return {"train": train, "val": val, "test": test}
    val_cities = choose_val_cities({c: len(p) for c, p in by_city.items()}, val_ratio, seed)
    if val_ratio > 0 and not val_cities:
        logger.warning(
            "warning: the original train split has a single city; val is empty and best/ "
            "will follow the training mIoU. For a val split, re-run prepare with "
            "--split-by image"
        )
    return {
        "train": [p for c in sorted(by_city) if c not in val_cities for p in by_city[c]],
        "val": [p for c in sorted(val_cities) for p in by_city[c]],
        "test": test,
    }


def split_by_image(items: list[Pair], val_ratio: float, seed: int) -> tuple[list[Pair], list[Pair]]:
    """A seeded share of single images for val, at least one, never all of them."""
    if val_ratio <= 0 or len(items) < 2:
        return items, []
    count = min(len(items) - 1, max(1, round(val_ratio * len(items))))
    chosen = {p.key for p in random.Random(f"{seed}:val-images").sample(items, count)}
    return [p for p in items if p.key not in chosen], [p for p in items if p.key in chosen]


def choose_val_cities(counts: dict[str, int], val_ratio: float, seed: int) -> set[str]:
    """Cities whose image count comes closest to `val_ratio` of all, at least one if any.

    Cities are visited in a seeded shuffle and kept when they bring the total closer to
    the target, so the choice is reproducible and never leaves train without a city.
    """
    if val_ratio <= 0 or len(counts) < 2:
        return set()
    order = sorted(counts)
    random.Random(seed).shuffle(order)
    target = val_ratio * sum(counts.values())
    chosen: list[str] = []
    total = 0
    for city in order:
        if len(chosen) == len(order) - 1:
            break
        if abs(total + counts[city] - target) < abs(total - target):
            chosen.append(city)
            total += counts[city]
    if not chosen:
        chosen.append(min(order, key=lambda city: counts[city]))
    return set(chosen)


def sample(
    items: list[Pair], limit: int | None, fraction: float | None, seed: int, split: str
) -> list[Pair]:
    """Reproducible per-split subset; `fraction` first, then `limit`."""
    count = len(items)
    if fraction is not None:
        count = max(1, round(count * fraction)) if items else 0
    if limit is not None:
        count = min(count, limit)
    if count >= len(items):
        return items
    chosen = random.Random(f"{seed}:{split}").sample(items, count)
    return sorted(chosen, key=lambda pair: pair.key)


def entry_paths(key: str, scheme: str) -> dict[str, str]:
    return {
        "image": f"images/{key}.png",
        "labelIds": f"labelIds/{key}.png",
        "mask": f"masks/{scheme}/{key}.png",
    }


def build_manifest(
    splits: dict[str, list[Pair]],
    source: dict[str, Any],
    options: dict[str, Any],
    scheme: Scheme,
) -> dict[str, Any]:
    """The manifest as it will be written; ids follow the sorted keys of the whole dataset."""
    keys = sorted(pair.key for items in splits.values() for pair in items)
    ids = {key: index for index, key in enumerate(keys)}
    manifest_splits: dict[str, list[dict[str, Any]]] = {}
    for name in manifest.SPLITS:
        manifest_splits[name] = []
        for pair in splits.get(name, []):
            paths = entry_paths(pair.key, scheme.name)
            manifest_splits[name].append(
                {
                    "id": ids[pair.key],
                    "key": pair.key,
                    "city": pair.city,
                    "image": paths["image"],
                    "labelIds": paths["labelIds"],
                    "masks": {scheme.name: paths["mask"]},
                    "source_split": pair.source_split,
                }
            )
    return {
        "format_version": manifest.FORMAT_VERSION,
        "created_by": f"cityseg {__version__}",
        "source": source,
        "options": options,
        "schemes": {scheme.name: scheme.to_manifest()},
        "cities": {
            name: sorted({p.city for p in splits.get(name, [])}) for name in manifest.SPLITS
        },
        "splits": manifest_splits,
    }


def write_pairs(
    output: Path,
    pairs: Sequence[Pair],
    packages: dict[str, Package],
    scheme: Scheme,
    *,
    workers: int | None,
    show_progress: bool,
    layout: LabelLayout | None = None,
) -> None:
    """Decode-check, copy and remap every pair; existing outputs are kept (resume).

    `packages` maps "leftImg8bit" and "labels" to their packages; with a polygons
    `layout` the labelIds written are the rasterised polygons, not a copied PNG.
    """
    remove_stale_parts(output)
    layout = layout or label_layout()

    def write_one(pair: Pair) -> None:
        paths = {name: output / rel for name, rel in entry_paths(pair.key, scheme.name).items()}
        if all(path.is_file() for path in paths.values()):
            return
        image_bytes = packages["leftImg8bit"].read(pair.image.name)
        image = images.decode_image(image_bytes, _where(packages["leftImg8bit"], pair.image.name))
        label_ids, label_bytes = _label_ids(pair, packages["labels"], layout, image.shape[:2])
        where = _where(packages["labels"], pair.label.name)
        mask = remap_array(label_ids, scheme, name=where)
        atomic_write_bytes(paths["image"], image_bytes)
        atomic_write_bytes(paths["labelIds"], label_bytes)
        images.write_mask(paths["mask"], mask)

    run_parallel(
        write_one,
        pairs,
        "prepare",
        workers=workers or default_workers(),
        show_progress=show_progress,
    )


def _where(package: Package, name: str) -> str:
    """How messages name a member: `zip:member`, or a file's own path in a folder."""
    if isinstance(package, ZipPackage):
        return f"{package.path.name}:{name}"
    return str(package.path / name)


def _label_ids(
    pair: Pair, package: Package, layout: LabelLayout, shape: tuple[int, ...]
) -> tuple[np.ndarray, bytes]:
    """The pair's labelIds and the PNG bytes to store: the original, or the polygons drawn.

    The polygons' declared size is checked against the image before drawing, so a
    corrupt size fails in one line instead of allocating a huge canvas.
    """
    data = package.read(pair.label.name)
    where = _where(package, pair.label.name)
    if not layout.polygons:
        label_ids = images.decode_mask(data, where)
        _check_size(pair.key, shape, label_ids.shape, "labelIds are")
        return label_ids, data
    annotation = parse_polygons(data, where)
    _check_size(pair.key, shape, (annotation.height, annotation.width), "polygons JSON says")
    label_ids = rasterise_annotation(annotation)
    return label_ids, images.encode_png(label_ids)


def _check_size(key: str, image: tuple[int, ...], labels: tuple[int, ...], what: str) -> None:
    if tuple(image) != tuple(labels):
        raise DataError(
            f"{key}: image is {image[1]}x{image[0]} but its {what} {labels[1]}x{labels[0]}"
        )


def summarise(output: Path, planned: dict[str, Any]) -> list[SplitSummary]:
    rows = []
    for name in manifest.SPLITS:
        entries = planned["splits"][name]
        size = sum(
            (output / rel).stat().st_size
            for entry in entries
            for rel in (entry["image"], entry["labelIds"], *entry["masks"].values())
            if (output / rel).is_file()
        )
        rows.append(SplitSummary(name, len({e["city"] for e in entries}), len(entries), size))
    return rows


def _describe(
    kind: str,
    package: Package,
    previous: dict[str, Any] | None,
    verify: bool,
    show_progress: bool,
) -> dict[str, Any]:
    """The package's fingerprint and, for zips, checksums (reused when unchanged)."""
    info = package.fingerprint()
    if not isinstance(package, ZipPackage) or not verify:
        return info
    cached = (previous or {}).get("source", {}).get(kind, {})
    same_file = all(cached.get(k) == info[k] for k in ("name", "size", "mtime_ns"))
    digests = (
        {"md5": cached["md5"], "sha256": cached["sha256"]}
        if same_file and "sha256" in cached
        else file_digests(package.path, show_progress=show_progress)
    )
    expected = OFFICIAL_SHA256.get(package.path.name)
    if expected is None:  # gtCoarse.zip: no catalogued SHA-256 to compare with
        return {**info, **digests}
    official = expected == digests["sha256"]
    if not official:
        logger.warning(
            f"warning: {package.path.name} does not match the official checksum "
            "(repackaged or modified?); continuing"
        )
    return {**info, **digests, "official": official}


def _comparable(index: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in index.items() if k != "created_by"}


def _same_dataset(previous: dict[str, Any], planned: dict[str, Any]) -> bool:
    return _comparable(previous) == _comparable(planned)


def _files_present(output: Path, planned: dict[str, Any]) -> bool:
    return all(
        (output / rel).is_file()
        for entry in manifest.iter_entries(planned)
        for rel in (entry["image"], entry["labelIds"], *entry["masks"].values())
    )


def _identity(source: dict[str, Any], layout: LabelLayout) -> dict[str, Any]:
    identity: dict[str, Any] = {
        kind: {k: info.get(k) for k in ("kind", "name", "size")} for kind, info in source.items()
    }
    if layout.polygons:  # absent for PNGs: stamps written before the option stay valid
        identity["labels"] = LabelSource.polygons.value
    return identity


def _claim_output(output: Path, source: dict[str, Any], layout: LabelLayout) -> None:
    """Refuse to mix files from other packages, or labelIds drawn from polygons with
    copied ones, into a dataset (a resume must match)."""
    stamp = output / SOURCE_STAMP
    identity = _identity(source, layout)
    if stamp.is_file():
        try:
            recorded = json.loads(stamp.read_text())
        except (OSError, ValueError):
            recorded = None
        if isinstance(recorded, dict) and recorded.get("labels") != identity.get("labels"):
            made = "polygons JSON" if recorded.get("labels") else "labelIds PNGs"
            raise UsageError(
                f"{output} holds a dataset whose labelIds were made from {made}; "
                "choose another -o or delete it first"
            )
        if recorded is not None and recorded != identity:
            raise UsageError(
                f"{output} holds a dataset prepared from other packages; "
                "choose another -o or delete it first"
            )
    output.mkdir(parents=True, exist_ok=True)
    atomic_write_json(stamp, identity)


def _check_disk_space(output: Path, pairs: Sequence[Pair]) -> None:
    """Fail before writing when the declared sizes cannot fit (masks ~ labelIds size)."""
    needed = sum(pair.image.size + 2 * pair.label.size for pair in pairs)
    present = sum(
        path.stat().st_size
        for pair in pairs
        for path in (output / "images" / f"{pair.key}.png", output / "labelIds" / f"{pair.key}.png")
        if path.is_file()
    )
    free = shutil.disk_usage(output).free
    if needed - present > free:
        raise DiskFullError(
            f"{output} needs about {(needed - present) / 1e9:.1f} GB but only "
            f"{free / 1e9:.1f} GB is free; free space or choose another -o"
        )
