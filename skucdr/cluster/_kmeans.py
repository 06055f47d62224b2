"""Spherical k-means (faiss or scikit-learn) and the elbow choice of the number of
clusters."""

from __future__ import annotations

import math
import numbers
import warnings
from contextlib import nullcontext

import numpy as np
import scipy.sparse as sp
from sklearn.utils import check_array, check_random_state

try:  # faiss is a dependency, but keep a pure scikit-learn path (macOS OpenMP clashes).
    import faiss
except ImportError:  # pragma: no cover - exercised only without faiss
    faiss = None

from .._sklearn_compat import Interval, StrOptions, validate_params
from .._validation import l2_normalize as _normalize_rows


def l2_normalize(X):
    """Scale every row of ``X`` to unit Euclidean norm (all-zero rows stay zero).

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
        Rows to normalise; float32 stays float32 (other types become float64).

    Returns
    -------
    X_normalized : ndarray of shape (n_samples, n_features)
        A new array.
    """
    return _normalize_rows(X, dtype=None)


_BACKENDS = ("auto", "faiss", "sklearn")


# --------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------
def seed_from(random_state):
    """An int seed for faiss from ``None``, an int or a ``RandomState``."""
    return int(check_random_state(random_state).randint(0, 2**31 - 1))


def thread_limit(n_threads):
    """Context limiting OpenMP/BLAS threads (faiss, numpy) to ``n_threads``; None: no limit."""
    if n_threads is None:
        return nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=int(n_threads))


def check_backend(backend):
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS}, got {backend!r}.")
    if backend == "faiss" and faiss is None:
        raise ImportError("backend='faiss' needs the faiss-cpu package, which is not installed.")
    if backend == "auto":
        return "sklearn" if faiss is None else "faiss"
    return backend


def check_positive_int(value, name, minimum=1):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}.")
    return int(value)


def reject_sparse(X):
    # scipy's dok_matrix is a Mapping: catch sparse input before it is read as {domain: X}.
    if sp.issparse(X):
        raise TypeError(
            "Sparse data was passed for X, but dense data is required. Use '.toarray()' "
            "to convert to a dense numpy array."
        )


def check_features(X, name="X"):
    return check_array(X, dtype=[np.float32, np.float64], input_name=name)


# --------------------------------------------------------------------------------------
# spherical k-means and the elbow
# --------------------------------------------------------------------------------------
def _assign(Xn, centers):
    """Nearest unit centre by cosine; returns labels and the inertia on the unit sphere."""
    sims = Xn @ centers.T
    labels = np.argmax(sims, axis=1)
    best = sims[np.arange(len(Xn)), labels].astype(np.float64)
    # ||x - c||^2 = 2 - 2 cos for unit x and c; clip the rounding below zero.
    inertia = float(np.clip(2.0 - 2.0 * best, 0.0, None).sum())
    return labels.astype(np.int64), inertia


def _kmeans_plusplus_sphere(Xn, n_clusters, rng):
    """Greedy k-means++ seeding (Arthur & Vassilvitskii 2007) on unit rows.

    As scikit-learn's ``kmeans_plusplus``: ``2 + log(k)`` candidates per step, the one that
    most lowers the potential is kept. Squared distances are ``2 - 2 cos`` on unit rows.
    The first ``j`` seeds are themselves a greedy k-means++ seeding for ``j`` clusters, which
    the elbow scan uses to seed every ``k`` from one draw.
    """
    n = len(Xn)
    n_trials = 2 + int(np.log(n_clusters))
    index = np.empty(n_clusters, dtype=np.int64)
    index[0] = rng.randint(n)
    closest = np.clip(2.0 - 2.0 * (Xn @ Xn[index[0]]), 0.0, None)
    potential = closest.sum()
    for c in range(1, n_clusters):
        if potential <= 0:  # fewer distinct rows than clusters: repeat a row
            index[c:] = index[0]
            break
        draws = rng.uniform(size=n_trials) * potential
        candidates = np.minimum(np.searchsorted(np.cumsum(closest), draws), n - 1)
        dist = np.clip(2.0 - 2.0 * (Xn[candidates] @ Xn.T), 0.0, None)
        np.minimum(closest, dist, out=dist)
        best = int(np.argmin(dist.sum(axis=1)))
        index[c] = candidates[best]
        closest = dist[best]
        potential = closest.sum()
    return Xn[index]


