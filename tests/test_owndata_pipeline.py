"""A two-class VIA project through the whole CLI: demo (prepare, train, evaluate, predict),
then evaluate, predict on a turned phone JPEG, `cityseg serve` as a real process, export
and benchmark, none of them given a class flag: the classes travel in manifest and bundle."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from cityseg.dataset.manifest import read_manifest
from cityseg.images import read_image, read_mask
from serving import free_port

pytestmark = pytest.mark.slow
CLASSES = ["background", "ball", "sign"]


@pytest.fixture(scope="module")
def via_demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """`cityseg demo --format via`, small: 24 photos at 64x96, 2 epochs."""
    import contextlib
    import io

    from cityseg.cli import run

    root = tmp_path_factory.mktemp("via-demo")
    stderr = io.StringIO()
    args = ["demo", str(root), "--format", "via", "--images", "24", "--height", "64"]
    with contextlib.redirect_stderr(stderr):
        code = run([*args, "--width", "96", "--epochs", "2", "-q"])
    assert code == 0, stderr.getvalue()
    return root, stderr.getvalue()


def test_demo_prepares_trains_evaluates_and_predicts(via_demo: tuple[Path, str]) -> None:
    root, log = via_demo
    for step in ("[1/5] a VIA project", "[2/5] prepared dataset", "[3/5] trained", "[5/5]"):
        assert step in log
    assert "classes (in order of first appearance): 0 background, 1 ball, 2 sign" in log
    assert "official" not in log, "the Cityscapes category IoU is for Cityscapes data only"
    card = json.loads((root / "runs/train/demo/best/cityseg.json").read_text())
    assert card["classes"] == CLASSES and card["scheme"] == "classes"
    metrics = json.loads((root / "runs/eval/demo/metrics.json").read_text())
    assert "official" not in metrics and list(metrics["scores"]["per_class"]) == CLASSES
    assert metrics["per_group"], "groups replace Cityscapes' cities"
    predictions = sorted((root / "predictions").glob("*.png"))
    assert len(predictions) == len(read_manifest(root / "data/photos")["splits"]["test"])


def test_evaluate_reports_the_dataset_classes(via_demo: tuple[Path, str], cli, tmp_path) -> None:
    root, _ = via_demo
    data, model = root / "data/photos", root / "runs/train/demo/best"
    result = cli("evaluate", "--model", model, "--data", data, "--project", tmp_path, "-q")
    assert result.exit_code == 0, result.stderr
    assert all(name in result.stdout for name in CLASSES)
    assert "mean IoU (3 classes)" in result.stdout
    assert "non-void" not in result.stdout and "official" not in result.stdout


def test_predict_a_turned_phone_jpeg(via_demo: tuple[Path, str], cli, tmp_path) -> None:
    """EXIF orientation is applied in predict as in prepare: the mask is upright."""
    root, _ = via_demo
    photo = read_image(next((root / "photos").glob("*.jpg")))
    exif = Image.Exif()
    exif[0x0112] = 8  # stored turned; shown rotated 90 degrees counter-clockwise
    turned = tmp_path / "phone.jpg"
    stored = np.ascontiguousarray(np.rot90(photo, k=-1))
    Image.fromarray(stored).save(turned, exif=exif.tobytes())
    out = tmp_path / "mask.png"
    model = root / "runs/train/demo/best"
    result = cli("predict", turned, "-o", out, "--format", "ids", "--model", model)
    assert result.exit_code == 0, result.stderr
    mask = read_mask(out)
    assert mask.shape == photo.shape[:2] and int(mask.max()) < len(CLASSES)


def test_cityseg_serve_answers_with_the_dataset_classes(via_demo: tuple[Path, str]) -> None:
    root, _ = via_demo
    port = free_port()
    command = [sys.executable, "-m", "cityseg", "serve", "--port", str(port)]
    command += ["--model", str(root / "runs/train/demo/best"), "--data", str(root / "data/photos")]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(base, process)
        info = httpx.get(f"{base}/api/info").json()
        assert info["classes"] == CLASSES and info["scheme"] == "classes"
        jpeg = next((root / "photos").glob("*.jpg")).read_bytes()
        answer = httpx.post(f"{base}/predict", files={"image": ("p.jpg", jpeg)}, timeout=60)
        assert answer.status_code == 200, answer.text
        listed = httpx.get(f"{base}/api/images", params={"split": "test"}).json()
        first = listed["items"][0]["id"]
        scores = httpx.get(f"{base}/api/images/{first}/metrics", timeout=60).json()
        assert set(scores["iou"]) == set(CLASSES)
        assert httpx.get(f"{base}/api/images/{first}/mask").status_code == 200
        assert "legend" in httpx.get(base).text
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


def _wait_ready(base: str, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert process.poll() is None, process.communicate()[1]
        time.sleep(0.5)
    pytest.fail("cityseg serve did not become ready in 120 s")


def test_export_int8_and_benchmark(via_demo: tuple[Path, str], cli, tmp_path) -> None:
    root, _ = via_demo
    model, data = root / "runs/train/demo/best", root / "data/photos"
    target = tmp_path / "int8"
    args = ["-f", "tflite-int8", "--model", model, "--data", data, "--parity", "4", "--calib", "8"]
    result = cli("export", *args, "-o", target)
    assert result.exit_code == 0, result.stderr
    report = json.loads((target / "export.json").read_text())
    assert report["parity"]["images"] == 4
    card = json.loads((target / "cityseg.json").read_text())
    assert card["classes"] == CLASSES
    bench = cli("benchmark", "--model", model, "--model", target, "--runs", "2")
    assert bench.exit_code == 0, bench.stderr
    assert "tflite-int8" in bench.stdout
