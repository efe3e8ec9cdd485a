"""The `cityseg serve` application: `create_app(settings)` returns a FastAPI app.

Design choices, and why:

- The model is found and its card read in `create_app`, so "no model" is a one-line
  CitysegError before any socket opens; the slow part (TensorFlow import, build, a warm-up
  prediction) runs on a background thread started by the lifespan, so `/livez` answers at
  once and `/readyz` turns 200 only when a request would be served at full speed.
- Everything a client sends is distrusted in the cheapest order: body size (from
  Content-Length, then counted while reading), file type from magic bytes, pixel count from
  the PNG IHDR / JPEG SOF header, and only then a decode. A 20000x20000 PNG of a few KB
  never reaches OpenCV.
- TensorFlow is called from one thread at a time (a lock) and off the event loop, and at
  most `max_queue` inference requests wait or run; the next gets 503 + Retry-After rather
  than a growing queue whose clients time out anyway.
- Dataset ids resolve only through the manifest (an int looked up in a dict), never by
  joining request strings to paths.
- Every error is JSON `{"detail": ...}`; a client can cause 4xx and 503, never 500.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import struct
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import numpy as np
from fastapi import FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cityseg import images
from cityseg.config import OutputFormat, ServeConfig
from cityseg.dataset.manifest import SPLITS, read_manifest, void_classes
from cityseg.errors import CitysegError, DataError
from cityseg.evaluation.metrics import confusion_matrix, scores_from_confusion
from cityseg.inference.bundle import read_card
from cityseg.inference.predictor import DEFAULT_PROJECT, newest_bundle
from cityseg.inference.render import render
from cityseg.inference.runtimes import model_format
from cityseg.serve.schemas import (
    PNG,
    PNG_OK,
    UPLOAD_TYPES,
    Alive,
    ImageItem,
    ImageMetrics,
    ImagePage,
    InputSize,
    Limits,
    ModelInfo,
    PredictionJson,
    Ready,
    Split,
    errors,
)

if TYPE_CHECKING:
    from cityseg.inference.predictor import Predictor

logger = logging.getLogger("cityseg.serve")

STATIC = Path(__file__).parent / "static"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"
CATEGORIES_SCHEME = "categories"
PREDICTION_CACHE = 16
"""Dataset predictions kept, so the page's image/prediction/overlay/metrics calls for one
id run the model once."""
WARMUP_SIZE = (64, 128)

T = TypeVar("T")


SERVE = ServeConfig()


@dataclass(frozen=True)
class ServeSettings:
    """Everything the server needs; the CLI fills it from its options."""

    model: Path | None = None
    """A bundle folder; None: the newest run's best under `project`."""
    data: Path | None = None
    """A prepared dataset; None: the /api/images endpoints answer 404."""
    project: Path = DEFAULT_PROJECT
    max_body_bytes: int = SERVE.max_body_bytes
    max_pixels: int = SERVE.max_pixels
    max_queue: int = SERVE.max_queue
    """Inference requests waiting or running before the next gets 503."""


class PredictFormat(str, Enum):
    """What POST /predict returns."""

    colour = "colour"
    ids = "ids"
    overlay = "overlay"
    json = "json"


# --------------------------------------------------------------------------- input checks


