"""Liveness and readiness, as an orchestrator probes them.

Separate because they answer different questions: a live process that is still loading
its model should be kept (not restarted) but sent no traffic yet.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from cityseg.serve.schemas import Alive, Ready, errors
from cityseg.serve.state import State

router = APIRouter(tags=["health"])


@router.get("/livez")
async def livez() -> Alive:
    """The process answers; says nothing about the model."""
    return Alive()


@router.get("/readyz", responses={200: {"model": Ready}, **errors(503)})
async def readyz(state: State) -> JSONResponse:
    """200 once the model is loaded and warm; 503 before (or if loading failed)."""
    if state.ready:
        return JSONResponse(Ready().model_dump())
    detail = state.error or "model is still loading"
    return JSONResponse({"detail": detail}, status_code=503, headers={"Retry-After": "1"})
