"""`cityseg export` to every format from a trained bundle, its parity report, and the
exported models running through predict, evaluate, serve and `cityseg benchmark`."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from cityseg.dataset.manifest import read_manifest
from cityseg.errors import CitysegError, UsageError
from cityseg.images import read_image, read_mask
from cityseg.inference.runtimes import EXPORT_FORMATS
from serving import wait_ready

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def exports(trained_run: Path, parity_data: Path, tmp_path_factory: pytest.TempPathFactory):
    """Every format exported from the trained bundle by one CLI call, calibrated and
    checked on held-out scenes (`parity_data`)."""
    from cityseg.cli import run

    root = tmp_path_factory.mktemp("exports")
    formats = [a for fmt in EXPORT_FORMATS for a in ("-f", fmt)]
    args = ["export", *formats, "--model", trained_run / "best", "--data", parity_data]
    assert run([str(a) for a in [*args, "--parity", "24", "--calib", "24", "-o", root]]) == 0
    return {fmt: root / fmt for fmt in EXPORT_FORMATS}


@pytest.mark.parametrize("fmt", EXPORT_FORMATS)
def test_each_format_passes_its_parity_report(
    fmt: str, exports: dict[str, Path], trained_run: Path
) -> None:
    folder = exports[fmt]
    record = json.loads((folder / "export.json").read_text())
    card = json.loads((folder / "cityseg.json").read_text())
    artefact = folder / record["artefact"]
    assert artefact.exists() and record["format"] == fmt == card["export"]["format"]
    on_disk = (
        sum(p.stat().st_size for p in artefact.rglob("*") if p.is_file())
        if artefact.is_dir()
        else artefact.stat().st_size
    )
    assert record["bytes"] == on_disk == card["weights"]["bytes"]
    assert record["input_size"] == [card["height"], card["width"]] == [64, 128]
    assert (
        card["classes"]
        == json.loads((trained_run / "best" / "cityseg.json").read_text())["classes"]
    )
    parity = record["parity"]
    assert parity["images"] == 24
    tolerance = parity["tolerance"]
    assert parity["pixel_agreement"] >= tolerance["min_pixel_agreement"], parity
    assert parity["miou"]["drop"] <= tolerance["max_miou_drop"], parity
    assert parity["passed"], parity
    assert parity["miou"]["keras"] > 0.3  # the model has learnt: a meaningful comparison
    assert parity["latency_ms"]["export"]["p50"] > 0 and parity["latency_ms"]["keras"]["p50"] > 0
    if fmt == "tflite-int8":
        assert record["size_ratio"] <= 0.3
        assert record["calibration"] == {"split": "train", "images": 24}
        assert card["export"]["input_dtype"] == "uint8"


def test_float_exports_give_the_keras_probabilities(
    exports: dict[str, Path], trained_run: Path, train_data: Path
) -> None:
    from cityseg.inference.predictor import load_predictor

    entry = read_manifest(train_data)["splits"]["val"][0]
    image = read_image(train_data / entry["image"])
    keras = load_predictor(trained_run / "best").probabilities([image])[0]
    for fmt in ("savedmodel", "tflite", "onnx"):
        exported = load_predictor(exports[fmt]).probabilities([image])[0]
        np.testing.assert_allclose(exported, keras, atol=1e-4, err_msg=fmt)


def test_predict_with_a_tflite_file(
    exports: dict[str, Path], trained_run: Path, train_data: Path, tmp_path: Path, cli
) -> None:
    entry = read_manifest(train_data)["splits"]["val"][0]
    image = train_data / entry["image"]
    model = exports["tflite-int8"] / "model.tflite"
    result = cli("predict", image, "-o", tmp_path / "int8.png", "--model", model, "--format", "ids")
    assert result.exit_code == 0, result.stderr
    reference = cli("predict", image, "-o", tmp_path / "keras.png", "--model", trained_run / "best")
    assert reference.exit_code == 0
    int8 = read_mask(tmp_path / "int8.png")
    assert int8.shape == read_image(image).shape[:2]
    keras_colours = read_image(tmp_path / "keras.png")
    palette = np.array(json.loads((exports["tflite-int8"] / "cityseg.json").read_text())["palette"])
    assert (palette[int8] == keras_colours).all(axis=-1).mean() >= 0.97


def test_evaluate_an_onnx_export(
    exports: dict[str, Path], train_data: Path, tmp_path: Path, cli
) -> None:
    result = cli(
        "evaluate", "--model", exports["onnx"], "--data", train_data, "--split", "val",
        "--project", tmp_path, "-q",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    metrics = json.loads((tmp_path / "learn-onnx" / "metrics.json").read_text())
    assert metrics["images"] == len(read_manifest(train_data)["splits"]["val"])
    assert metrics["scores"]["mean_iou"] > 0.3


def test_serve_an_onnx_model(exports: dict[str, Path], train_data: Path) -> None:
    from fastapi.testclient import TestClient

    from cityseg.images import encode_png
    from cityseg.serve import ServeConfig, create_app

    settings = ServeConfig(model=exports["onnx"] / "model.onnx", data=train_data)
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        entry = read_manifest(train_data)["splits"]["val"][0]
        image = read_image(train_data / entry["image"])
        png = encode_png(image, rgb=True)
        response = client.post("/predict?format=json", files={"image": ("x.png", png)})
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["height"], body["width"]) == image.shape[:2]
        assert abs(sum(body["share"].values()) - 1.0) < 1e-6
        assert client.get("/api/info").json()["format"] == "onnx"


def test_benchmark_times_every_runtime(
    exports: dict[str, Path], trained_run: Path, tmp_path: Path, cli
) -> None:
    models = [trained_run / "best", exports["tflite-int8"], exports["onnx"]]
    args = [a for m in models for a in ("--model", m)]
    result = cli("benchmark", *args, "--runs", "3", "--json", tmp_path / "b.json")
    assert result.exit_code == 0, result.stderr
    assert "tflite-int8" in result.stdout and "GFLOPs" in result.stdout
    data = json.loads((tmp_path / "b.json").read_text())
    assert [r["format"] for r in data["results"]][:3] == ["keras", "tflite-int8", "onnx"]
    assert all(r["latency_ms"]["p50"] > 0 and r["images_per_second"] > 0 for r in data["results"])
    assert data["keras"]["parameters"] > 1_000_000 and data["keras"]["gflops"] > 0.1


def test_an_export_runs_only_at_its_size(exports: dict[str, Path]) -> None:
    from cityseg.inference.runtimes import open_model

    with pytest.raises(CitysegError, match="re-export it with `cityseg export --size 128x256`"):
        open_model(exports["tflite"], size=(128, 256))


def test_a_tampered_export_is_refused(
    exports: dict[str, Path], train_data: Path, tmp_path: Path, cli
) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(exports["tflite"], copy)
    with (copy / "model.tflite").open("r+b") as handle:
        handle.seek(100)
        handle.write(b"\0\1\2\3")
    image = train_data / read_manifest(train_data)["splits"]["val"][0]["image"]
    result = cli("predict", image, "-o", tmp_path / "o.png", "--model", copy)
    assert result.exit_code == 1
    assert "does not match the SHA-256" in result.stderr


# ----------------------------------------------------------------------- bad requests (quick)


def test_export_errors_are_one_line(tiny_bundle: Path, prepared: Path, tmp_path: Path, cli) -> None:
    cases = [
        (["-f", "zip", "--model", tiny_bundle], 2, "'zip' is not one of"),
        (["-f", "tflite-int8", "--model", tiny_bundle, "--data", tmp_path], 1, "int8 calibration"),
        (["-f", "tflite", "--model", tiny_bundle, "--data", tmp_path], 1, "--parity 0"),
        (
            ["-f", "tflite", "--model", tiny_bundle, "--size", "50x100", "--parity", "0"],
            2,
            "nearest valid size: 48x96",
        ),
        (["-f", "onnx", "--model", tmp_path / "nothing"], 1, "no model bundle"),
    ]
    for args, code, message in cases:
        result = cli("export", *args)
        assert result.exit_code == code, (args, result.stderr)
        assert message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr


def test_export_never_replaces_a_foreign_folder(tiny_bundle: Path, tmp_path: Path, cli) -> None:
    target = tmp_path / "mine"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    result = cli("export", "-f", "tflite", "--model", tiny_bundle, "--parity", "0", "-o", target)
    assert result.exit_code == 2 and "not a cityseg export" in result.stderr
    assert (target / "notes.txt").read_text() == "keep me"


def test_export_of_an_export_is_refused(exports: dict[str, Path]) -> None:
    from cityseg.deploy.export import export_model

    with pytest.raises(UsageError, match="already an export"):
        export_model(exports["onnx"], "tflite", parity=0)


def test_onnx_without_tf2onnx_says_how_to_install(
    tiny_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cityseg.deploy.export import export_model

    monkeypatch.setitem(sys.modules, "tf2onnx", None)
    with pytest.raises(CitysegError, match=r"pip install 'cityseg\[onnx\]'"):
        export_model(tiny_bundle, "onnx", tmp_path / "out", parity=0)
    assert not (tmp_path / "out").exists()
