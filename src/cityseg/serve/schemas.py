"""What `cityseg serve` answers, as pydantic models and `responses=` tables for its OpenAPI.

The schema at /openapi.json is a contract that clients generate code from and fuzzers
(schemathesis) hold the server to, so every status an operation can answer is declared
here with the body it really carries. The models are the ones the endpoints build their
JSON from, so the documented shape cannot drift from the served one.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

PNG = "image/png"
UPLOAD_TYPES = "image/png, image/jpeg"
"""The multipart `image` part's media types (OpenAPI `encoding.contentType`, comma-separated)."""

Split = Literal["train", "val", "test"]


# --------------------------------------------------------------------------- error bodies


class ErrorBody(BaseModel):
    """Every error the server raises itself: one sentence a person can act on."""

    detail: str = Field(description="What went wrong, in one sentence.")


class ValidationIssue(BaseModel):
    """One entry of FastAPI's request-validation answer (it may add `input`, `ctx`)."""

    model_config = ConfigDict(extra="allow")

    loc: list[str | int]
    msg: str
    type: str


class UnprocessableBody(BaseModel):
    """422 comes from two places: FastAPI's request validation (a list of issues) and the
    server's own content checks (a corrupt image, a sentence); one model documents both."""

    detail: str | list[ValidationIssue]


RETRY_AFTER: dict[str, Any] = {
    "Retry-After": {
        "description": "Seconds to wait before retrying (here or on another replica).",
        "required": True,
        "schema": {"type": "integer", "minimum": 0},
    }
}

_ERRORS: dict[int, dict[str, Any]] = {
    400: {
        "model": ErrorBody,
        "description": "A body that cannot be parsed (malformed multipart), or a "
        "Content-Length header that is not a number.",
    },
    404: {
        "model": ErrorBody,
        "description": "No dataset configured (start with --data), or no image with this id.",
    },
    409: {
        "model": ErrorBody,
        "description": "The model and the dataset disagree (classes, or mask and image size).",
    },
    413: {
        "model": ErrorBody,
        "description": "A body over --max-body-mb, or an image header declaring more than "
        "--max-pixels pixels; refused before it is read or decoded.",
    },
    415: {
        "model": ErrorBody,
        "description": "The upload is not a PNG or JPEG, judged by its bytes "
        "(not by its file name or declared content type).",
    },
    422: {
        "model": UnprocessableBody,
        "description": "The request does not match this schema, or the image is truncated "
        "or corrupt.",
    },
    503: {
        "model": ErrorBody,
        "description": "The model is still loading (or failed to load), or --max-queue "
        "inference requests are already waiting.",
        "headers": RETRY_AFTER,
    },
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The error part of a route's `responses=`: only the statuses that route can answer."""
    return {code: dict(_ERRORS[code]) for code in codes}


PNG_OK: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "A PNG image.",
        "content": {PNG: {"schema": {"type": "string", "format": "binary"}}},
    }
}


# --------------------------------------------------------------------------- success bodies


class Alive(BaseModel):
    status: Literal["alive"] = "alive"


class Ready(BaseModel):
    status: Literal["ready"] = "ready"


class InputSize(BaseModel):
    height: int | None
    width: int | None


class Limits(BaseModel):
    max_body_bytes: int
    max_pixels: int
    max_queue: int


class ModelInfo(BaseModel):
    """The model card's public part."""

    arch: str | None
    backbone: str | None
    scheme: str
    classes: list[str]
    palette: list[list[int]] = Field(description="One RGB triple per class.")
    input_size: InputSize
    training: dict[str, Any] | None = Field(description="The training run's summary, if any.")
    model: str = Field(description="The run the model comes from (or the bundle's folder).")
    format: str = Field(description="keras, or the export format (onnx, tflite, ...).")
    ready: bool
    dataset: bool = Field(description="Whether the /api/images routes have a dataset.")
    splits: list[str]
    limits: Limits


class PredictionJson(BaseModel):
    """POST /predict?format=json."""

    classes: list[str]
    width: int
    height: int
    share: dict[str, float] = Field(description="Fraction of the pixels given to each class.")
    mask_png_base64: str = Field(description="The class-id mask, single-channel PNG, base64.")


class ImageItem(BaseModel):
    id: int
    key: str
    city: str


class ImagePage(BaseModel):
    split: Split
    total: int
    offset: int
    limit: int
    items: list[ImageItem]


class ClassScores(BaseModel):
    iou: float | None
    dice: float | None
    precision: float | None
    recall: float | None
    support: int


class ImageMetrics(BaseModel):
    """Scores are null where undefined (a class absent from both truth and prediction)."""

    id: int
    key: str
    scheme: str
    miou: float | None
    iou: dict[str, float | None]
    mean_iou: float | None
    mean_iou_non_void: float | None
    pixel_accuracy: float | None
    mean_dice: float | None
    void_classes: list[str]
    per_class: dict[str, ClassScores]
