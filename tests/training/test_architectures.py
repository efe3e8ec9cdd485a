"""LR-ASPP and DeepLabV3+ through the whole CLI: train, the bundle, evaluate, predict,
serve, and TFLite exports whose parity report passes.

A parity report only means something on a model that has learnt: an untrained one
answers near-ties that any rounding flips, so int8 "fails" on noise (a 2-epoch
LR-ASPP-MobileNetV3Small agreed with its int8 export on 46% of pixels). These runs train
long enough to learn, with the production batch-norm momentum (0.9,
`family.settle_batchnorm`; at 0.99, 48 steps left 60% of the initial statistics and the
model validated as if untrained).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from cityseg.dataset.manifest import read_manifest
from cityseg.images import read_image, read_mask

pytestmark = pytest.mark.slow

# run -> (epochs, learning rate): what each needs to score a val mIoU of ~0.4. An epoch is
# 6 steps; LR-ASPP's cost well under a second, ResNet50's several.
RUNS = {
    "lraspp-mobilenetv3large": (8, 1e-2),
    "lraspp-mobilenetv3small": (8, 1e-2),
    "deeplabv3plus-resnet50": (4, 3e-3),
}
SIZE = (32, 64)


@pytest.fixture(scope="module", params=list(RUNS))
def run(
    request: pytest.FixtureRequest,
    train_data: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    """A real `cityseg train` of the arch at 32x64."""
    from cityseg.cli import run as cityseg

    arch, backbone = str(request.param).split("-")
    epochs, lr = RUNS[request.param]
    project = tmp_path_factory.mktemp("runs")
    args = [
        "train", "--data", train_data, "--arch", arch, "--backbone", backbone,
        "--weights", "none", "--size", f"{SIZE[0]}x{SIZE[1]}", "--epochs", epochs, "--batch", "4",
        "--lr", lr, "--loss", "cce", "--aug", "none", "--patience", "0",
        "--project", project, "--name", request.param,
    ]  # fmt: skip
    assert cityseg([str(a) for a in args]) == 0
    return project / str(request.param)


@pytest.fixture(scope="module")
def val_split(train_data: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """(image, categories mask) of every val entry, at full size."""
    entries = read_manifest(train_data)["splits"]["val"]
    return [
        (read_image(train_data / e["image"]), read_mask(train_data / e["masks"]["categories"]))
        for e in entries
    ]


def test_the_run_records_the_arch_and_its_backbone(run: Path) -> None:
    arch, backbone = run.name.split("-")
    config = json.loads((run / "config.json").read_text())
    card = json.loads((run / "best" / "cityseg.json").read_text())
    assert (config["arch"], config["backbone"]) == (arch, backbone)
    assert (card["arch"], card["backbone"]) == (arch, backbone)
    assert card["normalisation"] == {"lraspp": "none", "deeplabv3plus": "caffe"}[arch]


def test_the_bundle_scores_what_training_measured(
    run: Path, val_split: list[tuple[np.ndarray, np.ndarray]]
) -> None:
    """Rebuilt from its card in this process, best/ gives the val mIoU training recorded,
    and the same probabilities when rebuilt from `--weights` pointing at its file."""
    from cityseg.evaluation.metrics import ConfusionMatrix
    from cityseg.images import resize_image, resize_mask
    from cityseg.inference.bundle import WEIGHTS_NAME, load_bundle
    from cityseg.inference.predictor import load_predictor
    from cityseg.training.models import build_from_card, build_model, spec_from_card

    best = run / "best"
    bundle = load_bundle(best, build_from_card)
    images = np.stack([resize_image(image, *SIZE) for image, _ in val_split]).astype(np.float32)
    probabilities = np.asarray(bundle.model(images, training=False))
    matrix = ConfusionMatrix(len(bundle.card["classes"]), bundle.card["ignore_index"])
    for (_, mask), probs in zip(val_split, probabilities, strict=True):
        matrix.update(resize_mask(mask, *SIZE), probs.argmax(axis=-1))
    recorded = bundle.card["training"]["best_val_miou"]
    assert matrix.scores().mean_iou == pytest.approx(recorded, abs=2e-3)
    assert recorded > 0.25  # it has learnt: untrained, these nets score 0.02-0.1

    spec = spec_from_card(bundle.card)
    from_path = build_model(dataclasses.replace(spec, weights=str(best / WEIGHTS_NAME)))
    np.testing.assert_allclose(np.asarray(from_path(images[:2])), probabilities[:2], atol=1e-6)
    image = val_split[0][0]
    full = load_predictor(best).probabilities([image])[0]  # rebuilt at the image's own size
    assert full.shape == (*image.shape[:2], len(bundle.card["classes"]))


def test_evaluate_and_predict(run: Path, train_data: Path, tmp_path: Path, cli) -> None:
    result = cli(
        "evaluate", "--model", run / "best", "--data", train_data, "--split", "val",
        "--project", tmp_path, "--name", "eval", "-q",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["images"] == len(read_manifest(train_data)["splits"]["val"])
    assert metrics["scores"]["mean_iou"] > 0.25
    entry = read_manifest(train_data)["splits"]["val"][0]
    image = train_data / entry["image"]
    out = tmp_path / "ids.png"
    result = cli("predict", image, "-o", out, "--model", run / "best", "--format", "ids", "-q")
    assert result.exit_code == 0, result.stderr
    ids = read_mask(out)
    assert ids.shape == read_image(image).shape[:2] and int(ids.max()) < 8


def test_tflite_exports_pass_their_parity_report(
    run: Path, parity_data: Path, tmp_path: Path, cli
) -> None:
    args = ["export", "-f", "tflite", "-f", "tflite-int8", "--model", run / "best"]
    result = cli(*args, "--data", parity_data, "--parity", "24", "--calib", "24", "-o", tmp_path)
    assert result.exit_code == 0, result.stderr
    for fmt in ("tflite", "tflite-int8"):
        parity = json.loads((tmp_path / fmt / "export.json").read_text())["parity"]
        assert parity["images"] == 24 and parity["passed"], (fmt, parity)
        assert parity["miou"]["keras"] > 0.25, parity  # a comparison that means something


def test_served_by_the_same_app(
    run: Path, train_data: Path, val_split: list[tuple[np.ndarray, np.ndarray]]
) -> None:
    """The server holds a bundle of each arch like any other."""
    from fastapi.testclient import TestClient

    from cityseg.images import encode_png
    from cityseg.serve import ServeConfig, create_app
    from serving import wait_ready

    with TestClient(create_app(ServeConfig(model=run / "best", data=train_data))) as client:
        wait_ready(client)
        png = encode_png(val_split[0][0], rgb=True)
        response = client.post("/predict?format=json", files={"image": ("x.png", png)})
        assert response.status_code == 200, response.text
        assert abs(sum(response.json()["share"].values()) - 1.0) < 1e-6
        info = client.get("/api/info").json()
        assert f"{info['arch']}-{info['backbone']}" == run.name
