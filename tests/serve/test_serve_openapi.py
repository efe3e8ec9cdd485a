"""The OpenAPI schema of `cityseg serve` tells the truth, held to it by schemathesis.

Two layers. A fast test reads the schema and checks that each operation declares every
status it can answer (with a JSON error body) and the right 200 media types. A slow one
runs schemathesis with every check (`--checks all` in CLI terms: undocumented statuses,
content types, response schemas and headers, schema-valid requests rejected, invalid ones
accepted, unsupported methods, the stateful link checks) against the real app under
uvicorn on 127.0.0.1, so what is checked is what goes over the wire.

JSON Schema cannot say "these bytes are a PNG", so the schema names the upload part's
media types (`encoding.contentType: image/png, image/jpeg`) and this module registers a
generator of real PNG and JPEG files for them; without it a fuzzer's "valid" upload is any
bytes, which the server rightly answers 415. The same registration serves the CLI:
`PYTHONPATH=tests SCHEMATHESIS_HOOKS=test_serve_openapi st run ...` (docs/serve.md).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import schemathesis
from fastapi import FastAPI, HTTPException
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.generation.stateful import run_state_machine_as_test

from cityseg.inference.bundle import CARD_NAME, FORMAT_VERSION
from cityseg.serve import ServeConfig, create_app
from cityseg.serve.limits import check_image
from serving import serving

EXAMPLES = 50
"""Cases per operation and phase (positive and negative data share them): every status is
reached, and the slow tests take ~20 s on 2 cores after the fixtures' ~15 s."""

FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,  # the same cases on every run, so CI failures reproduce
    database=None,
    suppress_health_check=list(HealthCheck),
)

# --------------------------------------------------------------------------- upload files


@st.composite
def _pixels(draw: st.DrawFn, channels: tuple[int, ...]) -> np.ndarray:
    """A small image of random size, channel count and noise (a seed, so it shrinks)."""
    height, width = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    shape = (height, width, draw(st.sampled_from(channels)))
    seed = draw(st.integers(0, 2**32 - 1))
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _encode(extension: str, array: np.ndarray) -> bytes:
    ok, buffer = cv2.imencode(extension, array)
    assert ok, extension
    return buffer.tobytes()


PNG_FILES = _pixels((1, 3, 4)).map(lambda a: _encode(".png", a))
JPEG_FILES = _pixels((1, 3)).map(lambda a: _encode(".jpg", a))

schemathesis.openapi.media_type("image/png", PNG_FILES)
schemathesis.openapi.media_type("image/jpeg", JPEG_FILES)


# --------------------------------------------------------------------------- the schema itself

IMAGE_PARTS = ("image", "mask")
MODEL_PARTS = ("prediction", "overlay")
DECLARED: dict[tuple[str, str], set[int]] = {
    ("get", "/livez"): {200},
    ("get", "/readyz"): {200, 503},
    ("get", "/api/info"): {200},
    ("post", "/predict"): {200, 400, 413, 415, 422, 503},
    ("get", "/api/images"): {200, 404, 422},
    **{("get", f"/api/images/{{image_id}}/{part}"): {200, 404, 422} for part in IMAGE_PARTS},
    **{("get", f"/api/images/{{image_id}}/{part}"): {200, 404, 422, 503} for part in MODEL_PARTS},
    ("get", "/api/images/{image_id}/metrics"): {200, 404, 409, 422, 503},
}
"""What each operation can answer: the server's error paths, read from serve/routes/."""