class BodyTooLarge(HTTPException):
    """Raised while reading a body that outgrew the limit (chunked or lying Content-Length)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than {limit} bytes")


class BodyLimitMiddleware:
    """Refuses bodies above `limit` bytes: by Content-Length before reading, else while reading.

    A raw ASGI middleware rather than a dependency because the multipart parser spools the
    whole upload before an endpoint runs; the limit has to act on the byte stream itself.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await _send_json(send, 400, "invalid Content-Length header")
                    return
                if declared > self.limit:
                    await _send_json(send, 413, f"request body larger than {self.limit} bytes")
                    return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyTooLarge(self.limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge as exc:
            # Raised outside an endpoint (e.g. by the form parser): answer here if we can.
            if started:
                raise
            await _send_json(send, 413, str(exc.detail))


async def _send_json(send: Send, status: int, detail: str) -> None:
    body = JSONResponse({"detail": detail}).body
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def sniff(data: bytes) -> str:
    """'png' or 'jpeg' from the magic bytes; the filename and content type are not trusted."""
    if data.startswith(PNG_SIGNATURE):
        return "png"
    if data.startswith(JPEG_SIGNATURE):
        return "jpeg"
    raise HTTPException(415, "not a PNG or JPEG image (checked from the file's content)")


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the IHDR chunk, which the PNG format requires to come first."""
    if len(data) < 24 or data[12:16] != b"IHDR":
        raise HTTPException(422, "truncated or corrupt PNG (no IHDR header)")
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_STANDALONE_MARKERS = frozenset({0x01, *range(0xD0, 0xD9)})


def jpeg_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the first start-of-frame marker, walking segment lengths."""
    pos = 2
    n = len(data)
    while pos + 4 <= n:
        if data[pos] != 0xFF:
            raise HTTPException(422, "corrupt JPEG (bad marker)")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _STANDALONE_MARKERS:
            pos += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image / start of scan before any frame header
            break
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if length < 2:
            raise HTTPException(422, "corrupt JPEG (bad segment length)")
        if marker in _SOF_MARKERS:
            if pos + 9 > n:
                break
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return int(width), int(height)
        pos += 2 + length
    raise HTTPException(422, "truncated or corrupt JPEG (no frame header)")


def check_image(data: bytes, max_pixels: int) -> None:
    """Type from magic bytes and size from the header, before any pixel is decoded.

    An empty part breaks the schema's `minLength: 1`, so it is 422 like any other request
    the schema rules out, not 415 (which says "these bytes are not an image type we take").
    """
    if not data:
        raise HTTPException(422, "the image part is empty")
    kind = sniff(data)
    width, height = png_size(data) if kind == "png" else jpeg_size(data)
    if width == 0 or height == 0:
        raise HTTPException(422, f"the {kind.upper()} header declares an empty image")
    if width * height > max_pixels:
        raise HTTPException(
            413, f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}"
        )


def decode(data: bytes, name: str) -> np.ndarray:
    try:
        return images.decode_image(data, name)
    except DataError as exc:
        raise HTTPException(422, str(exc)) from exc


# --------------------------------------------------------------------------- state


@dataclass
class _Dataset:
    root: Path
    manifest: dict[str, Any]
    by_id: dict[int, dict[str, Any]]
    by_split: dict[str, list[dict[str, Any]]]

    @classmethod
    def load(cls, root: Path) -> _Dataset:
        manifest = read_manifest(root)
        splits = manifest.get("splits") or {}
        by_split = {split: list(splits.get(split) or []) for split in SPLITS}
        by_id = {int(e["id"]): e for entries in by_split.values() for e in entries}
        return cls(root=root, manifest=manifest, by_id=by_id, by_split=by_split)