def _lloyd(Xn, init, n_iter, seed, backend):
    """Spherical Lloyd iterations from ``init``; returns unit centres."""
    n_samples, n_features = Xn.shape
    n_clusters = len(init)
    if n_clusters == 1:  # the spherical optimum is the normalised mean
        return l2_normalize(Xn.mean(axis=0, keepdims=True))
    if backend == "faiss":
        km = faiss.Kmeans(
            n_features,
            n_clusters,
            niter=n_iter,
            nredo=1,
            spherical=True,
            seed=seed,
            verbose=False,
            min_points_per_centroid=1,  # silence faiss' "too few points" warning
            max_points_per_centroid=math.ceil(n_samples / n_clusters) + 1,  # no subsampling
        )
        km.train(Xn, init_centroids=np.ascontiguousarray(init, dtype=np.float32))
        centers = np.asarray(km.centroids, dtype=np.float32)
    else:
        from sklearn.cluster import KMeans

        km = KMeans(n_clusters=n_clusters, init=init, n_init=1, max_iter=n_iter)
        with warnings.catch_warnings():  # duplicate seeds on degenerate data
            warnings.simplefilter("ignore")
            centers = km.fit(Xn).cluster_centers_.astype(np.float32)
    return l2_normalize(centers)  # also: faiss returns the raw seeds when n == k


def _best_of_runs(Xn, inits, n_iter, seed, backend):
    """Run Lloyd from every seeding in ``inits``; keep the lowest inertia."""
    best = None
    for init in inits:
        centers = _lloyd(Xn, init, n_iter, seed, backend)
        labels, inertia = _assign(Xn, centers)
        if best is None or inertia < best[2]:
            best = (centers, labels, inertia)
    return best


def _prepare_kmeans(X, n_iter, n_redo, random_state, backend):
    X = check_features(X)
    n_iter = check_positive_int(n_iter, "n_iter")
    n_redo = check_positive_int(n_redo, "n_redo")
    backend = check_backend(backend)
    rng = np.random.RandomState(seed_from(random_state))
    Xn = np.ascontiguousarray(l2_normalize(X), dtype=np.float32)
    return Xn, n_iter, n_redo, backend, rng


