"""The synthetic raw dataset must look exactly like the official Cityscapes zips.

Every other test of the project builds on these zips, so a deviation from the official
layout here would hide the same deviation in the code that reads real downloads.
"""

from __future__ import annotations

import dataclasses
import json
import re
import zipfile
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

import cityseg.dataset.synthetic as synthetic
from cityseg.dataset.labels import LABEL_BY_ID, LABEL_ID_KNOWN, LABEL_TO_CATEGORY, PNG_LABELS
from cityseg.dataset.synthetic import (
    DEFAULT_CITIES,
    RawDataset,
    SyntheticSpec,
    draw_scene,
    frame_key,
    write_raw_dataset,
)
from cityseg.errors import UsageError

IMAGE_MEMBER = re.compile(
    r"leftImg8bit/(?P<split>train|val|test)/(?P<city>[a-z][a-z0-9-]*)/"
    r"(?P<key>(?P=city)_\d{6}_\d{6})_leftImg8bit\.png"
)
GT_MEMBER = re.compile(
    r"gtFine/(?P<split>train|val|test)/(?P<city>[a-z][a-z0-9-]*)/"
    r"(?P<key>(?P=city)_\d{6}_\d{6})_gtFine_"
    r"(?P<kind>color\.png|instanceIds\.png|labelIds\.png|polygons\.json)"
)
DOCS = {"README", "license.txt"}
GT_KINDS = {"color.png", "instanceIds.png", "labelIds.png", "polygons.json"}
INSTANCE_IDS = {label.id for label in PNG_LABELS if label.has_instances}
SMALL = SyntheticSpec(
    height=64,
    width=96,
    images_per_city=1,
    cities={"train": ("aachen",), "val": ("lindau",), "test": ("berlin",)},
)


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> RawDataset:
    return write_raw_dataset(tmp_path_factory.mktemp("raw"))


@pytest.fixture(scope="module")
def members(raw: RawDataset) -> dict[str, dict[str, bytes]]:
    """Both zips read once: package -> member name -> bytes."""
    out: dict[str, dict[str, bytes]] = {}
    for package, path in (("leftImg8bit", raw.leftimg_zip), ("gtFine", raw.gtfine_zip)):
        with zipfile.ZipFile(path) as archive:
            out[package] = {name: archive.read(name) for name in archive.namelist()}
    return out


def gt_name(split: str, key: str, kind: str) -> str:
    return f"gtFine/{split}/{key.split('_')[0]}/{key}_gtFine_{kind}"


def decode(data: bytes) -> np.ndarray:
    array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert array is not None
    return np.asarray(array)


def label_ids(members: dict[str, dict[str, bytes]], split: str, key: str) -> np.ndarray:
    return decode(members["gtFine"][gt_name(split, key, "labelIds.png")])


def all_keys(raw: RawDataset) -> list[tuple[str, str]]:
    return [(split, key) for split, keys in raw.keys.items() for key in keys]


def test_frame_key_is_the_official_pattern() -> None:
    assert frame_key("aachen", 0) == "aachen_000000_000019"
    assert frame_key("bad-honnef", 12, 3) == "bad-honnef_000012_000003"


def test_zips_and_keys(raw: RawDataset) -> None:
    assert raw.leftimg_zip == raw.root / "leftImg8bit_trainvaltest.zip"
    assert raw.gtfine_zip == raw.root / "gtFine_trainvaltest.zip"
    assert sorted(p.name for p in raw.root.iterdir()) == sorted(
        [raw.leftimg_zip.name, raw.gtfine_zip.name]
    )
    for path in (raw.leftimg_zip, raw.gtfine_zip):
        with zipfile.ZipFile(path) as archive:
            assert archive.testzip() is None
            assert {i.compress_type for i in archive.infolist()} == {zipfile.ZIP_DEFLATED}
    expected = {
        split: sorted(frame_key(city, seq) for city in cities for seq in range(3))
        for split, cities in DEFAULT_CITIES.items()
    }
    assert raw.keys == expected


