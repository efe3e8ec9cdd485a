"""Browsing the configured dataset: its images, real masks, the model's predictions on
them and per-image scores, for the web page.

Every route takes an integer id that resolves only through the manifest; without --data
each answers 404. Predictions are cached per id, so the page's prediction, overlay and
metrics calls for one image run the model once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import FileResponse, Response

from cityseg import images
from cityseg.config import OutputFormat
from cityseg.dataset.manifest import void_classes
from cityseg.evaluation.metrics import confusion_matrix, scores_from_confusion
from cityseg.inference.render import render
from cityseg.serve.routes import off_loop, png_response
from cityseg.serve.schemas import (
    PNG,
    PNG_OK,
    ImageItem,
    ImageMetrics,
    ImagePage,
    Split,
    errors,
)
from cityseg.serve.state import ServerState, State

router = APIRouter(tags=["dataset"])

FILE_PNG = {**PNG_OK, **errors(404, 422)}
MODEL_PNG = {**PNG_OK, **errors(404, 422, 503)}


@router.get("/api/images", responses=errors(404, 422))
async def list_images(
    state: State,
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


@router.get("/api/images/{image_id}/image", response_class=Response, responses=FILE_PNG)
async def dataset_image(state: State, image_id: int) -> Response:
    """The photo itself."""
    entry = state.entry(image_id)
    path = state.require_dataset().root / str(entry["image"])
    if path.suffix.lower() == ".png" and path.is_file():
        return FileResponse(path, media_type=PNG)
    return await off_loop(lambda: png_response(state.read_entry_image(entry)))


@router.get("/api/images/{image_id}/mask", response_class=Response, responses=FILE_PNG)
async def dataset_mask(state: State, image_id: int) -> Response:
    """The ground-truth mask of the model's scheme, coloured with the dataset's palette."""
    entry = state.entry(image_id)
    return await off_loop(
        lambda: png_response(images.colourise(state.read_entry_mask(entry), state.mask_palette()))
    )


@router.get("/api/images/{image_id}/prediction", response_class=Response, responses=MODEL_PNG)
async def dataset_prediction(state: State, image_id: int) -> Response:
    """The model's colour mask for the image."""
    entry = state.entry(image_id)
    _, mask = await state.infer(_predicted(state, image_id, entry))
    return png_response(images.colourise(mask, state.palette))


@router.get("/api/images/{image_id}/overlay", response_class=Response, responses=MODEL_PNG)
async def dataset_overlay(
    state: State, image_id: int, alpha: Annotated[float, Query(ge=0.0, le=1.0)] = 0.5
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
    return png_response(array)


@router.get("/api/images/{image_id}/metrics", responses=errors(404, 409, 422, 503))
async def dataset_metrics(state: State, image_id: int) -> ImageMetrics:
    """Per-class IoU (and dice, precision, recall) of the prediction vs the real mask."""
    entry = state.entry(image_id)
    names = state.dataset_classes()
    truth = await off_loop(lambda: state.read_entry_mask(entry))
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


def _predicted(
    state: ServerState, image_id: int, entry: dict[str, Any]
) -> Callable[[], tuple[np.ndarray, np.ndarray]]:
    """The photo and its (cached) prediction, as work for the inference queue."""

    def work() -> tuple[np.ndarray, np.ndarray]:
        rgb = state.read_entry_image(entry)
        return rgb, state.dataset_prediction(image_id, rgb)

    return work
