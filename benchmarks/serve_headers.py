"""How `cityseg serve` should read an upload's size before decoding it: Pillow or its parser.

The server refuses pixel bombs from the image header, before any pixel is decoded. Two
ways to read that header are timed here on the same bytes, in this process:

    parser   cityseg.serve.limits.check_image: the PNG IHDR / JPEG SOF parser the server
             uses (struct.unpack on the first bytes; JPEG segments are skipped by length).
    pillow   Pillow's lazy `Image.open` (format and size, no pixel decode), restricted to
             PNG and JPEG, with Pillow's own bomb limit kept out of the answer: its warning
             is silenced and its error falls back to the format's parser class without
             that check, so --max-pixels alone decides, with the same 413 text.

Inputs: a 1024x2048 (Cityscapes-sized) synthetic street photo as PNG and as JPEG, a real
20000x20000 PNG bomb (1-bit, all zero, about 50 KB), the tests' header-only bomb (IHDR
then garbage), a JPEG padded with 300 64 KB APP segments before its frame header, and
truncated or garbage inputs. For each: the answer of both (size, or HTTP status) and the
time per header, best of --repeats runs of --headers calls, and the ratio pillow/parser.

    python benchmarks/serve_headers.py [--headers 2000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import io
import struct
import time
import warnings
import zlib
from collections.abc import Callable

import cv2
import numpy as np
from fastapi import HTTPException
from PIL import Image, ImageFile, JpegImagePlugin, PngImagePlugin, UnidentifiedImageError

from cityseg.dataset.synthetic import draw_scene
from cityseg.images import encode_png
from cityseg.serve.limits import check_image, sniff

MAX_PIXELS = 40_000_000
"""The server's default --max-pixels."""

_PLUGINS: dict[str, type[ImageFile.ImageFile]] = {
    "png": PngImagePlugin.PngImageFile,
    "jpeg": JpegImagePlugin.JpegImageFile,
}
_UNREADABLE = (UnidentifiedImageError, SyntaxError, OSError, ValueError, EOFError, struct.error)


def pillow_size(data: bytes, kind: str) -> tuple[int, int]:
    """(width, height) by Pillow's lazy open; its own pixel limit does not decide."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            try:
                with Image.open(io.BytesIO(data), formats=[kind.upper()]) as image:
                    return image.size
            except Image.DecompressionBombError:
                with _PLUGINS[kind](io.BytesIO(data)) as image:
                    return image.size
    except _UNREADABLE as exc:
        raise HTTPException(422, f"truncated or corrupt {kind.upper()} ({exc})") from exc


def pillow_check_image(data: bytes, max_pixels: int) -> None:
    """check_image with Pillow reading the header: same order, same answers."""
    if not data:
        raise HTTPException(422, "the image part is empty")
    kind = sniff(data)
    width, height = pillow_size(data, kind)
    if width == 0 or height == 0:
        raise HTTPException(422, f"the {kind.upper()} header declares an empty image")
    if width * height > max_pixels:
        raise HTTPException(
            413, f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}"
        )


# --------------------------------------------------------------------------- inputs


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_bomb(width: int = 20000, height: int = 20000) -> bytes:
    """A complete, valid 1-bit PNG of width x height zeros (it decodes to 400 M pixels)."""
    row = b"\x00" * (1 + (width + 7) // 8)
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
    )


def header_only_bomb(width: int = 20000, height: int = 20000) -> bytes:
    """tests/test_serve.py's bomb: a valid IHDR declaring a huge image, then garbage."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + b"garbage" * 10


def padded_jpeg(jpeg: bytes, segments: int = 300) -> bytes:
    """`jpeg` with `segments` 64 KB APP15 segments after SOI: a 19 MB walk to the SOF."""
    app = b"\xff\xef" + struct.pack(">H", 0xFFFF) + b"\x00" * (0xFFFF - 2)
    return jpeg[:2] + app * segments + jpeg[2:]


def inputs() -> dict[str, bytes]:
    photo = draw_scene(np.random.default_rng(0), 1024, 2048).image
    png = encode_png(photo, rgb=True)
    ok, buffer = cv2.imencode(".jpg", cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))
    assert ok
    jpeg = buffer.tobytes()
    garbage = np.random.default_rng(1).bytes(300)
    return {
        "PNG 1024x2048": png,
        "JPEG 1024x2048": jpeg,
        "PNG bomb 20000x20000": png_bomb(),
        "PNG header-only bomb": header_only_bomb(),
        "JPEG + 300 APP segments": padded_jpeg(jpeg),
        "PNG cut at 20 B": png[:20],
        "PNG cut at 60 B": png[:60],
        "JPEG cut at 100 B": jpeg[:100],
        "PNG sig + garbage": b"\x89PNG\r\n\x1a\n" + garbage,
        "JPEG sig + garbage": b"\xff\xd8\xff" + garbage,
        "garbage": garbage,
    }


# --------------------------------------------------------------------------- timing


def answer(check: Callable[[bytes, int], None], data: bytes) -> str:
    """'ok', or the HTTP status and detail it would answer; any other exception is a leak."""
    try:
        check(data, MAX_PIXELS)
    except HTTPException as exc:
        return f"{exc.status_code} {str(exc.detail)[:44]}"
    except Exception as exc:  # a leak: the server would answer 500
        return f"LEAK {type(exc).__name__}"
    return "ok"


def per_call(check: Callable[[bytes, int], None], data: bytes, n: int, repeats: int) -> float:
    def run() -> None:
        for _ in range(n):
            try:
                check(data, MAX_PIXELS)
            except HTTPException:
                pass

    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--headers", type=int, default=2000, help="calls per timing")
    parser.add_argument("--repeats", type=int, default=5, help="timings; the best is kept")
    args = parser.parse_args()
    print(f"{'input':<26}{'KB':>8}  {'parser':>9}  {'pillow':>9}  {'ratio':>6}  answers")
    total = {"parser": 0.0, "pillow": 0.0}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a Pillow warning escaping would show as a LEAK
        for name, data in inputs().items():
            n = args.headers if len(data) < 1_000_000 else max(1, args.headers // 100)
            ours = per_call(check_image, data, n, args.repeats)
            theirs = per_call(pillow_check_image, data, n, args.repeats)
            total["parser"] += ours
            total["pillow"] += theirs
            a, b = answer(check_image, data), answer(pillow_check_image, data)
            answers = a if a == b else f"parser: {a} | pillow: {b}"
            print(
                f"{name:<26}{len(data) / 1024:>8.1f}  {ours * 1e6:>7.1f}us  "
                f"{theirs * 1e6:>7.1f}us  {theirs / ours:>5.0f}x  {answers}"
            )
    print(f"all inputs, summed per call: pillow/parser = {total['pillow'] / total['parser']:.0f}x")


if __name__ == "__main__":
    main()