@dataclass
class ServeState:
    """What the endpoints share: the predictor, its model thread and the in-flight count."""

    settings: ServeSettings
    bundle_path: Path
    card: dict[str, Any]
    dataset: _Dataset | None
    predictor: Predictor | None = None
    ready: bool = False
    error: str | None = None
    model_thread: ThreadPoolExecutor | None = None
    """Runs every model call, one at a time and in arrival order; started by the lifespan.

    One thread rather than a lock around the call: a released lock may be taken again by
    the thread that just dropped it, so under load some requests wait several turns and
    the p95 latency grows. A FIFO queue serves requests in the order they came. It also
    keeps a TFLite interpreter on the thread that built it.
    """
    in_flight: int = 0
    """Inference requests waiting or running; touched only on the event loop."""
    cache: OrderedDict[int, np.ndarray] = field(default_factory=OrderedDict)
    cache_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def classes(self) -> list[str]:
        return [str(c) for c in self.card.get("classes", [])]

    @property
    def palette(self) -> np.ndarray:
        return np.array(self.card.get("palette", []), dtype=np.uint8).reshape(-1, 3)

    @property
    def scheme(self) -> str:
        return str(self.card.get("scheme") or CATEGORIES_SCHEME)

    def load(self) -> None:
        """Load and warm the model (on the model thread); failures are kept for /readyz."""
        try:
            from cityseg.inference.predictor import load_predictor

            predictor = load_predictor(self.bundle_path, project=self.settings.project)
            predictor.predict([np.zeros((*WARMUP_SIZE, 3), dtype=np.uint8)])
            self.predictor = predictor
            self.ready = True
            logger.info("model %s loaded and warm", self.bundle_path)
        except Exception as exc:  # reported by /readyz, not lost in a thread
            self.error = f"{type(exc).__name__}: {exc}"
            logger.error("model %s failed to load: %s", self.bundle_path, self.error)

    def predict_one(self, image: np.ndarray) -> np.ndarray:
        """One class-id mask; called on a worker thread, which waits for its model turn."""
        predictor, model_thread = self.predictor, self.model_thread
        assert predictor is not None and model_thread is not None
        return model_thread.submit(predictor.predict, [image]).result()[0]

    async def infer(self, work: Callable[[], T]) -> T:
        """Run `work` on a worker thread if the model is ready and the queue has room."""
        if not self.ready:
            raise HTTPException(
                503, self.error or "model is still loading", headers={"Retry-After": "1"}
            )
        if self.in_flight >= self.settings.max_queue:
            raise HTTPException(
                503,
                f"server busy ({self.in_flight} inference requests in flight); retry shortly",
                headers={"Retry-After": "1"},
            )
        self.in_flight += 1
        try:
            return await run_in_threadpool(work)
        finally:
            self.in_flight -= 1

    def dataset_prediction(self, image_id: int, image: np.ndarray) -> np.ndarray:
        with self.cache_lock:
            if image_id in self.cache:
                self.cache.move_to_end(image_id)
                return self.cache[image_id]
        mask = self.predict_one(image)
        with self.cache_lock:
            self.cache[image_id] = mask
            while len(self.cache) > PREDICTION_CACHE:
                self.cache.popitem(last=False)
        return mask

    # ----------------------------------------------------------------- dataset helpers

    def require_dataset(self) -> _Dataset:
        if self.dataset is None:
            raise HTTPException(404, "no dataset configured; start the server with --data PATH")
        return self.dataset

    def entry(self, image_id: int) -> dict[str, Any]:
        entry = self.require_dataset().by_id.get(image_id)
        if entry is None:
            raise HTTPException(404, f"no image with id {image_id} in the dataset")
        return entry

    def read_entry_image(self, entry: dict[str, Any]) -> np.ndarray:
        dataset = self.require_dataset()
        try:
            return images.read_image(dataset.root / str(entry["image"]))
        except DataError as exc:
            raise HTTPException(404, f"image {entry['id']}: {exc}") from exc

    def read_entry_mask(self, entry: dict[str, Any]) -> np.ndarray:
        dataset = self.require_dataset()
        relative = (entry.get("masks") or {}).get(self.scheme)
        if not relative:
            raise HTTPException(
                404,
                f"image {entry['id']} has no {self.scheme!r} mask (the model's scheme); "
                f"run `cityseg remap --scheme {self.scheme}`",
            )
        try:
            return images.read_mask(dataset.root / str(relative))
        except DataError as exc:
            raise HTTPException(404, f"image {entry['id']}: {exc}") from exc

    def scheme_info(self) -> dict[str, Any]:
        """The dataset manifest's entry for the model's scheme ({} if it has none)."""
        schemes = self.require_dataset().manifest.get("schemes") or {}
        info: dict[str, Any] = schemes.get(self.scheme) or {}
        return info

    def mask_palette(self) -> np.ndarray:
        """The dataset's palette for the scheme (falls back to the model's)."""
        palette = self.scheme_info().get("palette")
        if palette:
            return np.array(palette, dtype=np.uint8).reshape(-1, 3)
        return self.palette

    def dataset_classes(self) -> list[str]:
        """The dataset's class names for the scheme; 409 if they are not the model's."""
        names = [str(c) for c in self.scheme_info().get("classes") or self.classes]
        if names != self.classes:
            raise HTTPException(
                409, f"the model's classes {self.classes} differ from the dataset's {names}"
            )
        return names

    def ignore_index(self) -> int | None:
        value = self.scheme_info().get("ignore_index")
        return None if value is None else int(value)


def _png(array: np.ndarray) -> Response:
    return Response(images.encode_png(array, rgb=array.ndim == 3), media_type=PNG)


def _share(mask: np.ndarray, classes: list[str]) -> dict[str, float]:
    counts = np.bincount(mask.ravel(), minlength=len(classes))[: len(classes)]
    total = max(int(mask.size), 1)
    return {name: float(counts[i]) / total for i, name in enumerate(classes)}


# --------------------------------------------------------------------------- the app


