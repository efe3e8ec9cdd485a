"""The Python API (`cityseg.Model`, `cityseg.Run`, `cityseg.train`, `cityseg.prepare`,
`cityseg.remap`, `cityseg.predict_files`, `cityseg.evaluate_predictions`,
`cityseg.benchmark`, `cityseg.demo`) on a real tiny model: it must give what the CLI
gives for the same files, and read runs and evaluations back as the typed records the
commands write."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

import cityseg
from cityseg.config import Arch, Optimizer, TrainConfig
from cityseg.dataset import labels
from cityseg.dataset.manifest import read_manifest
from cityseg.dataset.synthetic import draw_scene
from cityseg.errors import DataError, UsageError
from cityseg.images import read_mask, write_mask, write_rgb

TINY = {
    "arch": "linknet",
    "backbone": "mobilenetv2",
    "weights": "none",
    "size": (64, 128),
    "epochs": 1,
    "steps_per_epoch": 2,
    "batch": 2,
    "aug": "none",
    "patience": 0,
}


def photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    return draw_scene(np.random.default_rng(seed), height, width).image


@pytest.fixture(scope="module")
def api_run(prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> cityseg.Run:
    """A one-epoch LinkNet-MobileNetV2 run trained through `cityseg.train`."""
    project = tmp_path_factory.mktemp("api-runs") / "train"
    return cityseg.train(data=str(prepared), project=project, name="tiny", verbose=False, **TINY)


# --------------------------------------------------------------------------- import


def test_import_and_api_attributes_do_not_import_tensorflow() -> None:
    script = (
        "import json, sys, time\n"
        "start = time.perf_counter()\n"
        "import cityseg\n"
        "took = time.perf_counter() - start\n"
        "found = {n: getattr(cityseg, n) for n in cityseg.__all__ if n != 'serve'}\n"
        "from cityseg import Model, Run, prepare, train\n"
        "assert set(cityseg.__all__) <= set(dir(cityseg)), dir(cityseg)\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'segmentation_models', 'albumentations')\n"
        "         if m in sys.modules]\n"
        "print(json.dumps({'heavy': heavy, 'took': took}))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["heavy"] == []
    assert result["took"] < 0.5  # the version string and a lookup table, nothing else


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Modle'"):
        cityseg.Modle  # noqa: B018
    assert cityseg.serve.create_app is not None  # the serve package, imported on demand


# --------------------------------------------------------------------------- no model needed


def test_overrides_take_the_cli_spellings() -> None:
    from cityseg.api.run import with_overrides

    config = with_overrides(TrainConfig(), {"size": "96x160", "optimizer": "sgd", "data": "d"})
    assert (config.height, config.width, config.optimizer) == (96, 160, Optimizer.sgd)
    assert config.data == Path("d")
    # the CLI passes its enums: the plain-string choices keep plain strings, as config.json
    chosen = with_overrides(TrainConfig(), {"arch": Arch.unet, "optimizer": Optimizer.sgd})
    assert type(chosen.arch) is str and chosen.arch == "unet"
    assert chosen.optimizer is Optimizer.sgd
    with pytest.raises(UsageError, match="unknown training setting.*epoch\\b"):
        with_overrides(TrainConfig(), {"epoch": 3})
    with pytest.raises(UsageError, match="optimizer='rmsprop' is not one of adam"):
        with_overrides(TrainConfig(), {"optimizer": "rmsprop"})


def test_prepare_refuses_options_of_the_other_format(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="for own data"):
        cityseg.prepare(tmp_path, classes=["a", "b"])
    with pytest.raises(UsageError, match="for Cityscapes"):
        cityseg.prepare(tmp_path, format="via", limit=3)


def test_prepare_own_data_returns_the_typed_report(tmp_path: Path) -> None:
    from cityseg.dataset.synthetic_via import ViaSpec, write_via_project

    project = write_via_project(tmp_path / "photos", ViaSpec(images=8, height=48, width=64))
    report = cityseg.prepare(
        project.folder, tmp_path / "ds", format="via", annotations=project.csv, verbose=False
    )
    assert isinstance(report, cityseg.PrepareReport) and not report.up_to_date
    assert sum(row.images for row in report.splits) == 8
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert manifest["schemes"]["classes"]["classes"][1:] == list(ViaSpec().classes)


def test_remap_files_and_a_dataset_in_place(prepared: Path, tmp_path: Path) -> None:
    label_ids = np.array([[7, 26, 11], [23, 24, 0]], dtype=np.uint8)  # road car ... void
    write_mask(tmp_path / "in" / "a_labelIds.png", label_ids)
    report = cityseg.remap(tmp_path / "in", tmp_path / "out", scheme="trainids", verbose=False)
    assert isinstance(report, cityseg.RemapReport) and not report.dataset
    assert (report.written, report.scheme, report.output) == (1, "trainids", tmp_path / "out")
    written = read_mask(tmp_path / "out" / "a_trainids.png")
    assert np.array_equal(written, labels.LABEL_TO_TRAIN_ID[label_ids])

    dataset = tmp_path / "ds"
    shutil.copytree(prepared, dataset)
    report = cityseg.remap(str(dataset), scheme="trainids", colour=True, verbose=False)
    assert report.dataset and report.output == dataset / "masks" / "trainids"
    assert "trainids" in read_manifest(dataset)["schemes"]
    with pytest.raises(UsageError, match="in place"):
        cityseg.remap(dataset, tmp_path / "elsewhere", verbose=False)


def test_demo_data_only_sends_its_messages_to_a_handler_of_ones_own(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], messages: list[str]
) -> None:
    assert cityseg.demo(tmp_path, images=1, data_only=True) is None
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == [
        "gtFine_trainvaltest.zip",
        "leftImg8bit_trainvaltest.zip",
    ]
    assert messages[0].startswith("[1/5] synthetic raw zips") and "cityseg prepare" in messages[1]
    assert capsys.readouterr() == ("", "")  # that handler takes over: cityseg installs none


def test_api_messages_go_to_stdout_unless_not_verbose(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cityseg.demo(tmp_path / "a", images=1, data_only=True)
    out, err = capsys.readouterr()
    assert out.startswith("[1/5] synthetic raw zips (") and "\nnext: cityseg prepare " in out
    assert err == ""  # a notebook shows stderr in red
    cityseg.demo(tmp_path / "b", images=1, data_only=True, verbose=False)
    assert capsys.readouterr() == ("", "")
    cityseg.demo(tmp_path / "c", images=1, data_only=True)  # verbose=False was for one call
    assert "next: cityseg prepare" in capsys.readouterr().out


def _perfect_predictions(prepared: Path, folder: Path) -> None:
    for entry in read_manifest(prepared)["splits"]["test"]:
        truth = read_mask(prepared / entry["masks"]["categories"])
        write_mask(folder / f"{entry['key']}.png", truth)


def test_evaluate_predictions_scores_pngs(
    prepared: Path, tmp_path: Path, cli, messages: list[str]
) -> None:
    _perfect_predictions(prepared, tmp_path / "pred")
    report = cityseg.evaluate_predictions(tmp_path / "pred", prepared, project=tmp_path / "eval")
    assert isinstance(report, cityseg.EvalReport) and report.source.kind == "predictions"
    assert report.out_dir == tmp_path / "eval" / "predictions"
    assert report.scores.mean_iou == 1.0
    assert report.official is not None and report.official.mean_iou == 1.0
    assert any(m.startswith("evaluating") for m in messages)
    result = cli("evaluate", "--data", prepared, "--predictions", tmp_path / "pred",
                 "--project", tmp_path / "eval", "-q")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    again = cityseg.EvalReport.read(tmp_path / "eval" / "predictions2")  # the CLI's run
    assert again.scores == report.scores and again.official == report.official


def test_evaluate_predictions_does_not_import_tensorflow(prepared: Path, tmp_path: Path) -> None:
    _perfect_predictions(prepared, tmp_path / "pred")
    script = (
        "import sys, cityseg\n"
        f"report = cityseg.evaluate_predictions({str(tmp_path / 'pred')!r}, {str(prepared)!r},\n"
        f"    project={str(tmp_path / 'eval')!r}, verbose=False)\n"
        "assert report.scores.mean_iou == 1.0\n"
        "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_run_refuses_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="is not a cityseg training run"):
        cityseg.Run(tmp_path)


# --------------------------------------------------------------------------- a tiny model


@pytest.mark.slow
def test_model_none_is_the_newest_runs_best(
    api_run: cityseg.Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cityseg.Model(project=api_run.path.parent, verbose=False).path == api_run.path / "best"
    for name, age in (("newer", 0), ("older", 60)):
        shutil.copytree(api_run.path, tmp_path / "runs" / "train" / name)
        card = tmp_path / "runs" / "train" / name / "best" / "cityseg.json"
        os.utime(card, (time.time() - age, time.time() - age))
    monkeypatch.chdir(tmp_path)  # Model() looks in runs/train, as the CLI does
    assert cityseg.Model(verbose=False).path == Path("runs/train/newer/best")
    assert cityseg.Run.newest().path == Path("runs/train/newer")


@pytest.mark.slow
def test_predict_path_array_and_pil_equal_cli_ids(
    api_run: cityseg.Run, tmp_path: Path, cli
) -> None:
    image = photo(75, 110, seed=3)  # not the model's 64x128: masks come back at this size
    path = tmp_path / "street.png"
    write_rgb(path, image)
    best = api_run.path / "best"
    result = cli("predict", path, "-o", tmp_path / "ids.png", "--model", best, "--format", "ids")
    assert result.exit_code == 0, result.stderr
    expected = read_mask(tmp_path / "ids.png")
    assert expected.shape == (75, 110)

    model = api_run.best
    with Image.open(path) as pil:
        masks = model.predict([path, str(path), image, pil])
        assert np.array_equal(model.predict(pil), expected)
    for mask in [*masks, model.predict(path), model.predict(image)]:
        assert mask.dtype == np.uint8 and np.array_equal(mask, expected)
    other = photo(40, 50, seed=4)
    sizes = [m.shape for m in model.predict([other, image, other], batch=2)]
    assert sizes == [(40, 50), (75, 110), (40, 50)]
    assert model.colourise(expected).shape == (75, 110, 3)


@pytest.mark.slow
def test_probabilities_sum_to_one_and_give_the_mask(api_run: cityseg.Run) -> None:
    model = api_run.best
    image = photo(70, 90, seed=5)
    mask, probs = model.predict(image, probabilities=True)
    assert probs.shape == (70, 90, len(model.classes)) and mask.shape == (70, 90)
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, atol=1e-5)
    assert (probs.argmax(axis=-1) == mask).mean() > 0.999  # ties aside, the same argmax
    [(again, _)] = model.predict([image], probabilities=True)
    assert np.array_equal(again, mask)


@pytest.mark.slow
def test_exif_orientation_is_applied_for_paths_and_pil(
    api_run: cityseg.Run, tmp_path: Path
) -> None:
    pil = Image.fromarray(photo(64, 96, seed=6))
    exif = pil.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = tmp_path / "phone.jpg"
    pil.save(path, "JPEG", exif=exif.tobytes(), quality=95)
    model = api_run.best
    from_path = model.predict(path)
    with Image.open(path) as opened:
        from_pil = model.predict(opened)
    assert from_path.shape == from_pil.shape == (96, 64)
    assert (from_path == from_pil).mean() > 0.99  # two JPEG decoders may differ by a level


@pytest.mark.slow
def test_bad_images_are_one_line_errors(api_run: cityseg.Run, tmp_path: Path) -> None:
    model = api_run.best
    with pytest.raises(UsageError, match="must be uint8"):
        model.predict(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(UsageError, match="pass a batch as a list"):
        model.predict(np.zeros((2, 8, 8, 3), np.uint8))
    with pytest.raises(DataError, match="does not exist"):
        model.predict(tmp_path / "missing.png")
    with pytest.raises(UsageError, match="cannot predict a dict"):
        model.predict({})  # type: ignore[call-overload]


@pytest.mark.slow
def test_run_reads_its_folder(api_run: cityseg.Run) -> None:
    run = cityseg.Run(str(api_run.path))
    assert run.best.path == run.path / "best" and run.last.path == run.path / "last"
    assert run.best.run is not None and run.best.run.path == run.path
    assert run.config.arch == "linknet" and (run.config.height, run.config.width) == (64, 128)
    assert run.classes == run.best.classes and len(run.classes) == 8
    metrics = run.metrics
    rows = (run.path / "metrics.csv").read_text().splitlines()
    header, first = rows[0].split(","), rows[1].split(",")
    assert metrics.epochs == 1 and metrics.history[0].epoch == 1
    assert metrics.history[0].val_miou == float(first[header.index("val_miou")])
    assert metrics.history[0].loss == float(first[header.index("loss")])
    state = json.loads((run.path / "last" / "state.json").read_text())
    assert (metrics.best_epoch, metrics.best_score) == (state["best_epoch"], state["best"])
    assert metrics.monitor == "val_miou"
    assert "linknet-mobilenetv2" in repr(run) and "8 classes" in repr(run.best)


@pytest.mark.slow
def test_evaluate_report_equals_metrics_json(
    api_run: cityseg.Run, prepared: Path, tmp_path: Path
) -> None:
    report = api_run.best.evaluate(project=tmp_path)  # data: the run's dataset
    assert report.dataset == prepared
    text = (report.out_dir / "metrics.json").read_text()
    written = json.loads(text)
    assert text == json.dumps(report.to_dict(), indent=2) + "\n"
    assert report.to_dict() == written
    assert report.images == written["images"] and report.split == "test"
    assert report.scores.mean_iou == written["scores"]["mean_iou"]
    for row in report.scores.per_class:
        assert row.iou == written["scores"]["per_class"][row.name]["iou"]
        assert row.support == written["scores"]["per_class"][row.name]["support"]
    assert report.scores.of("vehicle") == report.scores.per_class[-1]
    assert report.official is not None
    assert report.official.mean_iou == written["official"]["mean_iou"]
    assert set(report.groups) == set(written["per_city"])
    assert report.source.kind == "model" and report.source.path == api_run.path / "best"
    assert np.array_equal(report.confusion_matrix, written["confusion_matrix"])
    again = cityseg.EvalReport.read(report.out_dir)
    assert again.to_dict() == written and again.scores == report.scores


@pytest.mark.slow
def test_export_and_benchmark_give_typed_reports(
    api_run: cityseg.Run, prepared: Path, tmp_path: Path
) -> None:
    report = api_run.best.export("tflite", output=tmp_path / "tflite", parity=2)
    record = json.loads((report.folder / "export.json").read_text())
    assert report.to_dict() == record
    assert cityseg.ExportReport.read(report.folder) == report
    assert report.parity is not None and report.parity.images == 2
    assert report.parity.miou.drop == record["parity"]["miou"]["drop"]
    assert 0 < report.size_ratio == record["size_ratio"]
    exported = cityseg.Model(report.folder, verbose=False)
    assert exported.format == "tflite" and exported.predict(photo(64, 128)).shape == (64, 128)

    timed = exported.benchmark(runs=2)
    assert [row.format for row in timed.results] == ["tflite"] and timed.keras is None
    assert timed.results[0].latency_ms.p50 > 0 and timed.input_size == (64, 128)
    assert timed.to_dict()["results"][0]["model"] == str(report.folder)


@pytest.mark.slow
def test_predict_files_writes_what_the_cli_writes(tiny_bundle: Path, tmp_path: Path, cli) -> None:
    for name, seed in (("a", 1), ("b", 2)):
        write_rgb(tmp_path / "photos" / f"{name}.png", photo(50, 70, seed=seed))
    result = cli("predict", tmp_path / "photos", "-o", tmp_path / "cli", "--model", tiny_bundle,
                 "--format", "ids", "-q")  # fmt: skip
    assert result.exit_code == 0, result.stderr

    model = cityseg.Model(tiny_bundle)
    report = model.predict_files(tmp_path / "photos", tmp_path / "api", format="ids")
    assert isinstance(report, cityseg.PredictReport) and report.failed == []
    assert sorted(p.name for p in report.written) == ["a.png", "b.png"]
    for written in report.written:
        assert np.array_equal(read_mask(written), read_mask(tmp_path / "cli" / written.name))
    assert model._loaded is not None  # loaded once, kept for the next call
    again = cityseg.predict_files([str(tmp_path / "photos" / "a.png")], tmp_path / "one.png",
                                  model=tiny_bundle, format="colour", verbose=False)  # fmt: skip
    assert again.written == [tmp_path / "one.png"] and again.model == tiny_bundle
    with pytest.raises(UsageError, match="format='mask' is not one of colour"):
        model.predict_files(tmp_path / "photos", tmp_path / "x", format="mask")
    with pytest.raises(DataError, match="does not exist"):  # inputs are checked first
        cityseg.predict_files(tmp_path / "missing.png", tmp_path / "x", model=tmp_path / "none")


@pytest.mark.slow
def test_export_several_formats_and_benchmark_several_models(
    api_run: cityseg.Run, tmp_path: Path
) -> None:
    reports = api_run.best.export(["tflite", "tflite-fp16"], output=tmp_path, parity=0)
    assert [r.format for r in reports] == ["tflite", "tflite-fp16"]
    assert [r.folder for r in reports] == [tmp_path / "tflite", tmp_path / "tflite-fp16"]
    assert all(r.parity is None and cityseg.ExportReport.read(r.folder) == r for r in reports)

    timed = cityseg.benchmark(
        [api_run.best, reports[0].folder], runs=2, exports=False, verbose=False
    )
    assert isinstance(timed, cityseg.BenchmarkReport)
    assert [row.format for row in timed.results] == ["keras", "tflite"]
    assert timed.keras is not None and timed.keras.parameters > 0
    assert [str(row.path) for row in timed.results] == [
        str(api_run.path / "best"),
        str(tmp_path / "tflite"),
    ]


@pytest.mark.slow
def test_train_keeps_what_training_reported(api_run: cityseg.Run) -> None:
    report = api_run.report
    assert report is not None and report.run_dir == api_run.path
    assert (report.epochs_completed, report.monitor) == (1, "val_miou")
    metrics = api_run.metrics
    assert (report.best_epoch, report.best_score) == (metrics.best_epoch, metrics.best_score)
    assert cityseg.Run(api_run.path).report is None  # opened from a folder: its files say it


@pytest.mark.slow
def test_train_resume_continues_a_run_folder(api_run: cityseg.Run, tmp_path: Path) -> None:
    """`resume` continues a run folder as `--resume` does, one epoch more here."""
    copy = tmp_path / "tiny"
    shutil.copytree(api_run.path, copy)
    config = json.loads((copy / "config.json").read_text())
    config["epochs"] = 2
    (copy / "config.json").write_text(json.dumps(config))
    run = cityseg.train(resume=copy, verbose=False)
    assert run.path == copy and run.metrics.epochs == 2
    assert [e.epoch for e in run.metrics.history] == [1, 2]


def test_decoding_matches_the_cli_for_png_and_jpeg(tmp_path: Path) -> None:
    """No model needed: the array a path becomes is the array `cityseg predict` decodes."""
    from cityseg.api.images import to_rgb
    from cityseg.images import read_image

    image = photo(36, 48, seed=8)
    write_rgb(tmp_path / "a.png", image)
    cv2.imwrite(str(tmp_path / "b.jpg"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    for name in ("a.png", "b.jpg"):
        assert np.array_equal(to_rgb(tmp_path / name), read_image(tmp_path / name))
    grey = to_rgb(image[..., 0])
    assert grey.shape == (36, 48, 3) and np.array_equal(grey[..., 2], image[..., 0])
    rgba = np.dstack([image, np.full((36, 48), 255, np.uint8)])
    assert np.array_equal(to_rgb(rgba), image)
