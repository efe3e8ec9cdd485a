"""Train / val / test for datasets without cities: seeded ratios over whole groups.

Frames of one sequence or photos of one person look alike; with one in train and one in
val, val scores read high. `--group-by REGEX` names what must stay together (the first
capture group of a match on the file name, or the whole match), the way Cityscapes keeps
whole cities together. Without it every image is its own group. A `train/ val/ test/`
folder layout is the user's own split and is used as it is.
"""

from __future__ import annotations

import random
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cityseg.errors import UsageError

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Item:
    name: str
    """The image's path relative to SOURCE: what --group-by matches (its file name part)."""
    folder_split: str | None


def compile_group_by(pattern: str | None) -> re.Pattern[str] | None:
    if pattern is None:
        return None
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise UsageError(f"--group-by {pattern!r} is not a regular expression ({exc})") from exc


def group_of(name: str, pattern: re.Pattern[str] | None) -> str:
    """The group an image belongs to; an image the pattern does not match is its own."""
    file_name = name.rsplit("/", 1)[-1]
    match = pattern.search(file_name) if pattern is not None else None
    if match is None:
        return file_name
    return match.group(1) if pattern is not None and pattern.groups else match.group(0)


def assign(
    items: Sequence[Item],
    groups: Mapping[str, str],
    *,
    val_ratio: float,
    test_ratio: float,
    seed: int,
) -> dict[str, list[str]]:
    """Split names: by their folders when every image has one, else by seeded ratios."""
    with_folder = [i for i in items if i.folder_split is not None]
    if with_folder and len(with_folder) != len(items):
        loose = next(i.name for i in items if i.folder_split is None)
        raise UsageError(
            f"some images are in train/ val/ test/ folders and some not (e.g. {loose}); "
            "put every image in one of them, or none"
        )
    if with_folder:
        split = {name: [i.name for i in items if i.folder_split == name] for name in SPLITS}
        return split
    return by_ratio([i.name for i in items], groups, val_ratio, test_ratio, seed)


def by_ratio(
    names: Sequence[str],
    groups: Mapping[str, str],
    val_ratio: float,
    test_ratio: float,
    seed: int,
) -> dict[str, list[str]]:
    """Whole groups in a seeded shuffle fill test, then val, to their shares; train keeps
    the rest and at least one group. A ratio above 0 gets at least one group if it can."""
    members: dict[str, list[str]] = defaultdict(list)
    for name in names:
        members[groups[name]].append(name)
    order = sorted(members)
    random.Random(f"{seed}:groups").shuffle(order)
    chosen: dict[str, list[str]] = {split: [] for split in SPLITS}
    left = list(order)
    for split, ratio in (("test", test_ratio), ("val", val_ratio)):
        target, taken = ratio * len(names), 0
        while ratio > 0 and len(left) > 1:
            size = len(members[left[0]])
            if taken and abs(taken + size - target) >= abs(taken - target):
                break
            group = left.pop(0)
            chosen[split].extend(members[group])
            taken += size
    chosen["train"] = [name for group in left for name in members[group]]
    return {split: sorted(found) for split, found in chosen.items()}
