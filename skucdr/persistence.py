"""Sharing a fitted retriever without pickle: a JSON configuration and a weights file.

``joblib.dump`` / ``joblib.load`` keep everything about a fitted retriever, but loading
a joblib file runs pickle, and a pickle can run any code: only load joblib files you
trust. :func:`save_retriever` writes a directory that can be loaded from an untrusted
source instead:

``config.json``
    The class name, the constructor parameters, the fitted attributes that are plain
    values (domains, image shape, number of features, device) and the loss history.
``weights.pt``
    The module's weights and the fitted arrays (gallery and training embeddings,
    per-domain input statistics), read back with ``torch.load(weights_only=True)``:
    tensors and plain containers only, no code.

:func:`load_retriever` builds the estimator from its parameters, rebuilds its network
from the configuration (only skucdr's own retrievers and named encoders are known) and
loads the weights into it. The price of that safety: a parameter that is a Python
object other than plain values (an ``nn.Module`` encoder, a callable ``augment``, an
open_clip text tower) cannot be written as JSON; :func:`save_retriever` says which
and the model is shared with joblib, from trusted hands only.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np

__all__ = ["save_retriever", "load_retriever"]

FORMAT = "skucdr-retriever"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.pt"



def _retriever_classes():
    from .tpsnet import TextPhaseRetriever
    from .uem import UniversalCDRRetriever

    return {cls.__name__: cls for cls in (UniversalCDRRetriever, TextPhaseRetriever)}


def _param_to_json(name, value):
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, tuple):
        return {"tuple": list(value)}
    try:
        json.dumps(value)
    except TypeError:
        raise TypeError(
            f"save_retriever writes parameters as JSON, and {name}={value!r} is not a plain "
            "value. Share this model with joblib.dump (loading it runs pickle: only for "
            "trusted files)."
        ) from None
    return value


def _param_from_json(value):
    if isinstance(value, dict) and set(value) == {"tuple"}:
        return tuple(value["tuple"])
    return value


def _labels_to_json(name, array):
    array = np.asarray(array)
    values = array.tolist()
    if array.dtype.kind == "O" and not all(
            isinstance(v, (str, int)) and not isinstance(v, bool) for v in values):
        raise TypeError(f"save_retriever writes {name} as JSON; it holds values that are "
                        "neither str nor int. Share this model with joblib.dump.")
    return {"values": values, "dtype": array.dtype.str}


def _plain(value):
    """NumPy scalars and tuples as JSON values (for the loss history)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def save_retriever(retriever, path):
    """Write a fitted retriever as a directory that loads without pickle.

    Parameters
    ----------
    retriever : UniversalCDRRetriever or TextPhaseRetriever
        A fitted retriever whose parameters are plain values (strings, numbers,
        tuples).
    path : str or path
        The directory to write (created if needed); ``config.json`` and ``weights.pt``
        in it are replaced.

    Raises
    ------
    TypeError
        When ``retriever`` is not a skucdr retriever, or a parameter is not a plain
        value (the message names it).
    sklearn.exceptions.NotFittedError
        When ``retriever`` is not fitted.

    See Also
    --------
    load_retriever : Read it back.
    """
    import torch
    from sklearn.utils.validation import check_is_fitted

    from ._base import fitted_state_of

    classes = _retriever_classes()
    if type(retriever).__name__ not in classes or not isinstance(
            retriever, classes[type(retriever).__name__]):
        raise TypeError(f"save_retriever takes a skucdr retriever, got {type(retriever).__name__}.")
    check_is_fitted(retriever)
    params = {k: _param_to_json(k, v) for k, v in retriever.get_params(deep=False).items()}
    fitted, labels, arrays = {}, {}, {}
    for name, kind in fitted_state_of(retriever).items():
        if not hasattr(retriever, name):  # e.g. input_mean_ of a fit without it
            continue
        value = getattr(retriever, name)
        if kind == "value":
            fitted[name] = _param_to_json(name, value) if name == "image_shape_" else value
        elif kind == "labels":
            labels[name] = _labels_to_json(name, value)
        elif kind == "array":
            arrays[name] = value
        elif kind == "gallery":
            labels["gallery_domain_"] = _labels_to_json("gallery_domain_", value.domain)
            arrays["gallery_embedding_"] = value.embedding
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "skucdr_version": _version(),
        "class": type(retriever).__name__,
        "params": params,
        "fitted": _plain(fitted),
        "labels": labels,
        "architecture": _plain(retriever._architecture()),
        "history": _plain(list(retriever.history_)),
    }
    module = retriever.net_.module_
    weights = {
        "module": {k: v.detach().cpu() for k, v in module.state_dict().items()},
        "arrays": {name: torch.from_numpy(np.ascontiguousarray(array))
                   for name, array in arrays.items()},
    }
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    config["indexes"] = retriever.gallery_.write_indexes(path)
    torch.save(weights, path / WEIGHTS_FILE)
    (path / CONFIG_FILE).write_text(json.dumps(_plain(config), indent=1))
    return path