def test_leftimg_members_match_official_layout(
    raw: RawDataset, members: dict[str, dict[str, bytes]]
) -> None:
    names = set(members["leftImg8bit"])
    assert DOCS <= names
    found: dict[str, list[str]] = {}
    for name in names - DOCS:
        match = IMAGE_MEMBER.fullmatch(name)
        assert match, name
        assert match["city"] in DEFAULT_CITIES[match["split"]]
        found.setdefault(match["split"], []).append(match["key"])
    assert {split: sorted(keys) for split, keys in found.items()} == raw.keys
    assert b"synthetic" in members["leftImg8bit"]["README"].lower()
    assert b"synthetic" in members["leftImg8bit"]["license.txt"].lower()


def test_gtfine_members_match_official_layout(
    raw: RawDataset, members: dict[str, dict[str, bytes]]
) -> None:
    names = set(members["gtFine"])
    assert DOCS <= names
    kinds: dict[tuple[str, str], set[str]] = {}
    for name in names - DOCS:
        match = GT_MEMBER.fullmatch(name)
        assert match, name
        kinds.setdefault((match["split"], match["key"]), set()).add(match["kind"])
    assert sorted(kinds) == sorted(all_keys(raw))
    assert all(found == GT_KINDS for found in kinds.values())
    for name in set(members["leftImg8bit"]) - DOCS:
        sibling = name.replace("leftImg8bit/", "gtFine/", 1).replace(
            "_leftImg8bit.png", "_gtFine_labelIds.png"
        )
        assert sibling in names


def test_images_and_label_ids_decode_at_spec_size(
    raw: RawDataset, members: dict[str, dict[str, bytes]]
) -> None:
    for split, key in all_keys(raw):
        city = key.split("_")[0]
        image = decode(members["leftImg8bit"][f"leftImg8bit/{split}/{city}/{key}_leftImg8bit.png"])
        assert image.shape == (128, 256, 3) and image.dtype == np.uint8
        assert image.std() > 10  # a scene, not a flat fill, in every split
        labels = label_ids(members, split, key)
        assert labels.shape == (128, 256) and labels.dtype == np.uint8
        assert LABEL_ID_KNOWN[labels].all()


@pytest.mark.parametrize("split", ["train", "val"])
def test_every_category_and_the_void_frame_in_every_scene(
    raw: RawDataset, members: dict[str, dict[str, bytes]], split: str
) -> None:
    for key in raw.keys[split]:
        labels = label_ids(members, split, key)
        assert set(np.unique(LABEL_TO_CATEGORY[labels])) == set(range(8)), key
        assert {1, 3, 7, 11, 23} <= set(np.unique(labels).tolist()), key


