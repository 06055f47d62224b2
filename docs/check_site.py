"""Check the built documentation site: internal links, images, and pages in a browser.

    python docs/check_site.py docs/_build/html [--screenshots DIR]

1. Every page's internal links (``href``) and images (``src``) point at files of the
   build (anchors within pages are not checked), and every image file is a non-empty
   image that Pillow can open.
2. The main pages are opened in headless Chromium (Debian's ``chromium`` package) and
   screenshotted; a screenshot that is one flat colour means the page did not render.

Prints one line per problem and exits with status 1 if there is any.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

MAIN_PAGES = ("index.html", "own_images.html", "scale.html", "methods.html",
              "benchmarks.html", "api.html", "auto_examples/index.html",
              "auto_examples/digit_retrieval.html")


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links, self.images = [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])
        if tag == "img" and attrs.get("src"):
            self.images.append(attrs["src"])


def _internal(url):
    parsed = urlparse(url)
    return not parsed.scheme and not parsed.netloc and parsed.path


def check_links(root):
    """Problems with internal links and images of every page under ``root``."""
    from PIL import Image

    problems = []
    for page in sorted(root.rglob("*.html")):
        parser = _Links()
        parser.feed(page.read_text(encoding="utf-8", errors="replace"))
        for url in parser.links + parser.images:
            if not _internal(url):
                continue
            target = (page.parent / unquote(urlparse(url).path)).resolve()
            if target.is_dir():
                target = target / "index.html"
            if not target.exists():
                problems.append(f"{page.relative_to(root)}: broken link {url}")
        for url in parser.images:
            if not _internal(url):
                continue
            target = (page.parent / unquote(urlparse(url).path)).resolve()
            if target.exists() and target.suffix.lower() in (".png", ".jpg", ".jpeg", ".gif"):
                try:
                    with Image.open(target) as image:
                        image.verify()
                except Exception as exc:  # noqa: BLE001 - any decoding failure
                    problems.append(f"{page.relative_to(root)}: image {url} unreadable: {exc}")
    return problems


def browser():
    return shutil.which("chromium") or shutil.which("chromium-browser")


def screenshot_pages(root, out, pages=MAIN_PAGES):
    """Screenshot ``pages`` with headless Chromium into ``out``; problems found."""
    import numpy as np
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    problems = []
    for page in pages:
        path = root / page
        if not path.exists():
            problems.append(f"{page}: missing")
            continue
        shot = out / (page.replace("/", "_").replace(".html", ".png"))
        subprocess.run([browser(), "--headless", "--no-sandbox", "--disable-gpu",
                        "--hide-scrollbars", "--window-size=1280,1600",
                        "--virtual-time-budget=5000", f"--screenshot={shot}",
                        path.resolve().as_uri()],
                       capture_output=True, timeout=120, check=False)
        if not shot.exists():
            problems.append(f"{page}: Chromium wrote no screenshot")
            continue
        pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
        if pixels.std() < 2:
            problems.append(f"{page}: the screenshot is blank")
    return problems


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--screenshots", type=Path, default=None)
    args = parser.parse_args(argv)
    problems = check_links(args.root)
    if browser() is None:
        print("no chromium here: pages not opened in a browser")
    else:
        problems += screenshot_pages(args.root, args.screenshots or args.root.parent
                                     / "screenshots")
    for problem in problems:
        print(problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
