"""Sphinx configuration: the user guide (Markdown) and an API reference built from the
numpydoc docstrings. Build with ``pip install -e ".[docs]"`` then
``python -m sphinx -W -b html docs docs/_build/html``."""

import sys
from pathlib import Path

import skucdr

sys.path.insert(0, str(Path(__file__).parent))  # gallery_hooks

project = "skucdr"
release = version = skucdr.__version__
extensions = [
    "myst_parser",  # index.md and methods.md
    "numpydoc",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",  # MathJax served from _static: equations render offline
    "sphinx_gallery.gen_gallery",
]


sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r".*\.py$",  # every example is executed
    "reset_argv": "gallery_hooks.quick_argv",
    "within_subsection_order": "FileNameSortKey",
    "download_all_examples": False,
    "remove_config_comments": True,
    # its timing pages load jQuery from a CDN (the site is checked offline)
    "write_computation_times": False,
    "reset_modules": ("matplotlib", "gallery_hooks.reset_sklearn"),
}
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "auto_examples/*.ipynb", "auto_examples/*.py"]
myst_heading_anchors = 3
myst_enable_extensions = ["dollarmath", "amsmath"]  # equations in methods.md
autosummary_generate = True
autodoc_typehints = "none"  # numpydoc sections carry the types
numpydoc_show_class_members = False  # autosummary lists them
numpydoc_class_members_toctree = False
html_theme = "furo"
# index.md links to files outside docs/ (benchmarks/README.md) for readers on GitHub
suppress_warnings = ["myst.xref_missing"]


def _no_mailto(app, what, name, obj, options, lines):
    """docutils reads "name@word" as an e-mail address: keep "mAP@All" a word."""
    lines[:] = [line.replace("@All", "\\@All") for line in lines]


def setup(app):
    app.connect("autodoc-process-docstring", _no_mailto)
