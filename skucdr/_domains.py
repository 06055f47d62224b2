"""The domain data model: mappings of domains, flat arrays and their validation.

Every estimator of skucdr accepts either a mapping ``{"art": X_a, "clipart": X_c}`` or a
flat ``X`` with a ``sample_domain`` array (one domain label per row). Internally, and in
every meta-estimator path (Pipeline, GridSearchCV, cross_validate), only the flat form is
used, because scikit-learn's cross-validation cannot split a dict.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ._sklearn_compat import validate_data
from ._validation import check_sample_domain, domain_order

__all__ = ["pack_domains", "unpack_domains", "check_domain_input", "DomainInput"]


def _as_array(value, name):
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # torch tensor
        value = value.detach().cpu().numpy()
    try:
        arr = np.asarray(value)
    except Exception as exc:  # pragma: no cover - numpy message is clear enough
        raise TypeError(f"Domain {name!r}: could not convert to an array ({exc}).") from exc
    if arr.dtype == object:
        raise TypeError(
            f"Domain {name!r}: expected a numeric array, got an array of Python objects."
        )
    return arr


def pack_domains(mapping):
    """Stack a mapping of domains into one flat array and a ``sample_domain`` array.

    Parameters
    ----------
    mapping : Mapping of str or int to array-like
        ``{domain_name: X_domain}``. Each ``X_domain`` has shape ``(n_d, ...)`` with the
        same trailing shape for every domain: feature vectors ``(n_d, n_features)`` or
        images ``(n_d, C, H, W)``. A value may also be a pair ``(X_domain, y_domain)`` as
        returned by :func:`skucdr.datasets.load_digit_domains`; then labels are stacked too.

    Returns
    -------
    X : ndarray of shape (n_samples, ...)
        Rows of every domain, in the mapping's insertion order.
    y : ndarray of shape (n_samples,)
        Only when the values are ``(X, y)`` pairs: the stacked labels.
    sample_domain : ndarray of shape (n_samples,)
        The domain name of every row.

    Examples
    --------
    >>> import numpy as np
    >>> from skucdr import pack_domains
    >>> X, d = pack_domains({"art": np.zeros((2, 3)), "photo": np.ones((1, 3))})
    >>> X.shape, d.tolist()
    ((3, 3), ['art', 'art', 'photo'])
    """
    if not isinstance(mapping, Mapping):
        raise TypeError(
            f"pack_domains expects a mapping of domain name to array, got {type(mapping).__name__}."
        )
    if len(mapping) == 0:
        raise ValueError("pack_domains got an empty mapping: at least one domain is needed.")
    all_int = _check_domain_names(list(mapping)) == "int"
    values = list(mapping.values())
    with_labels = [isinstance(v, tuple) and len(v) == 2 for v in values]
    if any(with_labels) and not all(with_labels):
        raise ValueError(
            "pack_domains: either every value is an array or every value is an (X, y) pair."
        )
    with_labels = all(with_labels)

    xs, ys, names = [], [], []
    trailing = None
    for name, value in mapping.items():
        x_part, y_part = value if with_labels else (value, None)
        x_part = _as_array(x_part, name)
        if x_part.ndim < 2:
            raise ValueError(
                f"Domain {name!r}: expected a 2-D (n, n_features) or 4-D (n, C, H, W) array, "
                f"got shape {x_part.shape}."
            )
        if x_part.shape[0] == 0:
            raise ValueError(f"Domain {name!r} is empty: every domain needs at least one row.")
        if trailing is None:
            trailing = x_part.shape[1:]
        elif x_part.shape[1:] != trailing:
            raise ValueError(
                f"Domain {name!r} has rows of shape {x_part.shape[1:]}, but the first domain "
                f"has rows of shape {trailing}: every domain must share one row shape."
            )
        if with_labels:
            y_part = np.asarray(y_part)
            if y_part.shape != (x_part.shape[0],):
                raise ValueError(
                    f"Domain {name!r}: labels of shape {y_part.shape} do not match "
                    f"{x_part.shape[0]} rows."
                )
            ys.append(y_part)
        xs.append(x_part)
        names.append(np.full(x_part.shape[0], name, dtype=object))
    X = np.concatenate(xs, axis=0)
    sample_domain = np.concatenate(names)
    if all_int:
        sample_domain = sample_domain.astype(np.int64)
    else:
        sample_domain = sample_domain.astype(str)
    if with_labels:
        return X, np.concatenate(ys), sample_domain
    return X, sample_domain


def _check_domain_names(keys):
    """``"str"`` or ``"int"``: the kind of a mapping's keys, which must be one of them."""
    if all(isinstance(k, (str, np.str_)) for k in keys):
        return "str"
    if all(isinstance(k, (int, np.integer)) and not isinstance(k, bool) for k in keys):
        return "int"
    raise TypeError(f"The mapping's keys are domain names: all str or all int, got {keys!r}.")


