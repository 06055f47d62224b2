"""Check the built documentation site: internal links, images, and pages in a browser.

    python docs/check_site.py docs/_build/html [--screenshots DIR]

1. Every page's internal links (``href``) and images (``src``) point at files of the
   build (anchors within pages are not checked), every image file is a non-empty
   image that Pillow can open, and no page has an e-mail link (docutils turns a word
   such as mAP@All into one unless it is written as a literal).
2. The main pages are opened in headless Chromium (Debian's ``chromium`` package) and
   screenshotted; a screenshot that is one flat colour means the page did not render.
3. Every page of the site is opened in Chromium with a probe script ahead of the page's
   own: it records JavaScript errors (uncaught exceptions, rejected promises,
   ``console.error``, resources that failed to load) and, once the page has loaded,
   every image the browser could not decode (``naturalWidth == 0``; lazy images are
   made eager first).

Prints one line per problem and exits with status 1 if there is any.
"""

from __future__ import annotations

import argparse
import html
import json
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

#: runs before the page's own scripts; appends its findings to the page as JSON
PROBE = """<script>(function () {
  var errors = [];
  window.addEventListener("error", function (e) {
    var t = e.target;
    errors.push(t && t !== window ? "failed to load " + (t.src || t.href || t.tagName)
                                  : "uncaught " + e.message);
  }, true);
  window.addEventListener("unhandledrejection", function (e) {
    errors.push("unhandled rejection " + e.reason);
  });
  var consoleError = console.error;
  console.error = function () {
    errors.push("console.error " + Array.prototype.join.call(arguments, " "));
    return consoleError.apply(console, arguments);
  };
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("img").forEach(function (img) { img.loading = "eager"; });
  });
  window.addEventListener("load", function () {
    setTimeout(function () {
      var broken = [];
      document.querySelectorAll("img").forEach(function (img) {
        if (!img.complete || img.naturalWidth === 0) broken.push(img.getAttribute("src"));
      });
      var out = document.createElement("pre");
      out.id = "site-check-probe";
      out.textContent = JSON.stringify({errors: errors, broken: broken,
                                        images: document.images.length});
      document.body.appendChild(out);
    }, 300);
  });
})();</script>"""
_PROBE_OUT = re.compile(r'<pre id="site-check-probe">(.*?)</pre>', re.S)

MAIN_PAGES = ("index.html", "getting_started.html", "universal_settings.html",
              "own_images.html", "backbones.html", "model_selection.html", "scale.html",
              "methods.html", "benchmarks.html", "api.html", "auto_examples/index.html",
              "auto_examples/digit_retrieval.html", "auto_examples/your_own_images.html",
              "auto_examples/open_set_detection.html")


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
        for url in parser.links:
            if url.startswith("mailto:"):
                problems.append(f"{page.relative_to(root)}: e-mail link {unquote(url)[7:]} "
                                "(write the word as a literal)")
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


def probe_pages(root, pages=None):
    """Open ``pages`` (default: every page under ``root``) in headless Chromium with
    :data:`PROBE` ahead of their scripts; problems found (JavaScript errors, images the
    browser could not show, pages that never finished loading)."""
    pages = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.html")) \
        if pages is None else pages
    problems = []
    for page in pages:
        path = root / page
        text = path.read_text(encoding="utf-8", errors="replace")
        head = re.search(r"<head[^>]*>", text)
        probed = path.with_name(path.stem + ".site-check.html")  # same folder: same links
        probed.write_text(text[:head.end()] + PROBE + text[head.end():] if head
                          else PROBE + text, encoding="utf-8")
        try:
            done = subprocess.run(
                [browser(), "--headless", "--no-sandbox", "--disable-gpu",
                 "--allow-file-access-from-files", "--virtual-time-budget=5000",
                 "--dump-dom", probed.resolve().as_uri()],
                capture_output=True, text=True, timeout=120, check=False)
        finally:
            probed.unlink()
        found = _PROBE_OUT.search(done.stdout)
        if found is None:
            problems.append(f"{page}: did not finish loading in Chromium")
            continue
        report = json.loads(html.unescape(found.group(1)))
        problems += [f"{page}: {error}" for error in report["errors"]]
        problems += [f"{page}: image {src} not shown" for src in report["broken"]]
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
        problems += probe_pages(args.root)
    for problem in problems:
        print(problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
