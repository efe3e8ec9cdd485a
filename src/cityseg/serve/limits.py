"""What a client may send, checked in the cheapest order before any pixel is decoded.

Body size first (from Content-Length, then counted while reading), then the file type from
magic bytes, then the pixel count from the image header. A 20000x20000 PNG of a few KB is
refused from its first 24 bytes and never reaches OpenCV.

The headers are read by a small PNG IHDR / JPEG SOF parser rather than Pillow's lazy
`Image.open`: `benchmarks/serve_headers.py` measured Pillow 5-22x slower per header
(8-18 us against 0.4-1.5 us; 1.1 ms against 72 us for a JPEG padded to 20 MB), and it
changes an answer: a huge IHDR followed by garbage (a bomb with nothing behind its header)
is a 422 parse error to Pillow, where this parser answers the 413 that names the size.
"""

from __future__ import annotations

import struct

from fastapi import HTTPException
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cityseg.images import PNG_SIGNATURE

JPEG_SIGNATURE = b"\xff\xd8\xff"


# --------------------------------------------------------------------------- body size


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
        refusal = self._refuse_declared(scope)
        if refusal is not None:
            await _send_json(send, *refusal)
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

    def _refuse_declared(self, scope: Scope) -> tuple[int, str] | None:
        """(status, detail) if the Content-Length alone rules the request out."""
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    return 400, "invalid Content-Length header"
                if declared > self.limit:
                    return 413, f"request body larger than {self.limit} bytes"
        return None


async def _send_json(send: Send, status: int, detail: str) -> None:
    """A `{"detail": ...}` answer from below FastAPI, closing the connection: the rest of an
    oversized body is never read, so the connection cannot carry another request."""
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


# --------------------------------------------------------------------------- image headers


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
    """(width, height) from the first start-of-frame marker, walking segment lengths.

    Only the two-byte lengths are read, never a segment's content, so an upload padded
    with megabytes of APP segments costs one step per segment.
    """
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