def _holds_arrays(items):
    """Whether a list or tuple holds 2-D arrays of rows, or items of different shapes,
    rather than the rows (or images) of one array."""
    shapes = [np.shape(item) for item in items]
    return bool(shapes) and (any(len(s) == 2 for s in shapes) or len(set(shapes)) > 1)


def unpack_domains(Z, sample_domain, *, domains=None):
    """Split rows of ``Z`` back into a mapping of domain name to array.

    Parameters
    ----------
    Z : array-like of shape (n_samples, ...)
        Rows to split (features, embeddings, labels ...).
    sample_domain : array-like of shape (n_samples,)
        The domain of every row.
    domains : sequence, default=None
        Order of the keys of the result. By default, the order in which domains first
        appear in ``sample_domain``.

    Returns
    -------
    mapping : dict
        ``{domain: Z[sample_domain == domain]}``.
    """
    Z = np.asarray(Z) if not hasattr(Z, "iloc") else Z
    if np.ndim(Z) == 0:
        raise ValueError(f"Z must hold rows (an array of at least 1 dimension), got {Z!r}.")
    sample_domain = check_sample_domain(sample_domain, len(Z), rows_of="Z")
    order = domain_order(sample_domain) if domains is None else list(domains)
    take = (lambda m: Z.iloc[m]) if hasattr(Z, "iloc") else (lambda m: Z[m])
    return {_to_python(d): take(sample_domain == d) for d in order}


def _to_python(label):
    return label.item() if isinstance(label, np.generic) else label


@dataclass
class DomainInput:
    """Validated input of an estimator.

    Attributes
    ----------
    X : ndarray of shape (n_samples, n_features), float32
        Rows in flat form (images are flattened row-major as ``C*H*W``).
    sample_domain : ndarray of shape (n_samples,)
        Domain label of every row (``0`` for every row when none was given).
    image_shape : tuple of int or None
        ``(C, H, W)`` when rows are images, else None.
    from_mapping : bool
        Whether the caller passed a mapping (outputs are then returned as a mapping).
    domain_order : list
        Domain labels in order of first appearance.
    domains_given : bool
        Whether the caller named the domains (a mapping or ``sample_domain``).
    """

    X: np.ndarray
    sample_domain: np.ndarray
    image_shape: tuple | None
    from_mapping: bool
    domain_order: list
    domains_given: bool = True


def _check_image_shape(image_shape):
    if image_shape is None:
        return None
    try:
        shape = tuple(int(s) for s in image_shape)
    except TypeError as exc:
        raise TypeError(f"image_shape must be a tuple (C, H, W), got {image_shape!r}.") from exc
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"image_shape must be three positive ints (C, H, W), got {image_shape!r}.")
    return shape


_COLOUR_CHANNELS = (1, 3, 4)  # grey, RGB, RGBA


