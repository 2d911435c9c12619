"""The report's index.html renders in headless Chromium: every image loads, no console errors.

Needs the `chromium` binary (Debian/Ubuntu: `apt-get install -y chromium`); skipped when absent.
The page's own inline script writes the load status into the DOM (body data attributes and
`img[data-natural-width]`), which `--dump-dom` returns after the load event.
"""

from __future__ import annotations

import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from coordexp.train.report.build import build_report
from coordexp.train.report.fixtures import write_demo_eval_dir, write_demo_metrics

CHROMIUM_NAMES = ("chromium", "chromium-browser")
BASE_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
    "--virtual-time-budget=10000",
)


def _chromium() -> str:
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    pytest.skip(
        "chromium is not installed (Debian/Ubuntu: apt-get install -y chromium); browser check skipped"
    )


def _run(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [binary, *BASE_FLAGS, f"--user-data-dir={profile}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)


class _DomImages(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.body: dict[str, str | None] = {}
        self.images: list[dict[str, str | None]] = []
        self.banner_text = ""
        self._in_banner = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "body":
            self.body = attributes
        elif tag == "img":
            self.images.append(attributes)
        self._in_banner = attributes.get("id") == "image-status"

    def handle_endtag(self, tag: str) -> None:
        self._in_banner = False

    def handle_data(self, data: str) -> None:
        if self._in_banner:
            self.banner_text += data


def _dom(binary: str, profile: Path, index: Path) -> tuple[_DomImages, str]:
    result = _run(binary, profile, "--dump-dom", index.as_uri())
    parser = _DomImages()
    parser.feed(result.stdout)
    return parser, result.stderr


def _report(tmp_path: Path) -> Path:
    eval_dir = tmp_path / "eval"
    write_demo_eval_dir(eval_dir, n_images=6)
    write_demo_metrics(tmp_path / "logs")
    files = build_report(eval_dir, samples=4, run=tmp_path / "logs")
    assert len(files.overlays) == 4 and len(files.charts) == 4
    return files.index


def test_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    binary = _chromium()
    index = _report(tmp_path)
    dom, stderr = _dom(binary, tmp_path / "profile", index)

    assert len(dom.images) == 8
    assert dom.body.get("data-images-total") == "8"
    assert dom.body.get("data-images-loaded") == "8"
    assert dom.body.get("data-errors") == "0"
    for image in dom.images:
        with Image.open(index.parent / str(image["src"])) as png:
            assert int(str(image.get("data-natural-width"))) == png.width > 0
    assert dom.banner_text == ""
    console = [line for line in stderr.splitlines() if ":CONSOLE" in line]
    assert console == []

    screenshot = tmp_path / "screenshot.png"
    _run(binary, tmp_path / "profile", f"--screenshot={screenshot}", "--window-size=1200,900", index.as_uri())
    with Image.open(screenshot) as shot:
        assert shot.size == (1200, 900)
        pixels = np.asarray(shot.convert("L"), dtype=np.float64)
    assert pixels.std() > 10.0  # text, table and figures, not a blank page


def test_browser_check_catches_a_missing_image(tmp_path: Path) -> None:
    binary = _chromium()
    index = _report(tmp_path)
    missing = min((index.parent / "overlays").iterdir())
    missing.unlink()
    dom, _ = _dom(binary, tmp_path / "profile", index)
    assert dom.body.get("data-images-total") == "8"
    assert dom.body.get("data-images-loaded") == "7"
    assert int(str(dom.body.get("data-errors"))) >= 1
    broken = [img for img in dom.images if img.get("data-natural-width") == "0"]
    assert [img["src"] for img in broken] == [f"overlays/{missing.name}"]
    assert "1 of 8 images failed to load" in dom.banner_text
