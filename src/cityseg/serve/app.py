"""The `cityseg serve` application: `create_app(config)` returns a FastAPI app.

The app is assembled from parts that each hold one concern: `settings` (the configuration
and its trip to worker processes), `limits` (what a client may send), `state` (the model,
the inference queue, the dataset), `routes` (one router per OpenAPI tag) and `schemas`
(the answers). Every error is JSON `{"detail": ...}`; a client can cause 4xx and 503,
never 500.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse

from cityseg.config import ServeConfig
from cityseg.errors import CitysegError
from cityseg.serve.limits import BodyLimitMiddleware
from cityseg.serve.routes import dataset, health, model
from cityseg.serve.settings import (
    SETTINGS_ENV,
    check_limits,
    settings_from_env,
    settings_to_env,
)
from cityseg.serve.state import ServerState

logger = logging.getLogger("cityseg.serve")

STATIC = Path(__file__).parent / "static"


def create_app(config: ServeConfig) -> FastAPI:
    """The app for `config`; raises CitysegError now if the model or dataset is unusable.

    The model itself is built and warmed by the lifespan on a background thread, so the
    process is live at once and ready (GET /readyz -> 200) after the first prediction.
    """
    check_limits(config)
    state = ServerState.open(config)
    app = FastAPI(
        title="cityseg",
        summary="Semantic segmentation of street scenes (Cityscapes categories)",
        lifespan=lifespan,
    )
    app.state.serve = state
    app.add_middleware(BodyLimitMiddleware, limit=config.max_body_bytes)
    app.exception_handler(CitysegError)(cityseg_error)
    app.exception_handler(Exception)(unexpected)
    for router in (health.router, model.router, dataset.router):
        app.include_router(router)
    app.add_api_route("/", index, methods=["GET"], include_in_schema=False)
    return app


def app_from_env() -> FastAPI:
    """The app factory each `--workers N` process calls (uvicorn `factory=True`)."""
    return create_app(settings_from_env())


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Start loading the model once the server runs, not when the app is built: building
    it is cheap, so `cityseg serve` can check its options and tests can build apps freely."""
    state: ServerState = app.state.serve
    state.start()
    try:
        yield
    finally:
        state.stop()


async def cityseg_error(request: Request, exc: Exception) -> JSONResponse:
    """Our own errors name what the client sent wrong."""
    return JSONResponse({"detail": str(exc)}, status_code=422)


async def unexpected(request: Request, exc: Exception) -> JSONResponse:
    """A bug still answers JSON, and its traceback goes to the log, not to the client."""
    logger.exception("unexpected error on %s", request.url.path)
    return JSONResponse({"detail": "internal error (see the server log)"}, status_code=500)


async def index() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html")


__all__ = [
    "SETTINGS_ENV",
    "ServeConfig",
    "ServerState",
    "app_from_env",
    "create_app",
    "settings_to_env",
]