def _reject_channels_last(shape, source):
    """Raise when an image shape reads ``(H, W, C)`` rather than ``(C, H, W)``.

    The estimators (like torch) take channels first. A last axis of 1, 3 or 4 with a
    first axis that is none of these is an ``(H, W, C)`` image (a width of 1-4 pixels is
    not an image a CNN can use); without this check it would be taken as ``C = H`` channels
    of width ``C`` and trained on silently.
    """
    if shape[-1] in _COLOUR_CHANNELS and shape[0] not in _COLOUR_CHANNELS:
        height, width, channels = shape
        if source == "X":
            fix = "pass X.transpose(0, 3, 1, 2)"
        else:
            fix = (
                f"pass image_shape=({channels}, {height}, {width}) with rows flattened from "
                "channels-first images, X.transpose(0, 3, 1, 2).reshape(len(X), -1)"
            )
        raise ValueError(
            f"{source} describes images of shape {shape}, which looks channels-last "
            f"(H, W, C) = ({height}, {width}, {channels}); images must be channels-first "
            f"(C, H, W), as in torch: {fix}."
        )


def check_domain_input(
    estimator, X, sample_domain=None, *, image_shape=None, reset=True, require_images=False,
    allow_datasets=False,
):
    """Validate the input of a domain-aware estimator and bring it to flat form.

    Accepts a mapping of domains, a 2-D array of feature vectors or flattened images
    (with ``image_shape``), or a 4-D image array ``(n, C, H, W)``. Calls scikit-learn's
    ``validate_data`` on the flat array, so ``n_features_in_`` is set on ``reset`` and
    checked otherwise.

    Parameters
    ----------
    estimator : estimator instance
        The estimator whose input is validated.
    X : array-like or Mapping
        The input.
    sample_domain : array-like of shape (n_samples,), default=None
        Domain label (str or int) of every row; None means one domain (label ``0``).
        Must be None when ``X`` is a mapping.
    image_shape : tuple (C, H, W), default=None
        The shape of one image when ``X`` holds flattened images.
    reset : bool, default=True
        True in ``fit``; False in ``transform`` and other post-fit methods.
    require_images : bool, default=False
        Raise a ``ValueError`` when the rows are not images.
    allow_datasets : bool, default=False
        Accept a map-style dataset of images (or a mapping of them) as ``X``: the
        returned ``X`` is then a :class:`~skucdr._lazy.LazyImages` that decodes rows when
        they are sliced.

    Returns
    -------
    DomainInput
    """
    # a scipy.sparse dok_matrix is a dict subclass: it is data, not a mapping of domains
    from_mapping = isinstance(X, Mapping) and not hasattr(X, "tocsr")
    if from_mapping and sample_domain is not None:
        raise ValueError(
            "Pass either a mapping {domain: X} or a flat X with sample_domain, not both."
        )
    if _holds_datasets(X, from_mapping):
        if not allow_datasets:
            raise TypeError(f"{type(estimator).__name__} takes arrays; a dataset of images is "
                            "read lazily by the retrievers only.")
        return _lazy_domain_input(estimator, X, sample_domain, image_shape, reset, from_mapping)
    if from_mapping:
        X, sample_domain = pack_domains(X)

    elif isinstance(X, (list, tuple)) and _holds_arrays(X):
        raise TypeError(
            f"X is a {type(X).__name__} of {len(X)} arrays; a mapping of domains is "
            "expected for several arrays, {name: X_domain} (dict(zip(names, arrays))), or "
            "one array of rows with sample_domain."
        )

    image_shape = _check_image_shape(image_shape)
    if image_shape is not None:
        _reject_channels_last(image_shape, "image_shape")
    if hasattr(X, "detach") and hasattr(X, "cpu"):
        X = X.detach().cpu().numpy()
    if not hasattr(X, "iloc") and not hasattr(X, "tocsr"):
        X_arr = np.asarray(X) if not isinstance(X, np.ndarray) else X
        if X_arr.ndim == 4:
            if image_shape is not None and tuple(X_arr.shape[1:]) != image_shape:
                raise ValueError(
                    f"X holds images of shape {X_arr.shape[1:]}, but image_shape={image_shape}."
                )
            image_shape = tuple(int(s) for s in X_arr.shape[1:])
            _reject_channels_last(image_shape, "X")
            X = X_arr.reshape(X_arr.shape[0], -1)
        elif X_arr.ndim == 3:
            raise ValueError(
                f"X has shape {X_arr.shape}: expected (n, n_features), (n, C, H, W) images, "
                "or flattened images with image_shape=(C, H, W). Add the channel axis to "
                "single-channel images (X[:, None])."
            )

    X = validate_data(estimator, X, reset=reset, dtype=[np.float32, np.float64])
    if X.dtype != np.float32:
        with np.errstate(over="ignore"):
            X32 = np.asarray(X, dtype=np.float32)
        if not np.isfinite(X32).all():
            raise ValueError(
                "X holds values too large for float32 (the precision of training): |x| "
                f"up to {float(np.abs(X).max()):.3g}. Rescale the input."
            )
        X = X32
    X = np.asarray(X, dtype=np.float32)
    if image_shape is not None and int(np.prod(image_shape)) != X.shape[1]:
        raise ValueError(
            f"image_shape={image_shape} holds {int(np.prod(image_shape))} values per image, "
            f"but X has {X.shape[1]} features per row."
        )
    if require_images and image_shape is None:
        raise ValueError(
            f"{type(estimator).__name__} needs images: pass X of shape (n, C, H, W), or "
            "flattened images together with image_shape=(C, H, W). Plain feature vectors "
            "carry no pixels."
        )

    return _domain_input(X, sample_domain, image_shape, from_mapping)


