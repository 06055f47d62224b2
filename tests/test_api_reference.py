"""The API reference (docs/api.rst): every public name of the package has its page, and
every name it lists exists and has a docstring (Sphinx itself is not needed)."""

import importlib
import pkgutil
import re
from pathlib import Path

import skucdr

API = Path(__file__).resolve().parents[1] / "docs" / "api.rst"


def public_names():
    """``module.name`` for every class and function in the ``__all__`` of every public
    module (constants such as ``__version__`` are described where they are used)."""
    modules = ["skucdr"] + [
        info.name for info in pkgutil.walk_packages(skucdr.__path__, prefix="skucdr.")
        if not any(part.startswith("_") for part in info.name.split("."))
        and info.name.split(".")[1] != "cli"
    ]
    names = set()
    for name in modules:
        module = importlib.import_module(name)
        names |= {f"{name}.{attr}" for attr in getattr(module, "__all__", ())
                  if callable(getattr(module, attr))}
    return names


def documented_names():
    """The entries of the reference's autosummary tables, as full names."""
    entries = re.findall(r"^   ([A-Za-z_][\w.]*)$", API.read_text(), flags=re.M)
    return {f"skucdr.{entry}" for entry in entries}


def _defined_in(full_name):
    """Where the object named ``full_name`` is defined (``module.name``)."""
    module, attr = full_name.rsplit(".", 1)
    obj = getattr(importlib.import_module(module), attr)
    return f"{getattr(obj, '__module__', module)}.{attr}"


def test_every_public_name_is_in_the_reference():
    documented = documented_names()
    documented_at = {_defined_in(name) for name in documented}
    missing = sorted(
        name for name in public_names()
        if name not in documented and _defined_in(name) not in documented_at
    )
    assert not missing, f"public names without a page in docs/api.rst: {missing}"


def test_the_reference_names_only_what_exists_and_documents_it():
    names = documented_names()
    assert len(names) > 30  # the tables were read
    for name in names:
        _defined_in(name)  # raises if the name is gone
        module, attr = name.rsplit(".", 1)
        assert getattr(importlib.import_module(module), attr).__doc__, \
            f"{name} has no docstring to document"