def create_app(settings: ServeSettings) -> FastAPI:
    """The app for `settings`; raises CitysegError now if the model or dataset is unusable.

    The model itself is built and warmed by the lifespan on a background thread, so the
    process is live at once and ready (GET /readyz -> 200) after the first prediction.
    """
    if settings.max_body_bytes < 1 or settings.max_pixels < 1 or settings.max_queue < 0:
        raise CitysegError("max_body_bytes and max_pixels must be positive, max_queue >= 0")
    bundle_path = settings.model if settings.model is not None else newest_bundle(settings.project)
    _, card = read_card(bundle_path)
    dataset = _Dataset.load(settings.data) if settings.data is not None else None
    state = ServeState(settings=settings, bundle_path=bundle_path, card=card, dataset=dataset)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.model_thread = ThreadPoolExecutor(1, thread_name_prefix="cityseg-model")
        state.model_thread.submit(state.load)
        try:
            yield
        finally:
            # In-flight requests have finished by now (uvicorn drains them first). A load
            # still under way is not cancelled mid-call: the interpreter lets it end
            # before the process exits.
            state.ready = False
            state.model_thread.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(
        title="cityseg",
        summary="Semantic segmentation of street scenes (Cityscapes categories)",
        lifespan=lifespan,
    )
    app.state.serve = state
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_body_bytes)

    @app.exception_handler(CitysegError)
    async def cityseg_error(request: Request, exc: CitysegError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unexpected error on %s", request.url.path)
        return JSONResponse({"detail": "internal error (see the server log)"}, status_code=500)

    _health_routes(app, state)
    _predict_route(app, state)
    _dataset_routes(app, state)
    _prediction_routes(app, state)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    return app


# --------------------------------------------------------------------------- routes
# Each route lists in `responses=` exactly the error statuses it can answer, so the
# OpenAPI schema is the whole contract (tests/test_serve_openapi.py holds it to that).


def _health_routes(app: FastAPI, state: ServeState) -> None:
    @app.get("/livez", tags=["health"])
    async def livez() -> Alive:
        """The process answers; says nothing about the model."""
        return Alive()

    @app.get("/readyz", tags=["health"], responses={200: {"model": Ready}, **errors(503)})
    async def readyz() -> JSONResponse:
        """200 once the model is loaded and warm; 503 before (or if loading failed)."""
        if state.ready:
            return JSONResponse(Ready().model_dump())
        detail = state.error or "model is still loading"
        return JSONResponse({"detail": detail}, status_code=503, headers={"Retry-After": "1"})

    @app.get("/api/info", tags=["model"])
    async def info() -> ModelInfo:
        """The model card's public part: what the model is and how it scored."""
        card, settings, path = state.card, state.settings, state.bundle_path
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
                max_body_bytes=settings.max_body_bytes,
                max_pixels=settings.max_pixels,
                max_queue=settings.max_queue,
            ),
        )


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


