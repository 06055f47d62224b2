"""skucdr: unsupervised cross-domain retrieval with a scikit-learn API.

Public names and submodules are imported lazily, so ``import skucdr`` stays cheap and
does not import torch until an estimator that needs it is used. Importing has no other
side effect (in particular, scikit-learn's global configuration is never changed).
"""

from importlib import import_module

__version__ = "0.1.0"

_PUBLIC = {
    "UniversalCDRRetriever": "skucdr.uem",
    "TextPhaseRetriever": "skucdr.tpsnet",
    "PhasePriorExtractor": "skucdr.preprocessing",
    "PrototypeClusterer": "skucdr.cluster",
    "pack_domains": "skucdr._domains",
    "unpack_domains": "skucdr._domains",
}
_SUBMODULES = (
    "cluster",
    "datasets",
    "label_free",
    "metrics",
    "model_selection",
    "neighbors",
    "nn",
    "open_set",
    "persistence",
    "preprocessing",
    "tpsnet",
    "uem",
)

__all__ = sorted(_PUBLIC) + ["__version__"]


def __getattr__(name):
    if name in _PUBLIC:
        value = getattr(import_module(_PUBLIC[name]), name)
    elif name in _SUBMODULES:
        value = import_module(f"skucdr.{name}")
    else:
        raise AttributeError(f"module 'skucdr' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return __all__ + list(_SUBMODULES)