def test_instance_ids_agree_with_label_ids(
    raw: RawDataset, members: dict[str, dict[str, bytes]]
) -> None:
    seen_instances = 0
    for split, key in all_keys(raw):
        labels = label_ids(members, split, key)
        instances = decode(members["gtFine"][gt_name(split, key, "instanceIds.png")])
        assert instances.dtype == np.uint16 and instances.shape == labels.shape
        grouped = instances >= 1000
        assert np.array_equal(instances[grouped] // 1000, labels[grouped])
        assert np.array_equal(instances[~grouped], labels[~grouped])
        assert set(np.unique(labels[grouped]).tolist()) <= INSTANCE_IDS
        # Instance classes are always numbered, never left as a bare labelId.
        assert not np.isin(instances[~grouped], list(INSTANCE_IDS)).any()
        seen_instances += len(np.unique(instances[grouped]))
    assert seen_instances > len(raw.keys["train"])


def test_colour_png_uses_the_label_palette(
    raw: RawDataset, members: dict[str, dict[str, bytes]]
) -> None:
    palette = np.zeros((256, 3), np.uint8)
    for label in PNG_LABELS:
        palette[label.id] = label.colour
    for split, key in all_keys(raw):
        bgra = decode(members["gtFine"][gt_name(split, key, "color.png")])
        assert bgra.shape == (128, 256, 4) and bgra.dtype == np.uint8
        assert (bgra[..., 3] == 255).all()
        rgb = cv2.cvtColor(bgra, cv2.COLOR_BGRA2RGB)
        assert np.array_equal(rgb, palette[label_ids(members, split, key)])


def test_polygons_json_redraws_the_label_ids(
    raw: RawDataset, members: dict[str, dict[str, bytes]]
) -> None:
    names = {label.name: label.id for label in PNG_LABELS}
    for split, key in all_keys(raw):
        member = members["gtFine"][gt_name(split, key, "polygons.json")]
        document: dict[str, Any] = json.loads(member)
        assert document["imgHeight"] == 128 and document["imgWidth"] == 256
        redrawn = np.zeros((128, 256), np.uint8)
        for obj in document["objects"]:
            assert set(obj) == {"label", "polygon"}
            points = np.array(obj["polygon"])
            assert points.ndim == 2 and points.shape[1] == 2 and len(points) >= 3
            assert points.dtype.kind == "i"
            assert (points >= 0).all() and (points[:, 0] < 256).all() and (points[:, 1] < 128).all()
            contour = [points.astype(np.int32).reshape(-1, 1, 2)]
            cv2.fillPoly(redrawn, contour, names[obj["label"]])
        assert np.array_equal(redrawn, label_ids(members, split, key)), key


def test_test_split_has_only_dummy_void_labels(
    raw: RawDataset, members: dict[str, dict[str, bytes]]
) -> None:
    for key in raw.keys["test"]:
        labels = label_ids(members, "test", key)
        assert set(np.unique(labels).tolist()) == {0, 1, 3}
        instances = decode(members["gtFine"][gt_name("test", key, "instanceIds.png")])
        assert np.array_equal(instances, labels)
        document = json.loads(members["gtFine"][gt_name("test", key, "polygons.json")])
        assert {obj["label"] for obj in document["objects"]} == {"ego vehicle", "out of roi"}


def read_members(raw: RawDataset) -> dict[str, bytes]:
    out = {}
    for path in (raw.leftimg_zip, raw.gtfine_zip):
        with zipfile.ZipFile(path) as archive:
            out.update({name: archive.read(name) for name in archive.namelist()})
    return out


def test_same_seed_same_bytes_other_seed_other_scenes(tmp_path: Path) -> None:
    first = write_raw_dataset(tmp_path / "a", SMALL)
    again = write_raw_dataset(tmp_path / "b", SMALL)
    assert read_members(first) == read_members(again)
    assert first.leftimg_zip.read_bytes() == again.leftimg_zip.read_bytes()
    assert first.gtfine_zip.read_bytes() == again.gtfine_zip.read_bytes()

    other = read_members(write_raw_dataset(tmp_path / "c", dataclasses.replace(SMALL, seed=1)))
    base = read_members(first)
    pngs = [name for name in base if name.endswith(".png")]
    assert pngs and set(other) == set(base)
    assert all(other[name] != base[name] for name in pngs if "leftImg8bit" in name)
    assert any(other[name] != base[name] for name in pngs if name.endswith("labelIds.png"))


def test_custom_spec_is_honoured(tmp_path: Path) -> None:
    spec = SyntheticSpec(
        height=48, width=80, images_per_city=2, cities={"train": ("ulm", "bad-honnef")}, seed=7
    )
    raw = write_raw_dataset(tmp_path, spec)
    keys = ["bad-honnef_000000_000019", "bad-honnef_000001_000019"]
    keys += ["ulm_000000_000019", "ulm_000001_000019"]
    assert raw.keys == {"train": keys}
    files = read_members(raw)
    images = sorted(name for name in files if IMAGE_MEMBER.fullmatch(name))
    assert [IMAGE_MEMBER.fullmatch(name)["key"] for name in images] == keys  # type: ignore[index]
    for name in images:
        assert decode(files[name]).shape == (48, 80, 3)
        sibling = name.replace("leftImg8bit/", "gtFine/", 1)
        labels = decode(files[sibling.replace("_leftImg8bit.png", "_gtFine_labelIds.png")])
        assert labels.shape == (48, 80)
        assert len(np.unique(LABEL_TO_CATEGORY[labels])) == 8
    assert b"80x48" in files["README"]


def test_adding_cities_keeps_other_scenes(tmp_path: Path) -> None:
    small = read_members(write_raw_dataset(tmp_path / "a", SMALL))
    bigger = SyntheticSpec(
        height=SMALL.height,
        width=SMALL.width,
        images_per_city=2,
        cities={**SMALL.cities, "train": ("aachen", "bochum")},
    )
    assert bigger.seed == SMALL.seed
    large = read_members(write_raw_dataset(tmp_path / "b", bigger))
    shared = set(small) - {"README"}
    assert all(small[name] == large[name] for name in shared)


def test_interrupted_write_keeps_previous_zips(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = write_raw_dataset(tmp_path, SMALL)
    before = raw.leftimg_zip.read_bytes(), raw.gtfine_zip.read_bytes()
    calls = 0

    def failing(rng: np.random.Generator, height: int, width: int) -> synthetic.Scene:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise KeyboardInterrupt
        return draw_scene(rng, height, width)

    monkeypatch.setattr(synthetic, "draw_scene", failing)
    with pytest.raises(KeyboardInterrupt):
        write_raw_dataset(tmp_path, SyntheticSpec(seed=3))
    assert (raw.leftimg_zip.read_bytes(), raw.gtfine_zip.read_bytes()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [raw.leftimg_zip.name, raw.gtfine_zip.name]
    )


@pytest.mark.parametrize(("height", "width"), [(32, 32), (64, 128), (128, 256)])
def test_draw_scene_is_exact_and_deterministic(height: int, width: int) -> None:
    for seed in range(8):
        scene = draw_scene(np.random.default_rng(seed), height, width)
        again = draw_scene(np.random.default_rng(seed), height, width)
        assert np.array_equal(scene.image, again.image)
        assert np.array_equal(scene.label_ids, again.label_ids)
        assert scene.polygons == again.polygons
        assert scene.image.shape == (height, width, 3) and scene.image.dtype == np.uint8
        assert scene.label_ids.shape == (height, width) and scene.label_ids.dtype == np.uint8
        assert scene.label_ids.max() <= 33
        assert len(np.unique(LABEL_TO_CATEGORY[scene.label_ids])) == 8
        grouped = scene.instance_ids >= 1000
        assert np.array_equal(scene.instance_ids[grouped] // 1000, scene.label_ids[grouped])
        assert np.array_equal(scene.instance_ids[~grouped], scene.label_ids[~grouped])
        assert all(obj["label"] in {LABEL_BY_ID[i].name for i in range(34)}
                   for obj in scene.polygons)  # fmt: skip


def test_ignore_in_eval_labels_are_exercised() -> None:
    rng = np.random.default_rng(0)
    seen: set[int] = set()
    for _ in range(30):
        seen |= set(np.unique(draw_scene(rng, 128, 256).label_ids).tolist())
    assert {1, 3, 9, 14, 18, 29} <= seen
    assert {12, 13, 19, 20, 21, 22, 25, 27, 28, 33} <= seen


@pytest.mark.parametrize(
    "change",
    [
        {"height": 16},
        {"width": 0},
        {"images_per_city": 0},
        {"seed": -1},
        {"cities": {"training": ("aachen",)}},
        {"cities": {"train": ("Aachen",)}},
        {"cities": {"train": ("new_york",)}},
        {"cities": {"train": ("aachen",), "val": ("aachen",)}},
        {"cities": {"train": "aachen"}},
    ],
)
def test_bad_spec_is_a_one_line_usage_error(change: dict[str, Any]) -> None:
    with pytest.raises(UsageError):
        SyntheticSpec(**change)


def test_spec_default_is_immutable_and_hashable() -> None:
    spec = SyntheticSpec()
    assert dict(spec.cities) == DEFAULT_CITIES
    with pytest.raises(TypeError):
        spec.cities["train"] = ("ulm",)  # type: ignore[index]
    assert hash(spec) == hash(SyntheticSpec(cities=dict(DEFAULT_CITIES)))
