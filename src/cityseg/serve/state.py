"""What every request shares: the model (loaded on its own thread), the bounded inference
queue, the prediction cache and the dataset, as one `ServerState` per app.

The state is built by `create_app` and kept on `app.state`; handlers get it through the
`get_state` dependency rather than a closure, so routes live in plain modules and a test
can reach the very object the handlers see (`app.state.serve`).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import numpy as np
from fastapi import Depends, HTTPException, Request
from starlette.concurrency import run_in_threadpool

from cityseg import images
from cityseg.config import ServeConfig
from cityseg.dataset.manifest import SPLITS, read_manifest
from cityseg.errors import DataError
from cityseg.inference.bundle import read_card
from cityseg.inference.predictor import newest_bundle
from cityseg.inference.pretrained import named_or_path
from cityseg.inference.sliding import as_window

if TYPE_CHECKING:
    from cityseg.inference.predictor import Predictor

logger = logging.getLogger("cityseg.serve")

CATEGORIES_SCHEME = "categories"
PREDICTION_CACHE = 16
"""Dataset predictions kept, so the page's image/prediction/overlay/metrics calls for one
id run the model once."""
WARMUP_SIZE = (64, 128)

T = TypeVar("T")


@dataclass
class Dataset:
    """A prepared dataset indexed once at start-up: ids resolve only through the manifest
    (an int looked up in a dict), never by joining request strings to paths."""

    root: Path
    manifest: dict[str, Any]
    by_id: dict[int, dict[str, Any]]
    by_split: dict[str, list[dict[str, Any]]]

    @classmethod
    def load(cls, root: Path) -> Dataset:
        manifest = read_manifest(root)
        splits = manifest.get("splits") or {}
        by_split = {split: list(splits.get(split) or []) for split in SPLITS}
        by_id = {int(e["id"]): e for entries in by_split.values() for e in entries}
        return cls(root=root, manifest=manifest, by_id=by_id, by_split=by_split)


@dataclass
class ServerState:
    """What the endpoints share: the predictor, its model thread and the in-flight count."""

    config: ServeConfig
    bundle_path: Path
    card: dict[str, Any]
    dataset: Dataset | None
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

    @classmethod
    def open(cls, config: ServeConfig) -> ServerState:
        """Find the model and read its card and the dataset now, so "no model" is a one-line
        CitysegError before any socket opens; the slow model build waits for `start`."""
        bundle_path = (
            named_or_path(config.model)
            if config.model is not None
            else newest_bundle(config.project)
        )
        _, card = read_card(bundle_path)
        dataset = Dataset.load(config.data) if config.data is not None else None
        return cls(config=config, bundle_path=bundle_path, card=card, dataset=dataset)

    @property
    def classes(self) -> list[str]:
        return [str(c) for c in self.card.get("classes", [])]

    @property
    def palette(self) -> np.ndarray:
        return np.array(self.card.get("palette", []), dtype=np.uint8).reshape(-1, 3)

    @property
    def scheme(self) -> str:
        return str(self.card.get("scheme") or CATEGORIES_SCHEME)

    # ----------------------------------------------------------------- the model

    def start(self) -> None:
        """Load the model in the background, so /livez answers at once and /readyz turns
        200 only when a request would be served at full speed."""
        self.model_thread = ThreadPoolExecutor(1, thread_name_prefix="cityseg-model")
        self.model_thread.submit(self.load)

    def stop(self) -> None:
        """In-flight requests have finished by now (uvicorn drains them first). A load still
        under way is not cancelled mid-call: the interpreter lets it end before exiting."""
        self.ready = False
        if self.model_thread is not None:
            self.model_thread.shutdown(wait=False, cancel_futures=True)

    def load(self) -> None:
        """Load and warm the model (on the model thread); failures are kept for /readyz."""
        try:
            from cityseg.inference.predictor import load_predictor

            predictor = load_predictor(
                self.bundle_path, project=self.config.project, window=as_window(self.config.slide)
            )
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
        """Run `work` off the event loop if the model is ready and the queue has room.

        At most `max_queue` requests wait or run; the next gets 503 + Retry-After rather
        than a growing queue whose clients time out anyway.
        """
        if not self.ready:
            raise HTTPException(
                503, self.error or "model is still loading", headers={"Retry-After": "1"}
            )
        if self.in_flight >= self.config.max_queue:
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

    # ----------------------------------------------------------------- the dataset

    def require_dataset(self) -> Dataset:
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


def get_state(request: Request) -> ServerState:
    """A dependency rather than a closure or a global: routers stay plain modules, and each
    app (tests build several) serves its own state."""
    state: ServerState = request.app.state.serve
    return state


State = Annotated[ServerState, Depends(get_state)]