def _holds_datasets(X, from_mapping):
    from ._lazy import is_image_dataset

    if from_mapping:
        return any(is_image_dataset(v) for v in X.values())
    return is_image_dataset(X)


def _lazy_domain_input(estimator, X, sample_domain, image_shape, reset, from_mapping):
    """:func:`check_domain_input` for a dataset of images, or a mapping of them."""
    from ._lazy import LazyImages, is_image_dataset

    if from_mapping:
        if not all(is_image_dataset(v) for v in X.values()):
            raise TypeError("The mapping mixes image datasets and arrays: give every domain "
                            "as a dataset, or every domain as an array.")
        _check_domain_names(list(X))
        from torch.utils.data import ConcatDataset

        lengths = [len(v) for v in X.values()]
        empty = [name for name, n in zip(X, lengths) if n == 0]
        if empty:
            raise ValueError(f"Domain {empty[0]!r} is empty: every domain needs at least one "
                             "row.")
        workers = max(getattr(v, "num_workers", 0) for v in X.values())
        names = np.asarray(list(X), dtype=object)
        sample_domain = np.repeat(names, lengths)
        X = ConcatDataset(list(X.values()))
    else:
        workers = getattr(X, "num_workers", 0)
    X = LazyImages(X, num_workers=workers)
    if image_shape is not None and X.image_shape != tuple(image_shape):
        raise ValueError(f"The dataset's images have shape {X.image_shape}, but "
                         f"image_shape={tuple(image_shape)}.")
    _reject_channels_last(X.image_shape, "X")
    if reset:
        estimator.__dict__.pop("feature_names_in_", None)
        estimator.n_features_in_ = X.shape[1]
    elif getattr(estimator, "n_features_in_", X.shape[1]) != X.shape[1]:
        raise ValueError(f"X has {X.shape[1]} features, but {type(estimator).__name__} is "
                         f"expecting {estimator.n_features_in_} features as input.")
    return _domain_input(X, sample_domain, X.image_shape, from_mapping)


def _domain_input(X, sample_domain, image_shape, from_mapping):
    """The :class:`DomainInput` of validated rows ``X`` and raw ``sample_domain``."""
    n = X.shape[0]
    domains_given = sample_domain is not None
    if sample_domain is None:
        sample_domain = np.zeros(n, dtype=np.int64)
    else:
        sample_domain = check_sample_domain(sample_domain, n)
    return DomainInput(
        X=X,
        sample_domain=sample_domain,
        image_shape=image_shape,
        from_mapping=from_mapping,
        domain_order=[_to_python(d) for d in domain_order(sample_domain)],
        domains_given=domains_given,
    )
