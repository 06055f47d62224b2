"""The built documentation site, checked as a reader meets it: internal links and images
resolve, and the main pages render in headless Chromium (screenshots are kept in
``docs/_build/screenshots``). CI builds the site before the tests run."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / "docs" / "_build" / "html"


def _checker():
    spec = importlib.util.spec_from_file_location("check_site", ROOT / "docs" / "check_site.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_link_check_finds_a_broken_link(tmp_path):
    pytest.importorskip("PIL")
    (tmp_path / "index.html").write_text('<a href="here.html">x</a><a href="gone.html">y</a>'
                                         '<a href="https://example.org">z</a>'
                                         '<a href="mailto:mAP&#37;&#52;&#48;All">w</a>')
    (tmp_path / "here.html").write_text("<p>here</p>")
    assert _checker().check_links(tmp_path) == [
        "index.html: e-mail link mAP@All (write the word as a literal)",
        "index.html: broken link gone.html"]


def test_built_site_links_images_and_pages():
    pytest.importorskip("PIL")
    if not (SITE / "index.html").exists():
        pytest.skip("the site is not built here (python -m sphinx -b html docs docs/_build/html)")
    check = _checker()
    assert check.check_links(SITE) == []
    if check.browser() is None:
        pytest.skip("no Chromium here (Debian's chromium package) to open the pages")
    assert check.screenshot_pages(SITE, SITE.parent / "screenshots") == []
    assert check.probe_pages(SITE) == []


def test_browser_probe_finds_errors_and_broken_images(tmp_path):
    pytest.importorskip("PIL")
    from PIL import Image

    check = _checker()
    if check.browser() is None:
        pytest.skip("no Chromium here (Debian's chromium package) to open the pages")
    Image.new("RGB", (4, 4), "red").save(tmp_path / "fine.png")
    (tmp_path / "empty.png").write_bytes(b"not a png")
    (tmp_path / "good.html").write_text(
        '<html><head><title>t</title></head><body><img src="fine.png"></body></html>')
    (tmp_path / "bad.html").write_text(
        '<html><head><title>t</title></head><body><img src="empty.png">'
        '<script>undefinedFunction();</script></body></html>')
    assert check.probe_pages(tmp_path, ["good.html"]) == []
    problems = check.probe_pages(tmp_path, ["bad.html"])
    assert any("undefinedFunction" in p for p in problems), problems
    assert any("empty.png" in p for p in problems), problems
