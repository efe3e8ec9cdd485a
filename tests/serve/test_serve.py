"""`cityseg.serve`: every endpoint's happy path and every way a client can get a 4xx/503.

One tiny bundle (PSPNet-resnet18 at 48x96, random weights) and one app over it and the
shared prepared dataset serve the whole module; apps with other limits reuse the bundle.
"""

from __future__ import annotations

import base64
import socket
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import cv2
import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cityseg.dataset import labels
from cityseg.dataset.synthetic import draw_scene
from cityseg.errors import CitysegError
from cityseg.images import decode_image, decode_mask, encode_png
from cityseg.serve import ServeConfig, create_app
from cityseg.serve.limits import check_image, jpeg_size, png_size
from cityseg.serve.state import ServerState
from serving import serving, wait_ready

NAMES = list(labels.CATEGORY_NAMES)


def scene(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A synthetic street photo of any size (drawn at >= 32x32, then resized)."""
    image = draw_scene(np.random.default_rng(seed), max(height, 32), max(width, 32)).image
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


def scene_png(height: int = 40, width: int = 70, seed: int = 0) -> bytes:
    return encode_png(scene(height, width, seed), rgb=True)


def scene_jpeg(height: int = 40, width: int = 70) -> bytes:
    image = scene(height, width, 1)
    ok, buffer = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    assert ok
    return buffer.tobytes()


def huge_png_header(width: int = 20000, height: int = 20000) -> bytes:
    """A valid signature and IHDR declaring a huge image, then garbage instead of pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr
    chunk += struct.pack(">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF)
    return b"\x89PNG\r\n\x1a\n" + chunk + b"garbage" * 10


def upload(
    data: bytes, name: str = "x.png", kind: str = "image/png"
) -> dict[str, tuple[str, bytes, str]]:
    """The multipart `files` of a POST /predict (the declared name and type are not trusted)."""
    return {"image": (name, data, kind)}


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def bundle(tiny_bundle: Path) -> Path:
    return tiny_bundle


@pytest.fixture(scope="module")
def app(bundle: Path, prepared: Path) -> FastAPI:
    return create_app(ServeConfig(model=bundle, data=prepared))


@pytest.fixture(scope="module")
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as client:
        wait_ready(client)
        yield client


def _state(app: FastAPI) -> ServerState:
    state: ServerState = app.state.serve
    return state


@pytest.fixture(scope="module")
def test_ids(client: TestClient) -> list[int]:
    items = client.get("/api/images", params={"split": "test"}).json()["items"]
    return [int(item["id"]) for item in items]


# --------------------------------------------------------------------------- health and info


def test_livez_and_readyz(client: TestClient) -> None:
    assert client.get("/livez").status_code == 200
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready"}


def test_info_is_the_model_card(client: TestClient) -> None:
    body = client.get("/api/info").json()
    assert body["arch"] == "pspnet" and body["backbone"] == "resnet18"
    assert body["classes"] == NAMES
    assert body["palette"] == labels.CATEGORY_PALETTE.tolist()
    assert body["input_size"] == {"height": 48, "width": 96}
    assert body["training"]["best"] == {"val_miou": 0.5}
    assert body["dataset"] is True


def test_index_page_and_docs(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "/api/images" in page.text and "/predict" in page.text
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/predict", "/api/images", "/api/images/{image_id}/metrics"} <= set(paths)


# --------------------------------------------------------------------------- /predict


@pytest.mark.parametrize("fmt", [None, "colour", "overlay"])
def test_predict_colour_png_at_input_size(client: TestClient, fmt: str | None) -> None:
    params = {"format": fmt} if fmt else {}
    response = client.post("/predict", params=params, files=upload(scene_png(41, 73)))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert decode_image(response.content, "out").shape == (41, 73, 3)


def test_predict_ids_and_jpeg(client: TestClient) -> None:
    response = client.post("/predict?format=ids", files=upload(scene_jpeg(30, 50), "a.jpg"))
    assert response.status_code == 200, response.text
    mask = decode_mask(response.content, "ids")
    assert mask.shape == (30, 50) and int(mask.max()) < len(NAMES)


def test_predict_json(client: TestClient) -> None:
    response = client.post("/predict?format=json", files=upload(scene_png(33, 60)))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["classes"] == NAMES
    assert (body["width"], body["height"]) == (60, 33)
    assert set(body["share"]) == set(NAMES)
    assert sum(body["share"].values()) == pytest.approx(1.0)
    mask = decode_mask(base64.b64decode(body["mask_png_base64"]), "b64")
    assert mask.shape == (33, 60)


def test_predict_errors(client: TestClient) -> None:
    # The type comes from the bytes, not from the name or the declared content type.
    text = client.post("/predict", files=upload(b"hello, not an image\n" * 5, "x.png"))
    assert text.status_code == 415 and isinstance(text.json()["detail"], str)
    truncated = client.post("/predict", files=upload(scene_png()[:60]))
    assert truncated.status_code == 422 and "detail" in truncated.json()
    huge = client.post("/predict", files=upload(huge_png_header()))
    assert huge.status_code == 413 and "20000x20000" in huge.json()["detail"]
    missing = client.post("/predict", files={"other": ("x.png", scene_png(), "image/png")})
    assert missing.status_code == 422
    no_body = client.post("/predict")
    assert no_body.status_code == 422
    bad_format = client.post("/predict?format=bmp", files=upload(scene_png()))
    assert bad_format.status_code == 422


def test_header_parsers() -> None:
    assert png_size(scene_png(12, 34)) == (34, 12)
    assert jpeg_size(scene_jpeg(21, 43)) == (43, 21)
    check_image(scene_png(), 10_000)
    for bad, status in [(b"\xff\xd8\xff", 422), (b"GIF89a", 415), (b"\x89PNG\r\n\x1a\n", 422)]:
        with pytest.raises(Exception) as info:
            check_image(bad, 10_000)
        assert getattr(info.value, "status_code", None) == status


# --------------------------------------------------------------------------- dataset


def test_images_list_and_paging(client: TestClient, prepared: Path) -> None:
    full = client.get("/api/images", params={"split": "test"}).json()
    assert full["split"] == "test" and full["total"] == len(full["items"]) >= 2
    assert set(full["items"][0]) >= {"id", "key", "city"}
    page = client.get("/api/images", params={"split": "test", "offset": 1, "limit": 1}).json()
    assert page["total"] == full["total"]
    assert page["items"] == full["items"][1:2]
    assert client.get("/api/images").json()["split"] == "test"  # the default
    train = client.get("/api/images?split=train").json()
    assert {i["id"] for i in train["items"]}.isdisjoint({i["id"] for i in full["items"]})


def test_images_list_errors(client: TestClient) -> None:
    assert client.get("/api/images?split=nope").status_code == 422
    assert client.get("/api/images?split=test&offset=-1").status_code == 422
    assert client.get("/api/images?split=test&limit=0").status_code == 422


@pytest.mark.parametrize("part", ["image", "mask", "prediction", "overlay"])
def test_image_parts_are_pngs_at_image_size(
    client: TestClient, test_ids: list[int], part: str
) -> None:
    response = client.get(f"/api/images/{test_ids[0]}/{part}")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert decode_image(response.content, part).shape == (64, 128, 3)


def test_real_mask_uses_the_palette(client: TestClient, test_ids: list[int]) -> None:
    rgb = decode_image(client.get(f"/api/images/{test_ids[0]}/mask").content, "mask")
    colours = {tuple(int(c) for c in row) for row in np.unique(rgb.reshape(-1, 3), axis=0)}
    assert colours <= {tuple(int(c) for c in row) for row in labels.CATEGORY_PALETTE}


def test_metrics(client: TestClient, test_ids: list[int]) -> None:
    response = client.get(f"/api/images/{test_ids[0]}/metrics")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == test_ids[0]
    assert set(body["iou"]) == set(NAMES)
    assert body["miou"] is None or 0.0 <= body["miou"] <= 1.0
    assert {"mean_iou", "mean_iou_non_void", "pixel_accuracy", "per_class"} <= set(body)


@pytest.mark.parametrize("part", ["image", "mask", "prediction", "overlay", "metrics"])
def test_unknown_ids_are_404(client: TestClient, part: str) -> None:
    assert client.get(f"/api/images/999999/{part}").status_code == 404
    assert client.get(f"/api/images/-1/{part}").status_code == 404
    # Not an int: never turned into a path.
    assert client.get(f"/api/images/..%2Fmanifest.json/{part}").status_code in (404, 422)
    assert client.get(f"/api/images/abc/{part}").status_code == 422


# --------------------------------------------------------------------------- other apps


def test_without_dataset_images_are_404(bundle: Path) -> None:
    app = create_app(ServeConfig(model=bundle))
    with TestClient(app) as client:
        assert client.get("/api/images?split=test").status_code == 404
        assert client.get("/api/images/1/image").status_code == 404
        assert client.get("/api/info").json()["dataset"] is False


def test_no_model_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(CitysegError, match="no trained model"):
        create_app(ServeConfig(project=tmp_path))


def test_body_limit(bundle: Path) -> None:
    app = create_app(ServeConfig(model=bundle, max_body_bytes=2000))
    with TestClient(app) as client:
        big = client.post("/predict", files=upload(scene_png(200, 300, 3)))
        assert big.status_code == 413 and "2000" in big.json()["detail"]

        # A chunked body (no Content-Length) is counted while it is read.
        def chunks() -> Iterator[bytes]:
            for _ in range(10):
                yield b"x" * 1000

        chunked = client.post(
            "/predict",
            content=chunks(),
            headers={"content-type": "multipart/form-data; boundary=b"},
        )
        assert chunked.status_code == 413
        assert client.get("/livez").status_code == 200


def test_busy_server_answers_503(bundle: Path) -> None:
    """max_queue=1: one request waiting behind a blocked model thread fills the queue."""
    app = create_app(ServeConfig(model=bundle, max_queue=1))
    state = _state(app)
    with TestClient(app) as client:
        wait_ready(client)
        results: list[int] = []
        gate = threading.Event()
        assert state.model_thread is not None
        state.model_thread.submit(gate.wait, 60)
        try:
            first = threading.Thread(
                target=lambda: results.append(
                    client.post("/predict", files=upload(scene_png())).status_code
                )
            )
            first.start()
            deadline = time.monotonic() + 10
            while state.in_flight < 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert state.in_flight == 1
            busy = client.post("/predict", files=upload(scene_png()))
            assert busy.status_code == 503
            assert busy.headers["retry-after"] == "1"
            assert "busy" in busy.json()["detail"]
        finally:
            gate.set()
        first.join(30)
        assert results == [200]
        assert state.in_flight == 0


def test_zero_queue_always_503(bundle: Path) -> None:
    app = create_app(ServeConfig(model=bundle, max_queue=0))
    with TestClient(app) as client:
        wait_ready(client)
        response = client.post("/predict", files=upload(scene_png()))
        assert response.status_code == 503 and response.headers["retry-after"] == "1"


# --------------------------------------------------------------------------- fuzzing


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    data=st.one_of(
        st.binary(max_size=300),
        st.binary(max_size=200).map(lambda b: b"\x89PNG\r\n\x1a\n" + b),
        st.binary(max_size=200).map(lambda b: b"\xff\xd8\xff" + b),
        st.tuples(st.integers(1, 24), st.integers(1, 24), st.integers(0, 9)).map(
            lambda t: scene_png(*t)
        ),
    ),
    fmt=st.sampled_from(["colour", "ids", "overlay", "json", "nope"]),
)
def test_fuzz_predict_never_5xx(client: TestClient, data: bytes, fmt: str) -> None:
    response = client.post(f"/predict?format={fmt}", files=upload(data))
    assert response.status_code < 500, response.text
    assert "detail" in response.json() if response.status_code >= 400 else True


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    image_id=st.one_of(st.integers(-5, 40).map(str), st.text(max_size=8)),
    part=st.sampled_from(["image", "mask", "metrics", "nope"]),
    split=st.one_of(st.sampled_from(["train", "val", "test"]), st.text(max_size=6)),
)
def test_fuzz_get_never_5xx(client: TestClient, image_id: str, part: str, split: str) -> None:
    for url in (f"/api/images/{quote(image_id, safe='')}/{part}", "/api/images"):
        params = {"split": split} if url == "/api/images" else None
        response = client.get(url, params=params)
        assert response.status_code < 500, (url, response.text)


# --------------------------------------------------------------------------- real HTTP


def test_uvicorn_over_real_http(bundle: Path) -> None:
    with (
        serving(create_app(ServeConfig(model=bundle))) as base,
        httpx.Client(base_url=base, timeout=30) as http,
    ):
        response = http.post("/predict", files=upload(scene_png(20, 30)))
        assert response.status_code == 200, response.text
        assert decode_image(response.content, "http").shape == (20, 30, 3)
        big = http.post("/predict", content=b"x" * (21 * 1024**2), headers={"content-type": "x/y"})
        assert big.status_code == 413


def test_cityseg_serve_as_a_process(bundle: Path, prepared: Path, tmp_path: Path) -> None:
    """The real command on a free 127.0.0.1 port: ready, predicts, stops on SIGTERM."""
    import signal
    import subprocess
    import sys
    import time

    import httpx

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [
        sys.executable,
        "-m",
        "cityseg",
        "serve",
        "--model",
        str(bundle),
        "--data",
        str(prepared),
        "--port",
        str(port),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, process.communicate()[1]
            time.sleep(0.5)
        else:
            pytest.fail("cityseg serve did not become ready in 120 s")
        image = np.random.default_rng(0).integers(0, 255, (30, 50, 3), dtype=np.uint8)
        ok, png = cv2.imencode(".png", image)
        answer = httpx.post(
            f"{base}/predict", files={"image": ("x.png", png.tobytes())}, timeout=60
        )
        assert answer.status_code == 200
        assert cv2.imdecode(np.frombuffer(answer.content, np.uint8), 1).shape == (30, 50, 3)
        assert httpx.get(f"{base}/api/images", params={"split": "test"}).json()["total"] > 0
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    assert process.returncode in (0, -signal.SIGTERM)


# --------------------------------------------------------------------------- sliding window


def test_a_sliding_server_answers_as_the_sliding_predictor(bundle: Path) -> None:
    import cityseg
    from cityseg.serve.settings import settings_from_env, settings_to_env

    config = ServeConfig(model=bundle, slide="48x96:24x48")
    assert settings_from_env({"CITYSEG_SERVE_SETTINGS": settings_to_env(config)}) == config
    png = scene_png(70, 150, seed=4)
    expected = cityseg.Model(bundle, verbose=False).predict(
        decode_image(png, "scene"), slide=config.slide
    )
    with TestClient(create_app(config)) as client:
        wait_ready(client)
        response = client.post("/predict?format=ids", files=upload(png))
    assert response.status_code == 200, response.text
    assert np.array_equal(decode_mask(response.content, "ids"), expected)


def test_a_bad_window_is_refused_before_the_server_starts(bundle: Path) -> None:
    with pytest.raises(CitysegError, match="--slide"):
        create_app(ServeConfig(model=bundle, slide="48x96:60x96"))