@validate_params(
    {
        "n_clusters": [Interval(numbers.Integral, 1, None, closed="left")],
        "n_iter": [Interval(numbers.Integral, 1, None, closed="left")],
        "n_redo": [Interval(numbers.Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
        "backend": [StrOptions(set(_BACKENDS))],
        "n_threads": [Interval(numbers.Integral, 1, None, closed="left"), None],
    },
    prefer_skip_nested_validation=True,
)
def spherical_kmeans(
    X,
    n_clusters,
    *,
    n_iter=20,
    n_redo=3,
    random_state=None,
    backend="auto",
    n_threads=None,
):
    """Spherical k-means: k-means on L2-normalised rows with unit-norm centroids.

    Every run starts from a greedy k-means++ seeding (faiss' own initialisations get stuck
    in visibly worse optima on well-separated data). The Lloyd iterations run in
    ``faiss.Kmeans(spherical=True)`` without subsampling of the data when faiss is
    importable; otherwise in scikit-learn's ``KMeans`` on the normalised rows, with the
    centroids normalised afterwards (a close approximation of the spherical update). Labels
    and inertia are recomputed from the returned centres, so both backends report the same
    quantities.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Feature vectors (e.g. a memory bank). Rows are L2-normalised internally.
    n_clusters : int
        Number of clusters, ``1 <= n_clusters <= n_samples``.
    n_iter : int, default=20
        Lloyd iterations per run.
    n_redo : int, default=3
        Runs from different seedings; the lowest inertia is kept.
    random_state : int, RandomState instance or None, default=None
        Seeds the initialisation. A given int gives identical results on every call.
    backend : {"auto", "faiss", "sklearn"}, default="auto"
        ``"auto"`` uses faiss when it is importable.
    n_threads : int, default=None
        Limit the OpenMP/BLAS threads used during the call (via ``threadpoolctl``); None
        keeps the libraries' defaults.

    Returns
    -------
    centers : ndarray of shape (n_clusters, n_features), float32
        Unit-norm centroids.
    labels : ndarray of shape (n_samples,), int64
        Index of the most cosine-similar centroid of every row.
    inertia : float
        Sum over rows of the squared Euclidean distance between the normalised row and its
        centroid, ``sum(2 - 2 cos)``.

    Examples
    --------
    >>> import numpy as np
    >>> from skucdr.cluster import spherical_kmeans
    >>> X = np.r_[np.tile([1.0, 0.0], (5, 1)), np.tile([0.0, 1.0], (5, 1))]
    >>> centers, labels, inertia = spherical_kmeans(X, 2, random_state=0)
    >>> sorted(np.round(centers, 3).tolist()), round(inertia, 6)
    ([[0.0, 1.0], [1.0, 0.0]], 0.0)
    """
    Xn, n_iter, n_redo, backend, rng = _prepare_kmeans(X, n_iter, n_redo, random_state, backend)
    n_samples = len(Xn)
    n_clusters = check_positive_int(n_clusters, "n_clusters")
    if n_clusters > n_samples:
        raise ValueError(
            f"n_clusters={n_clusters} is larger than the number of samples "
            f"(n_samples={n_samples}): k-means needs at least one row per cluster."
        )
    with thread_limit(n_threads):
        inits = [_kmeans_plusplus_sphere(Xn, n_clusters, rng) for _ in range(n_redo)]
        return _best_of_runs(Xn, inits, n_iter, int(rng.randint(2**31 - 1)), backend)


def _knee_by_chord(ks, values):
    """Index of the point farthest below the chord joining the curve's end points.

    Both axes are scaled to [0, 1] first (Kneedle without smoothing): for a decreasing
    curve this is the point of maximum ``chord(x) - y``.
    """
    ks = np.asarray(ks, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    span = values.max() - values.min()
    if len(ks) < 3 or span <= 0:
        return 0
    x = (ks - ks[0]) / (ks[-1] - ks[0])
    y = (values - values.min()) / span
    chord = y[0] + (y[-1] - y[0]) * x
    gap = chord - y
    return int(np.argmax(gap))


@validate_params(
    {
        "k_min": [Interval(numbers.Integral, 1, None, closed="left")],
        "k_max": [Interval(numbers.Integral, 1, None, closed="left"), None],
        "n_iter": [Interval(numbers.Integral, 1, None, closed="left")],
        "n_redo": [Interval(numbers.Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
        "backend": [StrOptions(set(_BACKENDS))],
        "n_threads": [Interval(numbers.Integral, 1, None, closed="left"), None],
        "return_curve": ["boolean"],
    },
    prefer_skip_nested_validation=True,
)
def choose_n_prototypes_elbow(
    X,
    *,
    k_min=2,
    k_max=None,
    n_iter=20,
    n_redo=3,
    random_state=None,
    backend="auto",
    n_threads=None,
    return_curve=False,
):
    """Choose the number of prototypes with the elbow of the spherical k-means inertia.

    Runs :func:`spherical_kmeans` for every ``k`` in ``[k_min, k_max]``, plus ``k = 1`` as the
    curve's anchor, and returns the knee of the inertia curve: both axes are scaled to ``[0, 1]``
    and the knee is the ``k`` whose inertia lies farthest below the chord joining the first and last
    points of the curve (Kneedle, Satopää et al. 2011, without smoothing; equivalently the point of
    maximum distance to the chord). Every run draws one greedy k-means++ seeding of ``k_max`` seeds
    and seeds each ``k`` with its first ``k`` seeds (one draw instead of one per ``k``); the curve
    is made non-increasing (running minimum) before the knee is taken, since the optimal inertia
    never grows with ``k``.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Feature vectors; rows are L2-normalised.
    k_min : int, default=2
        Smallest ``k`` returned. The curve always starts at ``k = 1``, so that data made of
        ``k_min`` clusters shows its knee.
    k_max : int, default=None
        Largest ``k`` scanned; default ``min(50, n_samples // 10)``. Clipped to
        ``[k_min, n_samples]``.
    n_iter : int, default=20
        Lloyd iterations per run (see :func:`spherical_kmeans`).
    n_redo : int, default=3
        Runs per ``k``; the lowest inertia is kept.
    random_state : int, RandomState instance or None, default=None
        Seeds the k-means++ draws.
    backend : {"auto", "faiss", "sklearn"}, default="auto"
        See :func:`spherical_kmeans`.
    n_threads : int, default=None
        Limit the OpenMP/BLAS threads during the scan; None keeps the libraries' defaults.
    return_curve : bool, default=False
        Also return the scanned ``k`` values and their inertias.

    Returns
    -------
    n_prototypes : int
        The chosen ``k``. When the range holds a single value (tiny data) that value is
        returned, and ``n_samples`` when there are fewer than ``k_min`` rows.
    ks : ndarray of shape (n_k,)
        Only with ``return_curve=True``: the scanned ``k`` (``1``, then ``k_min..k_max``).
    inertias : ndarray of shape (n_k,)
        Only with ``return_curve=True``: the running minimum of the inertias.

    Examples
    --------
    >>> import numpy as np
    >>> from skucdr.cluster import choose_n_prototypes_elbow
    >>> rng = np.random.RandomState(0)
    >>> centers = rng.normal(size=(4, 16))
    >>> X = np.repeat(centers, 30, axis=0) + 0.05 * rng.normal(size=(120, 16))
    >>> choose_n_prototypes_elbow(X, k_max=10, random_state=0)
    4
    """
    Xn, n_iter, n_redo, backend, rng = _prepare_kmeans(X, n_iter, n_redo, random_state, backend)
    n_samples = len(Xn)
    k_min = check_positive_int(k_min, "k_min")
    if k_max is None:
        k_max = min(50, n_samples // 10)
    else:
        k_max = check_positive_int(k_max, "k_max")
        if k_max < k_min:
            raise ValueError(f"k_max={k_max} is smaller than k_min={k_min}.")
    k_lo = min(k_min, n_samples)
    k_hi = min(max(k_max, k_lo), n_samples)
    if k_hi == k_lo:
        return (k_lo, np.array([k_lo]), np.array([np.nan])) if return_curve else k_lo
    # k = 1 anchors the curve: without it, data whose true k is k_min gives a flat curve
    # whose "knee" is arbitrary. It is never returned (the chord gap is 0 at the ends).
    ks = np.r_[1, np.arange(max(k_lo, 2), k_hi + 1)]

    with thread_limit(n_threads):
        # One greedy k-means++ draw of k_hi seeds per run; its first k seeds seed k.
        seeds = [_kmeans_plusplus_sphere(Xn, k_hi, rng) for _ in range(n_redo)]
        lloyd_seed = int(rng.randint(2**31 - 1))
        inertias = np.array(
            [_best_of_runs(Xn, [s[:k] for s in seeds], n_iter, lloyd_seed, backend)[2] for k in ks]
        )
    # The optimal inertia never increases with k; a k-means run stuck in a poor optimum
    # would otherwise put a spurious kink in the curve.
    inertias = np.minimum.accumulate(inertias)
    best = max(int(ks[_knee_by_chord(ks, inertias)]), k_lo)
    return (best, ks, inertias) if return_curve else best