def _predict_route(app: FastAPI, state: ServeState) -> None:
    @app.post(
        "/predict", tags=["model"], responses=PREDICT_RESPONSES, openapi_extra=PREDICT_OPENAPI
    )
    async def predict(
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
        check_image(data, state.settings.max_pixels)

        def work() -> Response:
            rgb = decode(data, "the uploaded image")
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
            return _png(array)

        return await state.infer(work)


def _prediction_json(mask: np.ndarray, classes: list[str]) -> PredictionJson:
    height, width = mask.shape
    return PredictionJson(
        classes=classes,
        width=int(width),
        height=int(height),
        share=_share(mask, classes),
        mask_png_base64=base64.b64encode(images.encode_png(mask)).decode(),
    )


async def _read(fn: Callable[[], T]) -> T:
    return await run_in_threadpool(fn)


def _dataset_routes(app: FastAPI, state: ServeState) -> None:
    @app.get("/api/images", tags=["dataset"], responses=errors(404, 422))
    async def list_images(
        split: Split = "test",
        offset: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    ) -> ImagePage:
        """One page of a split's images (ids are what the other /api/images routes take)."""
        entries = state.require_dataset().by_split.get(split, [])
        page = entries[offset : offset + limit]
        items = [
            ImageItem(id=int(e["id"]), key=str(e["key"]), city=str(e.get("city", ""))) for e in page
        ]
        return ImagePage(split=split, total=len(entries), offset=offset, limit=limit, items=items)

    @app.get(
        "/api/images/{image_id}/image",
        tags=["dataset"],
        response_class=Response,
        responses={**PNG_OK, **errors(404, 422)},
    )
    async def dataset_image(image_id: int) -> Response:
        """The photo itself."""
        entry = state.entry(image_id)
        path = state.require_dataset().root / str(entry["image"])
        if path.suffix.lower() == ".png" and path.is_file():
            return FileResponse(path, media_type=PNG)
        return await _read(lambda: _png(state.read_entry_image(entry)))

    @app.get(
        "/api/images/{image_id}/mask",
        tags=["dataset"],
        response_class=Response,
        responses={**PNG_OK, **errors(404, 422)},
    )
    async def dataset_mask(image_id: int) -> Response:
        """The ground-truth mask of the model's scheme, coloured with the dataset's palette."""
        entry = state.entry(image_id)
        return await _read(
            lambda: _png(images.colourise(state.read_entry_mask(entry), state.mask_palette()))
        )


def _predicted(
    state: ServeState, image_id: int, entry: dict[str, Any]
) -> Callable[[], tuple[np.ndarray, np.ndarray]]:
    def work() -> tuple[np.ndarray, np.ndarray]:
        rgb = state.read_entry_image(entry)
        return rgb, state.dataset_prediction(image_id, rgb)

    return work


def _prediction_routes(app: FastAPI, state: ServeState) -> None:
    png_responses = {**PNG_OK, **errors(404, 422, 503)}

    @app.get(
        "/api/images/{image_id}/prediction",
        tags=["dataset"],
        response_class=Response,
        responses=png_responses,
    )
    async def dataset_prediction(image_id: int) -> Response:
        """The model's colour mask for the image."""
        entry = state.entry(image_id)
        _, mask = await state.infer(_predicted(state, image_id, entry))
        return _png(images.colourise(mask, state.palette))

    @app.get(
        "/api/images/{image_id}/overlay",
        tags=["dataset"],
        response_class=Response,
        responses=png_responses,
    )
    async def dataset_overlay(
        image_id: int, alpha: Annotated[float, Query(ge=0.0, le=1.0)] = 0.5
    ) -> Response:
        """The photo blended with the model's colour mask, with a legend."""
        entry = state.entry(image_id)
        rgb, mask = await state.infer(_predicted(state, image_id, entry))
        array = render(
            rgb,
            mask,
            format=OutputFormat.overlay,
            palette=state.palette,
            class_names=state.classes,
            alpha=alpha,
            legend=True,
        )
        return _png(array)

    @app.get(
        "/api/images/{image_id}/metrics", tags=["dataset"], responses=errors(404, 409, 422, 503)
    )
    async def dataset_metrics(image_id: int) -> ImageMetrics:
        """Per-class IoU (and dice, precision, recall) of the prediction vs the real mask."""
        entry = state.entry(image_id)
        names = state.dataset_classes()
        truth = await _read(lambda: state.read_entry_mask(entry))
        _, pred = await state.infer(_predicted(state, image_id, entry))
        if truth.shape != pred.shape:
            raise HTTPException(409, f"image {image_id}: mask and image differ in size")
        counts = confusion_matrix(truth, pred, len(names), state.ignore_index())
        void = void_classes(state.scheme, state.scheme_info())
        scores = scores_from_confusion(counts, void).to_dict(names)
        return ImageMetrics(
            id=image_id,
            key=str(entry["key"]),
            scheme=state.scheme,
            miou=scores["mean_iou"],
            iou={name: row["iou"] for name, row in scores["per_class"].items()},
            **scores,
        )


__all__ = ["PredictFormat", "ServeSettings", "ServeState", "create_app"]


SETTINGS_ENV = "CITYSEG_SERVE_SETTINGS"


def settings_to_env(settings: ServeSettings) -> str:
    """Serialise settings for worker processes, which uvicorn starts from an import string."""
    return json.dumps(
        {
            "model": None if settings.model is None else str(settings.model),
            "data": None if settings.data is None else str(settings.data),
            "project": str(settings.project),
            "max_body_bytes": settings.max_body_bytes,
            "max_pixels": settings.max_pixels,
            "max_queue": settings.max_queue,
        }
    )


def app_from_env() -> FastAPI:
    """The app factory each `--workers N` process calls (uvicorn `factory=True`)."""
    raw = json.loads(os.environ[SETTINGS_ENV])
    return create_app(
        ServeSettings(
            model=None if raw["model"] is None else Path(raw["model"]),
            data=None if raw["data"] is None else Path(raw["data"]),
            project=Path(raw["project"]),
            max_body_bytes=int(raw["max_body_bytes"]),
            max_pixels=int(raw["max_pixels"]),
            max_queue=int(raw["max_queue"]),
        )
    )