def load_retriever(path, *, device=None, mmap_indexes=False):
    """Read a retriever written by :func:`save_retriever`, without running pickle.

    Parameters
    ----------
    path : str or path
        The directory :func:`save_retriever` wrote.
    device : str, default=None
        Where to put the network: None keeps the device it was fitted on when that
        device is here, else the CPU (with a warning).
    mmap_indexes : bool, default=False
        Memory-map the saved faiss indexes of the gallery instead of reading them: the
        operating system pages them in as searches need them (for catalogues whose
        index does not fit in memory). Either way, nothing is rebuilt.

    Returns
    -------
    retriever : UniversalCDRRetriever or TextPhaseRetriever
        Fitted: ``transform``, ``kneighbors``, ``detect_private`` and ``score`` give
        what the saved retriever gave.

    Raises
    ------
    ValueError
        When the directory holds no skucdr retriever, or one of another format version.
    """
    from skorch.history import History

    from ._gallery import Gallery
    from .nn.checkpoint import load_module_state
    from .nn.devices import device_available, resolve_device
    from .nn.training import MultiDomainNet

    path = Path(path)
    config_file = path / CONFIG_FILE
    if not config_file.is_file() or not (path / WEIGHTS_FILE).is_file():
        raise ValueError(f"{path} holds no saved retriever: {CONFIG_FILE} and "
                         f"{WEIGHTS_FILE} are expected (written by save_retriever).")
    config = json.loads(config_file.read_text())
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ValueError(f"{config_file} is not a skucdr retriever configuration.")
    if config.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{config_file} has format version {config.get('format_version')}; "
                         f"this skucdr (version {_version()}) reads version {FORMAT_VERSION}.")
    classes = _retriever_classes()
    if config.get("class") not in classes:
        raise ValueError(f"{config_file} names an unknown class {config.get('class')!r}; "
                         f"expected one of {sorted(classes)}.")
    if config.get("skucdr_version") != _version():
        warnings.warn(f"{path} was saved by skucdr {config.get('skucdr_version')}, and this is "
                      f"skucdr {_version()}.", UserWarning, stacklevel=2)
    retriever = _retriever_from_params(classes[config["class"]], config.get("params"),
                                       config_file)
    for name, value in config["fitted"].items():
        setattr(retriever, name, _param_from_json(value) if name == "image_shape_" else value)
    labels = {name: np.asarray(saved["values"], dtype=np.dtype(saved["dtype"]))
              for name, saved in config["labels"].items()}
    weights = _read_weights(path / WEIGHTS_FILE)
    arrays = {name: tensor.numpy() for name, tensor in weights["arrays"].items()}
    gallery = Gallery(arrays.pop("gallery_embedding_"), labels.pop("gallery_domain_"))
    for name, value in {**labels, **arrays}.items():
        setattr(retriever, name, value)

    fitted_device = retriever.device_
    if device is not None:
        fitted_device = resolve_device(device)
    elif not device_available(fitted_device):
        warnings.warn(f"{path} was fitted on device {fitted_device!r}, which is not available "
                      "here; it is loaded on the CPU.", UserWarning, stacklevel=2)
        fitted_device = "cpu"
    retriever.device_ = fitted_device
    module = retriever._rebuild_module(config["architecture"])
    load_module_state(module, weights["module"])
    net = MultiDomainNet(module, max_epochs=retriever._n_epochs(), lr=retriever.lr,
                         device=fitted_device, batch_size=1)
    net.initialize()
    net.module_.eval()
    net.history = History(config["history"])
    retriever.net_ = net
    retriever.history_ = net.history
    retriever.gallery_ = gallery.read_indexes(path, config.get("indexes", []),
                                              mmap=mmap_indexes)
    return retriever


def _retriever_from_params(cls, params, config_file):
    """The estimator of the saved parameters, validated as ``fit`` validates them."""
    if not isinstance(params, dict):
        raise ValueError(f"{config_file} holds no parameters of {cls.__name__}.")
    try:
        retriever = cls(**{k: _param_from_json(v) for k, v in params.items()})
        retriever._validate_params()  # scikit-learn's check of _parameter_constraints
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{config_file} holds parameters {cls.__name__} does not take: "
                         f"{str(exc).splitlines()[0]}") from None
    return retriever


def _read_weights(weights_file):
    """The tensors of ``weights.pt``, read with ``weights_only=True``; a one-line
    ``ValueError`` naming the file when it is not a weights file of this format."""
    import pickle

    import torch

    try:
        with warnings.catch_warnings():  # torch's notes on pickle protocols: the error says it
            warnings.simplefilter("ignore")
            weights = torch.load(weights_file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ValueError(f"{weights_file} is not a skucdr weights file: it holds objects "
                         "other than tensors and plain containers (loading them would run "
                         "code); nothing was run.") from None
    except (RuntimeError, EOFError, ValueError, TypeError, AttributeError, ImportError,
            OSError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{weights_file} is not a skucdr weights file: {reason}") from None
    if not isinstance(weights, dict) or not {"module", "arrays"} <= set(weights):
        raise ValueError(f"{weights_file} is not a skucdr weights file: it holds no "
                         "'module' and 'arrays' entries.")
    return weights


def _version():
    from . import __version__

    return __version__
