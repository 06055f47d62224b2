"""Sphinx configuration: the user guide (Markdown) and an API reference built from the
numpydoc docstrings. Build with ``pip install -e ".[docs]"`` then
``python -m sphinx -W -b html docs docs/_build/html``."""

import skucdr

project = "skucdr"
release = version = skucdr.__version__
extensions = [
    "myst_parser",  # index.md and methods.md
    "numpydoc",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build"]
myst_heading_anchors = 3
autosummary_generate = True
autodoc_typehints = "none"  # numpydoc sections carry the types
numpydoc_show_class_members = False  # autosummary lists them
numpydoc_class_members_toctree = False
html_theme = "alabaster"
# index.md links to files outside docs/ (benchmarks/README.md) for readers on GitHub
suppress_warnings = ["myst.xref_missing"]
