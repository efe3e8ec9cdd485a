"""The model's routes: what it is (/api/info) and segmenting an upload (POST /predict).

The upload is distrusted in the cheapest order (see `cityseg.serve.limits`) before it is
decoded, and decoding, the model call and the answer's encoding all run off the event
loop inside the bounded inference queue, so a slow model delays requests, never /livez.
"""

from __future__ import annotations

import base64
from enum import Enum
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, File, HTTPException, Query, UploadFile
from fastapi.responses import JSONResponse, Response

from cityseg import images
from cityseg.config import OutputFormat
from cityseg.errors import DataError
from cityseg.inference.render import render
from cityseg.inference.runtimes import model_format
from cityseg.serve.limits import check_image
from cityseg.serve.routes import png_response
from cityseg.serve.schemas import (
    PNG,
    UPLOAD_TYPES,
    InputSize,
    Limits,
    ModelInfo,
    PredictionJson,
    errors,
)
from cityseg.serve.state import ServerState, State

router = APIRouter(tags=["model"])


class PredictFormat(str, Enum):
    """What POST /predict returns."""

    colour = "colour"
    ids = "ids"
    overlay = "overlay"
    json = "json"


PREDICT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "model": PredictionJson,
        "description": "A PNG at the input's size (format colour, ids, overlay) or, for "
        "format=json, the class shares and the id mask.",
        "content": {PNG: {"schema": {"type": "string", "format": "binary"}}},
    },
    **errors(400, 413, 415, 422, 503),
}
PREDICT_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "content": {"multipart/form-data": {"encoding": {"image": {"contentType": UPLOAD_TYPES}}}}
    }
}
"""The `image` part's media types: JSON Schema cannot say "a PNG", the encoding can."""

UploadedImage = Annotated[
    UploadFile,
    File(
        description="A PNG or JPEG image, judged by its bytes (415 otherwise). Its header may "
        "declare at most --max-pixels pixels (413 otherwise).",
        json_schema_extra={"minLength": 1},
    ),
]


@router.get("/api/info")
async def info(state: State) -> ModelInfo:
    """The model card's public part: what the model is and how it scored."""
    card, config, path = state.card, state.config, state.bundle_path
    return ModelInfo(
        arch=card.get("arch"),
        backbone=card.get("backbone"),
        scheme=state.scheme,
        classes=state.classes,
        palette=state.palette.tolist(),
        input_size=InputSize(height=card.get("height"), width=card.get("width")),
        training=card.get("training"),
        model=path.name if path.name != "best" else path.parent.name,
        format=model_format(card),
        ready=state.ready,
        dataset=state.dataset is not None,
        splits=list(state.dataset.by_split) if state.dataset is not None else [],
        limits=Limits(
            max_body_bytes=config.max_body_bytes,
            max_pixels=config.max_pixels,
            max_queue=config.max_queue,
        ),
    )


@router.post("/predict", responses=PREDICT_RESPONSES, openapi_extra=PREDICT_OPENAPI)
async def predict(
    state: State,
    image: UploadedImage,
    format: Annotated[PredictFormat, Query()] = PredictFormat.colour,
    alpha: Annotated[float, Query(ge=0.0, le=1.0)] = 0.5,
    legend: bool = False,
) -> Response:
    """Segment one image; the result has the input's size.

    `format`: colour (RGB mask), ids (single-channel class ids), overlay (photo
    blended with the colour mask), json (class shares and the ids mask as base64 PNG).
    """
    data = await image.read()
    check_image(data, state.config.max_pixels)
    return await state.infer(lambda: _segment(state, data, format, alpha, legend))


def _segment(
    state: ServerState, data: bytes, format: PredictFormat, alpha: float, legend: bool
) -> Response:
    """Decode, predict and encode the answer: all of it on a worker thread."""
    rgb = _decode(data, "the uploaded image")
    mask = state.predict_one(rgb)
    if format is PredictFormat.json:
        return JSONResponse(_prediction_json(mask, state.classes).model_dump())
    array = render(
        rgb,
        mask,
        format=OutputFormat(format.value),
        palette=state.palette,
        class_names=state.classes,
        alpha=alpha,
        legend=legend,
    )
    return png_response(array)


def _decode(data: bytes, name: str) -> np.ndarray:
    """A checked header can still hide corrupt pixels: that is the client's 422, not a 500."""
    try:
        return images.decode_image(data, name)
    except DataError as exc:
        raise HTTPException(422, str(exc)) from exc


def _prediction_json(mask: np.ndarray, classes: list[str]) -> PredictionJson:
    height, width = mask.shape
    return PredictionJson(
        classes=classes,
        width=int(width),
        height=int(height),
        share=_share(mask, classes),
        mask_png_base64=base64.b64encode(images.encode_png(mask)).decode(),
    )


def _share(mask: np.ndarray, classes: list[str]) -> dict[str, float]:
    counts = np.bincount(mask.ravel(), minlength=len(classes))[: len(classes)]
    total = max(int(mask.size), 1)
    return {name: float(counts[i]) / total for i, name in enumerate(classes)}