@pytest.fixture(scope="module")
def openapi(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The schema of an app over a card-only bundle: no TensorFlow, nothing is served."""
    folder = tmp_path_factory.mktemp("card") / "best"
    folder.mkdir()
    card = {"format_version": FORMAT_VERSION, "arch": "fpn", "classes": ["void", "road"]}
    (folder / CARD_NAME).write_text(json.dumps(card))
    return create_app(ServeConfig(model=folder)).openapi()


def _operations(openapi: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method, path): operation
        for path, methods in openapi["paths"].items()
        for method, operation in methods.items()
    }


def _ref(response: dict[str, Any], media_type: str = "application/json") -> str:
    return str(response["content"][media_type]["schema"]["$ref"]).rsplit("/", 1)[-1]


def test_every_status_is_declared(openapi: dict[str, Any]) -> None:
    declared = {
        key: {int(code) for code in operation["responses"]}
        for key, operation in _operations(openapi).items()
    }
    assert declared == DECLARED


def test_error_bodies_are_the_json_the_server_sends(openapi: dict[str, Any]) -> None:
    for key, operation in _operations(openapi).items():
        for code, response in operation["responses"].items():
            if code == "200":
                continue
            assert set(response["content"]) == {"application/json"}, (key, code)
            expected = "UnprocessableBody" if code == "422" else "ErrorBody"
            assert _ref(response) == expected, (key, code)
            if code == "503":
                assert response["headers"]["Retry-After"]["required"] is True, key
    schemas = openapi["components"]["schemas"]
    assert schemas["ErrorBody"]["required"] == ["detail"]
    assert schemas["ErrorBody"]["properties"]["detail"]["type"] == "string"


def test_200_media_types(openapi: dict[str, Any]) -> None:
    operations = _operations(openapi)
    pngs = {f"/api/images/{{image_id}}/{part}" for part in IMAGE_PARTS + MODEL_PARTS}
    for (_, path), operation in operations.items():
        ok = operation["responses"]["200"]["content"]
        if path == "/predict":
            assert set(ok) == {"image/png", "application/json"}
            assert _ref(operation["responses"]["200"]) == "PredictionJson"
        elif path in pngs:
            assert set(ok) == {"image/png"}, path
        else:
            assert set(ok) == {"application/json"}, path
            assert "$ref" in ok["application/json"]["schema"], path


def test_upload_part_is_a_non_empty_png_or_jpeg(openapi: dict[str, Any]) -> None:
    body = _operations(openapi)[("post", "/predict")]["requestBody"]["content"]
    multipart = body["multipart/form-data"]
    assert multipart["encoding"]["image"]["contentType"] == "image/png, image/jpeg"
    name = str(multipart["schema"]["$ref"]).rsplit("/", 1)[-1]
    part = openapi["components"]["schemas"][name]["properties"]["image"]
    assert part["minLength"] == 1
    assert part["contentMediaType"] == "application/octet-stream"  # sent as a file part


def test_the_server_rejects_what_the_schema_rules_out() -> None:
    """An empty part breaks minLength (422); other bytes that are no PNG/JPEG are 415."""
    for data, status in [(b"", 422), (b"x", 415), (b"GIF89a", 415)]:
        with pytest.raises(HTTPException) as info:
            check_image(data, 10_000)
        assert info.value.status_code == status, data


def test_declared_ranges_and_enums(openapi: dict[str, Any]) -> None:
    operations = _operations(openapi)

    def params(key: tuple[str, str]) -> dict[str, dict[str, Any]]:
        return {p["name"]: p["schema"] for p in operations[key].get("parameters", [])}

    predict = params(("post", "/predict"))
    assert predict["format"]["$ref"].endswith("/PredictFormat")
    assert (predict["alpha"]["minimum"], predict["alpha"]["maximum"]) == (0.0, 1.0)
    listing = params(("get", "/api/images"))
    assert listing["split"]["enum"] == ["train", "val", "test"]
    assert listing["offset"]["minimum"] == 0
    assert (listing["limit"]["minimum"], listing["limit"]["maximum"]) == (1, 1000)


# --------------------------------------------------------------------------- schemathesis


@pytest.fixture(scope="module")
def app(tiny_bundle: Path, prepared: Path) -> FastAPI:
    return create_app(ServeConfig(model=tiny_bundle, data=prepared))


@pytest.fixture(scope="module")
def base_url(app: FastAPI) -> Iterator[str]:
    with serving(app) as base:
        yield base


@pytest.fixture(scope="module")
def api_schema(base_url: str) -> schemathesis.BaseSchema:
    """The schema as a client sees it, from /openapi.json, with every check switched on."""
    config = schemathesis.Config(seed=0)
    config.projects.override.checks.update(included_check_names=["all"])
    return schemathesis.openapi.from_url(f"{base_url}/openapi.json", config=config)


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.fixture
def _pytest9_node_id(request: pytest.FixtureRequest) -> None:
    """schemathesis 4.32's lazy schema reads `node._nodeid`, which pytest 9.2 dropped.

    Without it `from_fixture` tests fail with AttributeError before any request; the
    attribute only labels subtests, so the node's real id is all it needs.
    """
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


@pytest.mark.slow
@pytest.mark.usefixtures("_pytest9_node_id")
@schema.parametrize()
@FUZZ_SETTINGS
def test_schemathesis_finds_nothing(case: schemathesis.Case) -> None:
    """Examples, coverage and fuzzing phases, positive and negative data, over real HTTP."""
    case.call_and_validate(timeout=60)


@pytest.mark.slow
def test_schemathesis_stateful_finds_nothing(api_schema: schemathesis.BaseSchema) -> None:
    """Chains of calls along the links schemathesis infers (a listed id, then its routes)."""
    workflow = api_schema.as_state_machine()
    run_state_machine_as_test(
        workflow,
        settings=settings(FUZZ_SETTINGS, max_examples=EXAMPLES // 3, stateful_step_count=6),
    )
