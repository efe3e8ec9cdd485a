"""The HTTP routes, one `APIRouter` per OpenAPI tag (health, model, dataset).

Each route lists in `responses=` exactly the error statuses it can answer, so the OpenAPI
schema is the whole contract (tests/test_serve_openapi.py holds it to that). What the
routers share lives here; the app includes them in `cityseg.serve.app`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import numpy as np
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from cityseg import images
from cityseg.serve.schemas import PNG

T = TypeVar("T")


def png_response(array: np.ndarray) -> Response:
    return Response(images.encode_png(array, rgb=array.ndim == 3), media_type=PNG)


async def off_loop(fn: Callable[[], T]) -> T:
    """Run blocking file or codec work on the threadpool, keeping the event loop free."""
    return await run_in_threadpool(fn)
