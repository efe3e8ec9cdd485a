"""`cityseg.inference.predict`: inputs, formats, bad files and the legend.

One tiny bundle (PSPNet-resnet18 at 48x96, random weights) is built once for the module:
the tests check plumbing (sizes, names, formats, failures), which random weights exercise
as well as trained ones, at a fraction of the build time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cityseg.config import OutputFormat, PredictConfig
from cityseg.dataset import labels
from cityseg.dataset.synthetic import draw_scene
from cityseg.errors import DataError, UsageError
from cityseg.images import decode_mask, read_image, read_mask, write_mask, write_rgb
from cityseg.inference.predict import PredictReport, predict_paths
from cityseg.inference.render import draw_legend, legend_box, render

NAMES = list(labels.CATEGORY_NAMES)
PALETTE = labels.CATEGORY_PALETTE


def palette_only(rgb: np.ndarray) -> bool:
    colours = {tuple(int(c) for c in row) for row in PALETTE}
    found = {tuple(int(c) for c in row) for row in np.unique(rgb.reshape(-1, 3), axis=0)}
    return found <= colours


def scene(height: int, width: int, seed: int = 0) -> np.ndarray:
    return draw_scene(np.random.default_rng(seed), height, width).image


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def bundle(tiny_bundle: Path) -> Path:
    return tiny_bundle


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of three small PNG/JPEG photos, one in a sub-folder; read-only."""
    root = tmp_path_factory.mktemp("photos")
    write_rgb(root / "a.png", scene(64, 128, 1))
    write_rgb(root / "sub" / "b.png", scene(96, 160, 2))
    import cv2

    cv2.imwrite(str(root / "c.JPG"), cv2.cvtColor(scene(64, 96, 3), cv2.COLOR_RGB2BGR))
    (root / "notes.txt").write_text("not an image")
    return root


def run(inputs: list[Path], output: Path, bundle: Path, **options: object) -> PredictReport:
    """`options` are PredictConfig's fields (`format=`, `legend=`, ...)."""
    config = PredictConfig(**options)  # type: ignore[arg-type]
    return predict_paths(inputs, output, model=bundle, config=config, show_progress=False)


# --------------------------------------------------------------------------- end to end


def test_full_size_png_gives_full_size_palette_png(tmp_path: Path, bundle: Path) -> None:
    source = tmp_path / "frame.png"
    write_rgb(source, scene(1024, 2048))
    report = run([source], tmp_path / "out", bundle)
    assert report.written == [tmp_path / "out" / "frame.png"]
    assert report.failed == [] and report.model == bundle
    colour = read_image(report.written[0])
    assert colour.shape == (1024, 2048, 3)
    assert palette_only(colour)


def test_directory_and_glob_inputs(tmp_path: Path, bundle: Path, photos: Path) -> None:
    report = run([photos], tmp_path / "dir", bundle, format=OutputFormat.ids)
    names = sorted(p.relative_to(tmp_path / "dir").as_posix() for p in report.written)
    assert names == ["a.png", "c.png", "sub/b.png"]  # notes.txt is not collected
    assert read_mask(tmp_path / "dir" / "sub" / "b.png").shape == (96, 160)
    assert read_mask(tmp_path / "dir" / "c.png").shape == (64, 96)

    report = run([photos / "**" / "*.png"], tmp_path / "glob", bundle)
    assert sorted(p.name for p in report.written) == ["a.png", "b.png"]
    assert all(p.parent == tmp_path / "glob" for p in report.written)


