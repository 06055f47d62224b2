"""Every Python snippet of the README and of the user guide runs, as written.

The blocks of one file run in order in one namespace (later blocks use what earlier ones
made), started with small stand-ins for the names the text leaves to the reader
(``X_art``, ``X_query`` ...: digit images) and, for the folder snippets, image folders
written in a temporary working directory. The estimators' default ``max_epochs`` is
lowered to 1 for speed; nothing else is changed. A block preceded by a line
``<!-- not run in tests: REASON -->`` is skipped (a snippet that needs a running dask
scheduler, for instance).
"""

import re
import warnings
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_BLOCK = re.compile(r"(<!-- not run in tests: [^>]*-->\s*)?```python\n(.*?)```", re.S)


def python_blocks(path):
    """``(code, skipped)`` for every ```python block of ``path``."""
    return [(m.group(2), m.group(1) is not None) for m in _BLOCK.finditer(path.read_text())]


def _stand_ins(tmp_path):
    from skucdr import pack_domains
    from skucdr.datasets import load_digit_domains

    data = load_digit_domains(("mnist", "mnist_m"))
    X_art, y_art = data["mnist"][0][:48], data["mnist"][1][:48]
    X_clipart, y_clipart = data["mnist_m"][0][:48], data["mnist_m"][1][:48]
    X, sample_domain = pack_domains({"art": X_art, "clipart": X_clipart})
    _write_folders(tmp_path / "root", data)
    from skucdr import UniversalCDRRetriever

    retriever = UniversalCDRRetriever(random_state=0).fit({"art": X_art, "clipart": X_clipart})
    return {
        "retriever": retriever,
        "X_art": X_art, "X_clipart": X_clipart, "X_query": X_art[:5],
        "query_domains": ["art"] * 5, "X_catalogue": X_clipart[:30],
        "catalogue_domains": ["clipart"] * 30,
        "y_for_scoring_only": np.concatenate([y_art, y_clipart]),
        "Z_all": X.reshape(len(X), -1)[:, ::37], "y_all": np.concatenate([y_art, y_clipart]),
        "sample_domain": sample_domain, "X": X, "domains": sample_domain,
        # images at a pretrained backbone's size (backbones.md)
        "X_photos": _upscaled(X_clipart[:8]), "X_sketches": _upscaled(X_art[:8]),
    }


def _upscaled(images, size=64):
    import torch
    from torch.nn import functional as F

    return F.interpolate(torch.from_numpy(images), size=size, mode="bilinear").numpy()


def _write_folders(root, data):
    from PIL import Image

    for folder, key in (("photos", "mnist_m"), ("sketches", "mnist")):
        (root / folder).mkdir(parents=True)
        for i, image in enumerate(data[key][0][:24]):
            pixels = (image.transpose(1, 2, 0) * 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / folder / f"{i:03d}.png")


def _has(module):
    import importlib.util

    return importlib.util.find_spec(module) is not None


@pytest.fixture
def quick_defaults(monkeypatch):
    from skucdr import TextPhaseRetriever, UniversalCDRRetriever

    for cls in (UniversalCDRRetriever, TextPhaseRetriever):
        defaults = dict(cls.__init__.__kwdefaults__, max_epochs=1)
        monkeypatch.setattr(cls.__init__, "__kwdefaults__", defaults)


def test_every_guide_file_is_seen():
    assert {p.name for p in DOCS} >= {"README.md", "index.md", "own_images.md", "scale.md",
                                      "model_selection.md", "persistence.md",
                                      "universal_settings.md", "backbones.md"}
    assert sum(len(python_blocks(p)) for p in DOCS) >= 9


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_python_snippets_run(path, tmp_path, monkeypatch, quick_defaults):
    blocks = python_blocks(path)
    if not blocks:
        pytest.skip(f"{path.name} has no Python snippet")
    pytest.importorskip("PIL")
    import sklearn

    monkeypatch.chdir(tmp_path)
    namespace = _stand_ins(tmp_path)
    with sklearn.config_context(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. the checkpoint snippet's resume message
        for i, (code, skipped) in enumerate(blocks):
            if (skipped or ("efficientnet_lite0" in code and not _has("efficientnet_lite_pytorch"))
                    or ("distributed" in code and not _has("distributed"))):
                continue  # a snippet of an optional extra runs where it is (CI lane 2)
            try:
                exec(compile(code, f"{path.name} block {i + 1}", "exec"), namespace)
            except Exception as exc:  # noqa: BLE001 - name the snippet that failed
                raise AssertionError(f"{path.name}, Python block {i + 1} failed: "
                                     f"{type(exc).__name__}: {exc}\n{code}") from exc
