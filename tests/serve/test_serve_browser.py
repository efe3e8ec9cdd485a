"""The web page in a real headless Chromium against the real app over HTTP.

`cityseg serve`'s page is JavaScript: the HTTP tests prove each endpoint, this proves the
page wires them together. Uvicorn serves the tiny bundle and the shared prepared dataset on
a free 127.0.0.1 port; Chromium loads `/`, runs the page's script (which shows the first
test image by itself) and dumps the DOM, where every picture says whether it loaded
(`data-loaded`, `data-width` = naturalWidth) or failed (`data-failed`). A second run takes
a screenshot, kept under `$CITYSEG_SCREENSHOT_DIR` when set (docs/img/serve-page.png is
made that way). No browser driver and no new dependency: Chromium's own `--dump-dom`.

Skipped when no Chromium is installed (.ci/run installs Debian's when it can).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest

from cityseg.dataset import labels
from cityseg.serve import ServeConfig, create_app
from serving import serving

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
BROWSER = next((path for name in BROWSERS if (path := shutil.which(name))), None)
PARTS = ("image", "mask", "prediction", "overlay")
SCREENSHOT_ENV = "CITYSEG_SCREENSHOT_DIR"
SCREENSHOT_NAME = "serve-page.png"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        BROWSER is None, reason=f"no Chromium/Chrome on PATH (looked for {', '.join(BROWSERS)})"
    ),
]


def chromium(url: str, profile: Path, *extra: str, timeout: float = 120) -> str:
    """Run headless Chromium on `url` and return its stdout (the DOM with --dump-dom).

    --virtual-time-budget lets the page's script and its fetches finish first: virtual time
    stands still while network requests are pending, so a slow model call cannot cut it short.
    """
    assert BROWSER is not None
    command = [
        BROWSER,
        "--headless",
        "--no-sandbox",  # we may be root (CI containers)
        "--disable-gpu",
        "--disable-quic",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=20000",
        *extra,
        url,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


class Dom(HTMLParser):
    """The few things the test reads from the dumped DOM."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.images: dict[str, dict[str, str | None]] = {}
        self.text: dict[str, list[str]] = {}
        self.rows = 0
        self.swatches = 0
        self._inside: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        element_id = found.get("id") or ""
        if tag == "img" and element_id.startswith("img-"):
            self.images[element_id.removeprefix("img-")] = found
        if tag == "tr":
            self.rows += 1
        if tag == "span" and "swatch" in (found.get("class") or ""):
            self.swatches += 1
        if tag not in ("img", "br", "meta", "input", "option"):
            self._inside.append(element_id)

    def handle_endtag(self, tag: str) -> None:
        if tag not in ("img", "br", "meta", "input", "option") and self._inside:
            self._inside.pop()

    def handle_data(self, data: str) -> None:
        for element_id in self._inside:
            if element_id:
                self.text.setdefault(element_id, []).append(data)

    def text_of(self, element_id: str) -> str:
        return "".join(self.text.get(element_id, [])).strip()


@pytest.fixture(scope="module")
def base_url(tiny_bundle: Path, prepared: Path) -> Iterator[str]:
    with serving(create_app(ServeConfig(model=tiny_bundle, data=prepared))) as base:
        yield base


def test_page_shows_four_images_legend_and_iou(base_url: str, tmp_path: Path) -> None:
    dom = Dom(chromium(f"{base_url}/", tmp_path / "profile", "--dump-dom"))

    assert dom.text_of("status") == "", f"the page reported: {dom.text_of('status')}"
    for part in PARTS:
        img = dom.images[part]
        assert "data-failed" not in img, f"{part}: {img.get('src')} failed to load"
        assert img.get("data-loaded") == "true", f"{part} never loaded: {img}"
        assert int(img.get("data-width") or 0) > 0, f"{part} has naturalWidth 0"
        assert (img.get("src") or "").startswith("/api/images/"), img
    # The same (first) test image in all four.
    assert len({(dom.images[p].get("src") or "").split("/")[3] for p in PARTS}) == 1

    legend = dom.text_of("legend")
    assert dom.swatches == len(labels.CATEGORY_NAMES)
    assert all(name in legend for name in labels.CATEGORY_NAMES), legend
    assert dom.text_of("table-title").startswith("Per-class IoU (mIoU ")
    assert dom.rows == 1 + len(labels.CATEGORY_NAMES)  # header + one row per class
    assert "pspnet / resnet18" in dom.text_of("model")


def test_page_screenshot(base_url: str, tmp_path: Path) -> None:
    shot = tmp_path / SCREENSHOT_NAME
    chromium(
        f"{base_url}/",
        tmp_path / "profile",
        f"--screenshot={shot}",
        "--window-size=1400,680",
    )
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000
    keep = os.environ.get(SCREENSHOT_ENV)
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, Path(keep) / SCREENSHOT_NAME)