def test_corrupt_file_is_reported_and_the_rest_written(
    tmp_path: Path, bundle: Path, messages: list[str]
) -> None:
    inputs = tmp_path / "in"
    write_rgb(inputs / "good1.png", scene(64, 128, 4))
    (inputs / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (inputs / "text.png").write_text("hello")
    write_rgb(inputs / "good2.png", scene(48, 96, 5))
    report = run([inputs], tmp_path / "out", bundle, batch=2)
    assert sorted(p.name for p in report.written) == ["good1.png", "good2.png"]
    assert sorted(p.name for p, _ in report.failed) == ["bad.png", "text.png"]
    assert all("\n" not in reason for _, reason in report.failed)
    warnings = [m for m in messages if m.startswith("warning:")]
    assert len(warnings) == 2 and any("bad.png" in m for m in warnings)
    assert not (tmp_path / "out" / "bad.png").exists()
    assert all(p.is_file() for p in report.written)


def test_missing_input_fails_before_loading_a_model(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        predict_paths([tmp_path / "nope.png"], tmp_path / "out", model=tmp_path / "no-model")


def test_formats(tmp_path: Path, bundle: Path) -> None:
    source = tmp_path / "x.png"
    image = scene(96, 192, 6)
    write_rgb(source, image)

    ids = read_mask(run([source], tmp_path / "ids.png", bundle, format="ids").written[0])
    assert ids.shape == (96, 192) and ids.max() < 8

    colour = read_image(run([source], tmp_path / "colour.png", bundle).written[0])
    assert np.array_equal(colour, labels.CATEGORY_PALETTE[ids])

    overlay_path = run([source], tmp_path / "ov.png", bundle, format=OutputFormat.overlay)
    overlay = read_image(overlay_path.written[0])
    assert not np.array_equal(overlay, image) and not np.array_equal(overlay, colour)

    label_ids = read_mask(run([source], tmp_path / "l.png", bundle, format="labelids").written[0])
    assert set(np.unique(label_ids)) <= set(labels.CATEGORY_TO_LABEL_ID.tolist())
    assert np.array_equal(label_ids, labels.CATEGORY_TO_LABEL_ID[ids])

    single = tmp_path / "exact" / "name.png"
    assert run([source], single, bundle).written == [single] and single.is_file()


def test_legend_changes_only_its_box(tmp_path: Path, bundle: Path) -> None:
    source = tmp_path / "x.png"
    write_rgb(source, scene(256, 512, 7))
    plain = read_image(run([source], tmp_path / "plain.png", bundle).written[0])
    marked = read_image(run([source], tmp_path / "legend.png", bundle, legend=True).written[0])
    ids = read_mask(run([source], tmp_path / "ids.png", bundle, format="ids").written[0])
    box = legend_box(plain.shape, NAMES, {int(v) for v in np.unique(ids)})
    assert box is not None
    x0, y0, x1, y1 = box
    inside = np.zeros(plain.shape[:2], dtype=bool)
    inside[y0:y1, x0:x1] = True
    changed = (plain != marked).any(axis=-1)
    assert changed.any() and not changed[~inside].any()


def test_usage_errors(tmp_path: Path, bundle: Path) -> None:
    source = tmp_path / "x.png"
    write_rgb(source, scene(48, 96))
    for alpha in (-0.1, 1.5):
        with pytest.raises(UsageError, match="alpha"):
            run([source], tmp_path / "o", bundle, format="overlay", alpha=alpha)
    with pytest.raises(UsageError, match="overwrite input"):
        run([source], source, bundle)
    other = tmp_path / "other"
    write_rgb(other / "x.png", scene(48, 96))
    with pytest.raises(UsageError, match="both write"):
        run([source, other / "x.png"], tmp_path / "o", bundle)


def test_labelids_needs_a_categories_bundle(tmp_path: Path, bundle: Path) -> None:
    import json
    import shutil

    copy = tmp_path / "trainids"
    shutil.copytree(bundle, copy)
    card_path = copy / "cityseg.json"
    card = json.loads(card_path.read_text())
    card["scheme"] = "trainids"
    card_path.write_text(json.dumps(card))
    source = tmp_path / "x.png"
    write_rgb(source, scene(48, 96))
    with pytest.raises(UsageError, match="categories"):
        run([source], tmp_path / "o", copy, format="labelids")


def test_tta_flip_gives_a_valid_mask(tmp_path: Path, bundle: Path) -> None:
    source = tmp_path / "x.png"
    write_rgb(source, scene(72, 100))
    report = run([source], tmp_path / "t.png", bundle, format="ids", tta_flip=True)
    mask = decode_mask(report.written[0].read_bytes(), "t")
    assert mask.shape == (72, 100) and mask.max() < 8


# --------------------------------------------------------------------------- no TF


def test_render_formats_without_tf() -> None:
    image = np.full((20, 30, 3), 200, dtype=np.uint8)
    mask = np.zeros((20, 30), dtype=np.uint8)
    mask[:, 15:] = 5
    common = {"palette": PALETTE, "class_names": NAMES}
    assert render(image, mask, format=OutputFormat.ids, **common) is mask  # type: ignore[arg-type]
    colour = render(image, mask, format=OutputFormat.colour, **common)  # type: ignore[arg-type]
    assert np.array_equal(colour, PALETTE[mask])
    lab = render(image, mask, format=OutputFormat.labelids, **common)  # type: ignore[arg-type]
    assert set(np.unique(lab)) == {0, 23}
    half = render(image, mask, format=OutputFormat.overlay, alpha=0.5, **common)  # type: ignore[arg-type]
    assert np.abs(half.astype(int) - (image // 2 + colour // 2)).max() <= 1
    photo = render(image, mask, format=OutputFormat.overlay, alpha=0.0, **common)  # type: ignore[arg-type]
    assert np.array_equal(photo, image)
    with pytest.raises(UsageError):
        render(image, mask, format=OutputFormat.overlay, alpha=2.0, **common)  # type: ignore[arg-type]
    # A legend on ids would corrupt the values, so it is ignored there.
    ids = render(image, mask, format=OutputFormat.ids, legend=True, **common)  # type: ignore[arg-type]
    assert np.array_equal(ids, mask)


def test_draw_legend_lists_present_classes_inside_its_box() -> None:
    image = np.full((512, 1024, 3), 90, dtype=np.uint8)
    few = legend_box(image.shape, NAMES, {1, 5})
    every = legend_box(image.shape, NAMES, None)
    assert few is not None and every is not None
    assert few[3] < every[3]  # two rows are shorter than eight
    drawn = draw_legend(image, NAMES, PALETTE, {1, 5})
    x0, y0, x1, y1 = few
    changed = (drawn != image).any(axis=-1)
    assert changed[y0:y1, x0:x1].any()
    changed[y0:y1, x0:x1] = False
    assert not changed.any()
    box = drawn[y0:y1, x0:x1].reshape(-1, 3)
    for class_id in (1, 5):  # each present class has its swatch colour in the box
        assert (box == PALETTE[class_id]).all(axis=1).any()
    assert not (box == PALETTE[7]).all(axis=1).any()
    assert legend_box(image.shape, NAMES, set()) is None
    assert np.array_equal(draw_legend(image, NAMES, PALETTE, set()), image)


def test_draw_legend_on_a_tiny_image_is_clipped() -> None:
    image = np.zeros((10, 12, 3), dtype=np.uint8)
    drawn = draw_legend(image, NAMES, PALETTE)
    assert drawn.shape == image.shape


def test_cli_writes_good_files_and_exits_1_for_a_corrupt_one(
    bundle: Path, tmp_path: Path, cli
) -> None:
    import cv2

    folder = tmp_path / "in"
    folder.mkdir()
    image = np.random.default_rng(0).integers(0, 255, (40, 70, 3), dtype=np.uint8)
    cv2.imwrite(str(folder / "good.png"), image)
    (folder / "bad.png").write_text("not an image")
    result = cli("predict", folder, "-o", tmp_path / "out", "--model", bundle, "-q")
    assert result.exit_code == 1
    assert "bad.png is not a readable image" in result.stderr
    assert "1 input(s) could not be read" in result.stderr
    written = cv2.imread(str(tmp_path / "out" / "good.png"))
    assert written.shape == (40, 70, 3)


# --------------------------------------------------------------------------- what inputs mean


def test_empty_input_is_a_usage_error_not_the_current_folder(
    bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli
) -> None:
    """`cityseg predict "$UNSET" -o mask.png` once predicted the whole working directory."""
    monkeypatch.chdir(tmp_path)
    write_rgb(tmp_path / "a.png", scene(48, 96, 1))
    write_rgb(tmp_path / "sub" / "b.png", scene(48, 96, 2))
    for blank in ("", "   "):
        result = cli("predict", blank, "-o", "mask.png", "--model", bundle, "-q")
        assert result.exit_code == 2, result.stderr
        assert "empty" in result.stderr and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "mask.png").exists()
    with pytest.raises(UsageError, match="empty"):
        predict_paths(["a.png", ""], tmp_path / "out", model=bundle)
    with pytest.raises(UsageError, match="empty"):
        predict_paths(["a.png"], " ", model=bundle)


def test_image_named_output_takes_exactly_one_image(
    bundle: Path, photos: Path, tmp_path: Path, cli
) -> None:
    """`-o NAME.png` is a file, never a folder named like one."""
    for name in ("masks.png", "masks.JPG", "masks.tif"):
        with pytest.raises(UsageError, match="names one file but 3 images"):
            run([photos], tmp_path / name, bundle)
        assert not (tmp_path / name).exists()
    with pytest.raises(UsageError, match="names one file but 2 images"):
        run([photos / "a.png", photos / "sub" / "b.png"], tmp_path / "two.png", bundle)
    result = cli("predict", photos, "-o", tmp_path / "m.png", "--model", bundle, "-q")
    assert result.exit_code == 2 and "-o" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "m.png").exists()

    one = tmp_path / "one"
    write_rgb(one / "only.png", scene(48, 96, 3))
    report = run([one], tmp_path / "single.png", bundle)  # a folder of one image -> the file
    assert report.written == [tmp_path / "single.png"] and (tmp_path / "single.png").is_file()
    with pytest.raises(UsageError, match=r"writes \.png or \.jpg"):
        run([one / "only.png"], tmp_path / "single.tif", bundle)


def _fake_dataset(root: Path) -> None:
    """The layout `prepare --size` writes, every file a colour PNG, so that only the folder
    rule (not the grayscale one) can tell its labels from its images."""
    (root / "manifest.json").parent.mkdir(parents=True, exist_ok=True)
    (root / "manifest.json").write_text("{}")
    for folder in ("images", "labelIds", "masks/categories"):
        write_rgb(root / folder / "k.png", scene(32, 64, 8))
    for folder in ("sized/32x64/images", "sized/32x64/masks/categories"):
        write_rgb(root / folder / "k.png", scene(32, 64, 9))


def test_folder_input_takes_photos_and_skips_labels_masks_and_outputs(
    bundle: Path, tmp_path: Path, messages: list[str]
) -> None:
    import cv2

    root = tmp_path / "work"
    write_rgb(root / "aachen_000000_000019_leftImg8bit.png", scene(48, 96, 1))
    cv2.imwrite(str(root / "street.jpg"), cv2.cvtColor(scene(48, 96, 2), cv2.COLOR_RGB2BGR))
    write_mask(root / "aachen_000000_000019_gtFine_labelIds.png", np.zeros((48, 96), np.uint8))
    write_rgb(root / "aachen_000000_000019_gtFine_color.png", scene(48, 96, 3))  # by name
    write_rgb(root / "frame_colour.png", scene(48, 96, 3))  # remap's colour PNG, by name
    write_mask(root / "plain.png", np.full((48, 96), 3, np.uint8))  # a grayscale mask
    write_rgb(root / ".cache" / "thumb.png", scene(48, 96, 4))  # hidden
    _fake_dataset(root / "data" / "cityscapes")
    first = run([root / "street.jpg"], root / "earlier", bundle)  # an earlier output folder
    assert (root / "earlier" / ".cityseg-predict.json").is_file()
    assert first.written == [root / "earlier" / "street.png"]

    messages.clear()
    report = run([root], tmp_path / "out", bundle)
    names = sorted(p.relative_to(tmp_path / "out").as_posix() for p in report.written)
    assert names == [
        "aachen_000000_000019_leftImg8bit.png",
        "data/cityscapes/images/k.png",
        "data/cityscapes/sized/32x64/images/k.png",
        "street.png",
    ]
    notes = [m for m in messages if m.startswith("note: folder inputs skipped")]
    assert len(notes) == 1 and "\n" not in notes[0]
    assert notes[0].startswith(
        "note: folder inputs skipped 9: 1 hidden, 1 in cityseg predict output folders, "
        "3 in prepared labelIds/ or masks/ folders, 3 named like labels"
    )
    assert "1 grayscale/palette mask PNGs" in notes[0]

    # The -o folder itself is never read back, marked or not; named files are taken as given.
    report = run([root], root / "earlier", bundle)
    assert (root / "earlier" / "street.png") in report.written
    label = root / "aachen_000000_000019_gtFine_labelIds.png"
    assert run([label], tmp_path / "label.png", bundle).written == [tmp_path / "label.png"]


def test_folder_of_masks_only_says_what_it_skipped(bundle: Path, tmp_path: Path) -> None:
    write_mask(tmp_path / "masks" / "a.png", np.zeros((8, 8), np.uint8))
    write_mask(tmp_path / "masks" / "b_labelIds.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(DataError, match=r"no PNG or JPEG photos \(skipped 2: 1 named like"):
        run([tmp_path / "masks"], tmp_path / "out", bundle)


def test_palette_pngs_in_folders_are_masks(bundle: Path, tmp_path: Path) -> None:
    image_lib = pytest.importorskip("PIL.Image")
    folder = tmp_path / "in"
    write_rgb(folder / "photo.png", scene(48, 96, 5))
    image_lib.fromarray(np.zeros((48, 96), np.uint8), mode="P").save(folder / "voc.png")
    report = run([folder], tmp_path / "out", bundle)
    assert [p.name for p in report.written] == ["photo.png"]


def test_only_new_or_empty_output_folders_are_marked(bundle: Path, tmp_path: Path) -> None:
    source = tmp_path / "x.png"
    write_rgb(source, scene(48, 96, 6))
    shared = tmp_path / "shared"
    write_rgb(shared / "mine.png", scene(48, 96, 7))  # the user's own file: not our folder
    run([source], shared, bundle)
    assert not (shared / ".cityseg-predict.json").exists()
    (tmp_path / "empty").mkdir()
    run([source], tmp_path / "empty", bundle)
    assert (tmp_path / "empty" / ".cityseg-predict.json").is_file()
