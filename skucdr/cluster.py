"""Prototypes: spherical k-means, elbow choice of k, UEM's cross-domain prototype merging.

UEM (Wang et al., NeurIPS 2024, Sec. 3.2.1) clusters the memory bank of every domain
separately, translates the prototypes of one domain into the frame of the other by the
difference of the bank means (Eq. 8), matches them with the Hungarian algorithm and merges
matched pairs that are closer than any two prototypes of the same domain (Eq. 9). The
resulting unified set also holds the (translated) prototypes of clusters private to the other
domain.

This module offers the rules as plain functions on numpy arrays (the training loop calls them
once per epoch) and as a scikit-learn estimator, :class:`PrototypeClusterer`.

Frames and norms
----------------
Rows are L2-normalised before clustering, so k-means centroids are unit vectors (spherical
k-means). Translated and merged prototypes are **not** re-normalised: Eqs. 8-9 and the
Euclidean terms of UEM's losses use the raw translated centroids, and re-normalising a
translated prototype would move it off the translation. Callers that need unit prototypes
(cosine scores) normalise at the point of use, as :meth:`PrototypeClusterer.transform` does.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist, pdist
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    ClusterMixin,
    TransformerMixin,
)
from sklearn.utils import check_array, check_random_state
from sklearn.utils.validation import check_is_fitted

from ._domains import check_domain_input, unpack_domains
from ._sklearn_compat import Interval, StrOptions, _fit_context

try:  # faiss is a dependency, but keep a pure scikit-learn path (macOS OpenMP clashes).
    import faiss
except ImportError:  # pragma: no cover - exercised only without faiss
    faiss = None

__all__ = [
    "PrototypeClusterer",
    "PrototypeMerge",
    "choose_n_prototypes_elbow",
    "l2_normalize",
    "merge_prototypes",
    "product_distance",
    "spherical_kmeans",
    "translate_prototypes",
]

_BACKENDS = ("auto", "faiss", "sklearn")


# --------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------
def l2_normalize(X):
    """Scale every row of ``X`` to unit Euclidean norm (all-zero rows stay zero).

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
        Rows to normalise; float32 stays float32.

    Returns
    -------
    X_normalized : ndarray of shape (n_samples, n_features)
        A new array.
    """
    X = np.asarray(X)
    dtype = X.dtype if X.dtype in (np.float32, np.float64) else np.float64
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return (X / norms).astype(dtype, copy=False)


def _seed_from(random_state):
    """An int seed for faiss from ``None``, an int or a ``RandomState``."""
    return int(check_random_state(random_state).randint(0, 2**31 - 1))


def _thread_limit(n_threads):
    """Context limiting OpenMP/BLAS threads (faiss, numpy) to ``n_threads``; None: no limit."""
    if n_threads is None:
        return nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=int(n_threads))


def _check_backend(backend):
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS}, got {backend!r}.")
    if backend == "faiss" and faiss is None:
        raise ImportError("backend='faiss' needs the faiss-cpu package, which is not installed.")
    if backend == "auto":
        return "sklearn" if faiss is None else "faiss"
    return backend


def _check_positive_int(value, name, minimum=1):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}.")
    return int(value)


def _reject_sparse(X):
    # scipy's dok_matrix is a Mapping: catch sparse input before it is read as {domain: X}.
    if sp.issparse(X):
        raise TypeError(
            "Sparse data was passed for X, but dense data is required. Use '.toarray()' "
            "to convert to a dense numpy array."
        )


def _check_features(X, name="X"):
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
    X = _check_features(X)
    n_iter = _check_positive_int(n_iter, "n_iter")
    n_redo = _check_positive_int(n_redo, "n_redo")
    backend = _check_backend(backend)
    rng = np.random.RandomState(_seed_from(random_state))
    Xn = np.ascontiguousarray(l2_normalize(X), dtype=np.float32)
    return Xn, n_iter, n_redo, backend, rng


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
    n_clusters = _check_positive_int(n_clusters, "n_clusters")
    if n_clusters > n_samples:
        raise ValueError(
            f"n_clusters={n_clusters} is larger than the number of samples "
            f"(n_samples={n_samples}): k-means needs at least one row per cluster."
        )
    with _thread_limit(n_threads):
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
    k_min = _check_positive_int(k_min, "k_min")
    if k_max is None:
        k_max = min(50, n_samples // 10)
    else:
        k_max = _check_positive_int(k_max, "k_max")
        if k_max < k_min:
            raise ValueError(f"k_max={k_max} is smaller than k_min={k_min}.")
    k_lo = min(k_min, n_samples)
    k_hi = min(max(k_max, k_lo), n_samples)
    if k_hi == k_lo:
        return (k_lo, np.array([k_lo]), np.array([np.nan])) if return_curve else k_lo
    # k = 1 anchors the curve: without it, data whose true k is k_min gives a flat curve
    # whose "knee" is arbitrary. It is never returned (the chord gap is 0 at the ends).
    ks = np.r_[1, np.arange(max(k_lo, 2), k_hi + 1)]

    with _thread_limit(n_threads):
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


# --------------------------------------------------------------------------------------
# product distance and merging (Eqs. 8, 9, 15-17)
# --------------------------------------------------------------------------------------
def product_distance(U, V):
    """UEM's product distance ``D(u, v) = (1 - cos(u, v)) * ||u - v||_2`` for all pairs.

    Used by SN2M (Eqs. 15-17) and by open-set detection (appendix B.1). An all-zero row has
    cosine 0 to everything.

    Parameters
    ----------
    U : array-like of shape (n_u, n_features)
        First set of vectors (e.g. queries).
    V : array-like of shape (n_v, n_features)
        Second set of vectors (e.g. gallery items or prototypes).

    Returns
    -------
    D : ndarray of shape (n_u, n_v), float64
        Non-negative; zero on identical rows.

    Examples
    --------
    >>> import numpy as np
    >>> from skucdr.cluster import product_distance
    >>> product_distance([[1.0, 0.0]], [[0.0, 1.0], [2.0, 0.0]])
    array([[1.41421356, 0.        ]])
    """
    U = check_array(U, dtype=np.float64, input_name="U")
    V = check_array(V, dtype=np.float64, input_name="V")
    if U.shape[1] != V.shape[1]:
        raise ValueError(f"U has {U.shape[1]} features but V has {V.shape[1]}: they must match.")
    dots = U @ V.T
    sq_u = np.einsum("ij,ij->i", U, U)
    sq_v = np.einsum("ij,ij->i", V, V)
    euclid = np.sqrt(np.clip(sq_u[:, None] + sq_v[None, :] - 2.0 * dots, 0.0, None))
    norm_u = np.sqrt(sq_u)
    norm_v = np.sqrt(sq_v)
    norm_u[norm_u == 0] = 1.0
    norm_v[norm_v == 0] = 1.0
    cos = np.clip(dots / norm_u[:, None] / norm_v[None, :], -1.0, 1.0)
    return (1.0 - cos) * euclid


def _min_pairwise_distance(P):
    """Smallest Euclidean distance between two distinct rows; ``inf`` for a single row."""
    return float(pdist(P).min()) if len(P) > 1 else np.inf


@dataclass(frozen=True)
class PrototypeMerge:
    """Result of :func:`merge_prototypes`: UEM's unified prototype set of two domains.

    The unified set is ordered so that shared id ``i < k_a`` is A's prototype ``i`` (replaced
    by the mid-point of the pair when merged), followed by B's unmerged prototypes translated
    into A's frame, in B's order.

    Attributes
    ----------
    prototypes : ndarray of shape (n_shared, n_features)
        The unified set in A's frame:
        ``(P_a \\ merged) U (P_b->a \\ merged) U {(p_a + p_b->a) / 2}``.
    translation : ndarray of shape (n_features,)
        ``mean_a - mean_b``, the vector added to B's prototypes (Eq. 8).
    translated_b : ndarray of shape (k_b, n_features)
        ``P_b + translation``.
    matching : ndarray of shape (min(k_a, k_b), 2), int
        Hungarian matching on the Euclidean cost, rows ``(a_idx, b_idx)`` sorted by ``a_idx``.
    matched_distances : ndarray of shape (min(k_a, k_b),)
        Euclidean distance of every matched pair.
    threshold : float
        ``min(min_{i!=j} d(P_a), min_{i!=j} d(P_b))`` (Eq. 9); ``inf`` when both sets hold a
        single prototype.
    merge_mask : ndarray of shape (min(k_a, k_b),), bool
        Which matched pairs merge: ``matched_distances < threshold``.
    pairs : ndarray of shape (n_merged, 2), int
        The merged pairs ``(a_idx, b_idx)`` (local indices).
    a_to_shared : ndarray of shape (k_a,), int
        Shared id of every A prototype (the identity, by construction of the order).
    b_to_shared : ndarray of shape (k_b,), int
        Shared id of every B prototype.
    """

    prototypes: np.ndarray
    translation: np.ndarray
    translated_b: np.ndarray
    matching: np.ndarray
    matched_distances: np.ndarray
    threshold: float
    merge_mask: np.ndarray
    pairs: np.ndarray
    a_to_shared: np.ndarray
    b_to_shared: np.ndarray

    @property
    def n_shared(self):
        """Number of prototypes in the unified set."""
        return len(self.prototypes)

    def prototypes_in_b_frame(self):
        """The unified set in B's frame, ``prototypes - translation``.

        Frames differ only by the translation of Eq. 8, so B's version of the unified set
        (UEM's ``P^{B'}``) is A's version moved by ``mean_b - mean_a``.

        Returns
        -------
        prototypes_b : ndarray of shape (n_shared, n_features)
        """
        return translate_prototypes(self.prototypes, self.translation, -1.0)


def translate_prototypes(prototypes, translation, sign=1.0):
    """Move prototypes into another domain's frame: ``prototypes + sign * translation``.

    Parameters
    ----------
    prototypes : ndarray of shape (k, n_features)
        Prototypes in the source frame.
    translation : ndarray of shape (n_features,)
        ``mean_target - mean_source`` (Eq. 8).
    sign : float, default=1.0
        ``-1`` moves back the other way.

    Returns
    -------
    translated : ndarray of shape (k, n_features)
        Prototypes in the target frame.
    """
    prototypes = np.asarray(prototypes)
    return prototypes + sign * np.asarray(translation, dtype=prototypes.dtype)


MERGE_RULES = ("eq9", "mutual")


def merge_prototypes(P_a, P_b, mean_a, mean_b, *, rule="eq9"):
    """Translate B's prototypes into A's frame, match and merge them (UEM Eqs. 8-9).

    1. Translation (Eq. 8): ``P_b->a = P_b + (mean_a - mean_b)``.
    2. Hungarian matching (``scipy.optimize.linear_sum_assignment``) of ``P_a`` to
       ``P_b->a`` on the Euclidean cost; ``min(k_a, k_b)`` pairs.
    3. Merge rule (Eq. 9): a matched pair merges when its distance is strictly below
       ``min(min_{i!=j} d(p_i^a, p_j^a), min_{i!=j} d(p_i^b, p_j^b))``. A set with one
       prototype contributes ``inf`` to the minimum (so two single prototypes always merge).
       With ``rule="mutual"`` the pair must also be mutual nearest neighbours: ``p_b->a``
       is the nearest translated B prototype of ``p_a`` and ``p_a`` the nearest A prototype
       of ``p_b->a``.
    4. Unified set in A's frame: A's prototypes (merged ones replaced by the mid-point
       ``(p_a + p_b->a) / 2``) followed by B's unmerged translated prototypes.

    Merged prototypes are not re-normalised (see the module notes).

    Parameters
    ----------
    P_a : array-like of shape (k_a, n_features)
        Prototypes of domain A (the reference frame).
    P_b : array-like of shape (k_b, n_features)
        Prototypes of domain B, in B's frame.
    mean_a, mean_b : array-like of shape (n_features,)
        Means of the two memory banks (of the rows that were clustered).
    rule : {"eq9", "mutual"}, default="eq9"
        ``"eq9"``: the paper's rule. ``"mutual"``: Eq. 9 and mutual nearest neighbours.
        The Hungarian matching pairs every prototype of the smaller set; when one domain
        has more clusters than categories (a category split in two, or the other domain
        holding categories this one lacks), the spare halves are matched to whatever
        prototype is left, and Eq. 9's threshold, the closest pair *within* a set, does not
        stop such a pair when the other set's categories are far apart. The mutual rule
        keeps the pair only when neither prototype has a closer counterpart.

    Returns
    -------
    PrototypeMerge
        Translation, matching, merge mask, merged ``pairs`` and the unified set with the
        maps ``a_to_shared`` / ``b_to_shared``; ``prototypes_in_b_frame()`` gives B's version.

    Examples
    --------
    >>> import numpy as np
    >>> from skucdr.cluster import merge_prototypes
    >>> P_a = np.array([[0.0, 0.0], [4.0, 0.0]])
    >>> P_b = np.array([[1.0, 1.0], [1.0, 9.0]])  # B is A shifted by (1, 1), plus a private
    >>> m = merge_prototypes(P_a, P_b, mean_a=[0.0, 0.0], mean_b=[1.0, 1.0])
    >>> m.pairs.tolist(), m.prototypes.tolist(), m.b_to_shared.tolist()
    ([[0, 0]], [[0.0, 0.0], [4.0, 0.0], [0.0, 8.0]], [0, 2])
    """
    if rule not in MERGE_RULES:
        raise ValueError(f"rule must be one of {MERGE_RULES}, got {rule!r}.")
    P_a = check_array(P_a, dtype=[np.float64, np.float32], input_name="P_a")
    P_b = check_array(P_b, dtype=[np.float64, np.float32], input_name="P_b")
    dtype = np.result_type(P_a.dtype, P_b.dtype)
    d = P_a.shape[1]
    if P_b.shape[1] != d:
        raise ValueError(f"P_a has {d} features but P_b has {P_b.shape[1]}: they must match.")
    means = []
    for name, mean in (("mean_a", mean_a), ("mean_b", mean_b)):
        mean = np.asarray(mean, dtype=np.float64)
        if mean.shape != (d,):
            raise ValueError(f"{name} has shape {mean.shape}; expected ({d},).")
        if not np.all(np.isfinite(mean)):
            raise ValueError(f"{name} contains NaN or infinity.")
        means.append(mean)
    translation = (means[0] - means[1]).astype(dtype)
    translated_b = (P_b + translation).astype(dtype)

    cost = cdist(P_a, translated_b)
    rows, cols = linear_sum_assignment(cost)
    matching = np.stack([rows, cols], axis=1).astype(np.int64)
    matched = cost[rows, cols]
    threshold = min(_min_pairwise_distance(P_a), _min_pairwise_distance(P_b))
    merge_mask = matched < threshold
    if rule == "mutual":
        merge_mask &= (cost[:, cols].argmin(axis=0) == rows) & (cost[rows].argmin(axis=1) == cols)
    pairs = matching[merge_mask]

    k_a, k_b = len(P_a), len(P_b)
    unified_a = P_a.astype(dtype, copy=True)
    unified_a[pairs[:, 0]] = (P_a[pairs[:, 0]] + translated_b[pairs[:, 1]]) / 2.0
    b_unmerged = np.ones(k_b, dtype=bool)
    b_unmerged[pairs[:, 1]] = False
    a_to_shared = np.arange(k_a, dtype=np.int64)
    b_to_shared = np.empty(k_b, dtype=np.int64)
    b_to_shared[pairs[:, 1]] = pairs[:, 0]
    b_to_shared[b_unmerged] = k_a + np.arange(b_unmerged.sum())
    prototypes = np.concatenate([unified_a, translated_b[b_unmerged]], axis=0)
    return PrototypeMerge(
        prototypes=prototypes,
        translation=translation,
        translated_b=translated_b,
        matching=matching,
        matched_distances=matched,
        threshold=float(threshold),
        merge_mask=merge_mask,
        pairs=pairs,
        a_to_shared=a_to_shared,
        b_to_shared=b_to_shared,
    )


# --------------------------------------------------------------------------------------
# the estimator
# --------------------------------------------------------------------------------------
class PrototypeClusterer(
    ClassNamePrefixFeaturesOutMixin, TransformerMixin, ClusterMixin, BaseEstimator
):
    """Per-domain spherical k-means with UEM's translate-match-merge of prototypes.

    Every domain is clustered separately (spherical k-means on L2-normalised rows, ``k``
    chosen by the elbow of the inertia curve or given). The prototypes of the other domains
    are then translated into the first domain's frame by the difference of the domain means
    (UEM Eq. 8), matched to the running shared set with the Hungarian algorithm and merged
    when closer than any two prototypes of one set (Eq. 9); unmatched and unmerged
    prototypes are kept, so clusters private to one domain survive. With more than two
    domains, domains are merged one after the other, in order of first appearance, into
    the running shared set.

    Parameters
    ----------
    n_prototypes : "elbow", int or dict, default="elbow"
        Prototypes per domain: chosen per domain with
        :func:`choose_n_prototypes_elbow` (``k`` in ``[2, min(max_prototypes, n_d // 10)]``),
        the same given number for every domain, or a dict ``{domain: k or "elbow"}``. A fixed ``k``
        above a domain's number of categories splits some of them; the close halves then shrink
        Eq. 9's threshold and few prototypes merge.
    merge : bool, default=True
        Merge matched prototypes across domains. With False the (translated) prototypes of
        all domains are concatenated, domain after domain.
    merge_rule : {"eq9", "mutual"}, default="eq9"
        When a matched pair merges (see :func:`merge_prototypes`): Eq. 9's threshold alone,
        or Eq. 9 and mutual nearest neighbours.
    max_prototypes : int, default=50
        Largest ``k`` the elbow scans.
    n_iter : int, default=20
        k-means iterations per run.
    n_redo : int, default=3
        k-means runs per ``k``; the best is kept.
    random_state : int, RandomState instance or None, default=None
        Seeds k-means.
    n_jobs : int, default=None
        Threads for faiss/BLAS during ``fit``, set with ``threadpoolctl``; None keeps the
        libraries' defaults (all cores).

    Attributes
    ----------
    cluster_centers_ : ndarray of shape (n_shared, n_features)
        Shared prototypes in the first domain's frame (not re-normalised).
    domain_centers_ : dict
        ``{domain: cluster_centers_ + (domain_means_[domain] - domain_means_[first])}``, the
        shared prototypes in each domain's frame.
    domain_means_ : dict
        Mean of every domain's L2-normalised rows.
    n_prototypes_ : dict
        ``{domain: k}``, the number of k-means prototypes of every domain.
    local_to_shared_ : dict
        ``{domain: ndarray of shape (k_d,)}``, the shared id of every local k-means cluster.
    merged_pairs_ : ndarray of shape (n_merged, 2) or dict
        With one or two domains: the merged ``(first_domain_idx, second_domain_idx)`` local
        prototype indices (empty with one domain or ``merge=False``). With more domains: a
        dict ``{domain: ndarray (n_merged_d, 2)}`` for every domain after the first, rows
        ``(shared id in the running set, local index in domain)``; the shared id of a first
        domain prototype is its local index.
    labels_ : ndarray of shape (n_samples,)
        Shared prototype id of every training row (same rule as :meth:`predict`).
    domains_ : list
        Domains seen in ``fit``, in order of first appearance (the first is the frame).
    n_features_in_ : int
        Number of features seen in ``fit``.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen in ``fit``, when ``X`` has string column names.

    See Also
    --------
    merge_prototypes : The two-domain merge rule.
    spherical_kmeans : The per-domain clustering.
    detect_private_queries : Open-set detection built on the same rules.

    Notes
    -----
    ``sample_domain`` is requested by ``fit``, ``transform`` and ``predict`` at class level,
    so with ``sklearn.set_config(enable_metadata_routing=True)`` it reaches the clusterer
    inside a Pipeline or GridSearchCV without ``set_*_request`` calls.

    Examples
    --------
    >>> import numpy as np
    >>> from skucdr import PrototypeClusterer
    >>> rng = np.random.RandomState(0)
    >>> centers = rng.normal(size=(3, 8))
    >>> Xa = np.repeat(centers, 20, axis=0) + 0.05 * rng.normal(size=(60, 8))
    >>> Xb = np.repeat(centers[:2], 20, axis=0) + 0.05 * rng.normal(size=(40, 8))
    >>> est = PrototypeClusterer(n_prototypes=3, random_state=0)
    >>> est.fit({"a": Xa, "b": Xb}).cluster_centers_.shape[1]
    8
    """

    __metadata_request__fit = {"sample_domain": True}
    __metadata_request__transform = {"sample_domain": True}
    __metadata_request__predict = {"sample_domain": True}

    _parameter_constraints: dict = {
        "n_prototypes": [
            Interval(numbers.Integral, 1, None, closed="left"),
            StrOptions({"elbow"}),
            dict,
        ],
        "merge": ["boolean"],
        "merge_rule": [StrOptions(set(MERGE_RULES))],
        "max_prototypes": [Interval(numbers.Integral, 2, None, closed="left")],
        "n_iter": [Interval(numbers.Integral, 1, None, closed="left")],
        "n_redo": [Interval(numbers.Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
        "n_jobs": [Interval(numbers.Integral, 1, None, closed="left"), None],
    }

    def __init__(
        self,
        n_prototypes="elbow",
        *,
        merge=True,
        merge_rule="eq9",
        max_prototypes=50,
        n_iter=20,
        n_redo=3,
        random_state=None,
        n_jobs=None,
    ):
        self.n_prototypes = n_prototypes
        self.merge = merge
        self.merge_rule = merge_rule
        self.max_prototypes = max_prototypes
        self.n_iter = n_iter
        self.n_redo = n_redo
        self.random_state = random_state
        self.n_jobs = n_jobs

    # ---- fit -------------------------------------------------------------------------
    def _cluster_domain(self, X_d, domain, seed):
        n_d = len(X_d)
        kw = {"n_iter": self.n_iter, "n_redo": self.n_redo, "random_state": seed}
        n_prototypes = self.n_prototypes
        if isinstance(n_prototypes, dict):
            if domain not in n_prototypes:
                raise ValueError(
                    f"n_prototypes is a dict without an entry for domain {domain!r}; it has "
                    f"{sorted(map(str, n_prototypes))}."
                )
            n_prototypes = n_prototypes[domain]
        if isinstance(n_prototypes, str) and n_prototypes == "elbow":
            k = choose_n_prototypes_elbow(
                X_d, k_min=2, k_max=max(2, min(self.max_prototypes, n_d // 10)), **kw
            )
        else:
            k = int(n_prototypes)
            if k > n_d:
                raise ValueError(
                    f"n_prototypes={k} is larger than the number of samples of domain "
                    f"{domain!r} (n_samples={n_d}): lower n_prototypes or use 'elbow'."
                )
        centers, _, _ = spherical_kmeans(X_d, k, **kw)
        return centers

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None, *, sample_domain=None):
        """Cluster every domain and merge the prototypes across domains.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or Mapping
            Feature vectors, or a mapping ``{domain: X_domain}``.
        y : None
            Ignored.
        sample_domain : array-like of shape (n_samples,), default=None
            Domain of every row; None means a single domain.

        Returns
        -------
        self : PrototypeClusterer
        """
        _reject_sparse(X)
        data = check_domain_input(self, X, sample_domain, reset=True)
        rng = check_random_state(self.random_state)
        Xn = l2_normalize(data.X)
        domains = data.domain_order
        first = domains[0]

        centers, means = {}, {}
        with _thread_limit(self.n_jobs):
            for domain in domains:
                X_d = Xn[data.sample_domain == domain]
                means[domain] = X_d.mean(axis=0, dtype=np.float64)
                centers[domain] = self._cluster_domain(X_d, domain, _seed_from(rng))

        shared = centers[first].astype(np.float64)
        local_to_shared = {first: np.arange(len(shared), dtype=np.int64)}
        pairs = {}
        for domain in domains[1:]:
            if self.merge:
                result = merge_prototypes(
                    shared, centers[domain], means[first], means[domain], rule=self.merge_rule
                )
                shared = result.prototypes
                local_to_shared[domain] = result.b_to_shared
                pairs[domain] = result.pairs
            else:
                moved = centers[domain] + (means[first] - means[domain])
                local_to_shared[domain] = len(shared) + np.arange(len(moved), dtype=np.int64)
                shared = np.concatenate([shared, moved], axis=0)
                pairs[domain] = np.empty((0, 2), dtype=np.int64)

        self.domains_ = list(domains)
        self.domain_means_ = means
        self.n_prototypes_ = {domain: len(c) for domain, c in centers.items()}
        self.local_to_shared_ = local_to_shared
        if len(domains) <= 2:
            self.merged_pairs_ = (
                pairs[domains[1]] if len(domains) == 2 else np.empty((0, 2), dtype=np.int64)
            )
        else:
            self.merged_pairs_ = pairs
        self.cluster_centers_ = shared.astype(np.float32)
        self.domain_centers_ = {
            domain: (shared + (means[domain] - means[first])).astype(np.float32)
            for domain in domains
        }
        self._n_features_out = len(shared)
        self.labels_ = np.argmax(self._similarities(Xn, data.sample_domain), axis=1)
        return self

    # ---- post-fit --------------------------------------------------------------------
    def _similarities(self, Xn, sample_domain):
        """Cosine similarity of normalised rows to the shared prototypes in their frames."""
        out = np.empty((len(Xn), self._n_features_out), dtype=np.float32)
        unseen = ~np.isin(sample_domain, self.domains_)
        for i, domain in enumerate(self.domains_):
            rows = sample_domain == domain
            if i == 0:
                rows |= unseen
            if rows.any():
                protos = l2_normalize(self.domain_centers_[domain].astype(np.float64))
                out[rows] = Xn[rows].astype(np.float64) @ protos.T
        return out

    def _post_fit_input(self, X, sample_domain):
        check_is_fitted(self)
        _reject_sparse(X)
        given = sample_domain is not None or isinstance(X, Mapping)
        data = check_domain_input(self, X, sample_domain, reset=False)
        if given:
            unseen = [d for d in data.domain_order if d not in self.domains_]
            if unseen:
                warnings.warn(
                    f"Domain(s) {unseen} were not seen in fit; their rows are compared with "
                    f"the prototypes in the frame of the first domain {self.domains_[0]!r}.",
                    UserWarning,
                    stacklevel=3,
                )
        return data

    def transform(self, X, *, sample_domain=None):
        """Cosine similarity of every row to every shared prototype, in the row's frame.

        Rows of domain ``d`` are compared with ``domain_centers_[d]``; rows of a domain not
        seen in ``fit`` (and all rows when ``sample_domain`` is None and the fitted domains
        are named) use the first domain's frame, ``cluster_centers_``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or Mapping
            Feature vectors, or a mapping ``{domain: X_domain}``.
        sample_domain : array-like of shape (n_samples,), default=None
            Domain of every row.

        Returns
        -------
        similarities : ndarray of shape (n_samples, n_shared), float32, or dict
            A mapping of such arrays when ``X`` is a mapping.
        """
        data = self._post_fit_input(X, sample_domain)
        sims = self._similarities(l2_normalize(data.X), data.sample_domain)
        if data.from_mapping:
            return unpack_domains(sims, data.sample_domain)
        return sims

    def predict(self, X, *, sample_domain=None):
        """Shared prototype id of every row: the most cosine-similar prototype in its frame.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or Mapping
            Feature vectors, or a mapping ``{domain: X_domain}``.
        sample_domain : array-like of shape (n_samples,), default=None
            Domain of every row (see :meth:`transform` for unseen domains).

        Returns
        -------
        labels : ndarray of shape (n_samples,), int64, or dict
            A mapping of such arrays when ``X`` is a mapping.
        """
        data = self._post_fit_input(X, sample_domain)
        labels = np.argmax(self._similarities(l2_normalize(data.X), data.sample_domain), axis=1)
        if data.from_mapping:
            return unpack_domains(labels, data.sample_domain)
        return labels

    def fit_transform(self, X, y=None, *, sample_domain=None):
        """Fit, then return the similarities of the training rows to the shared prototypes.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or Mapping
            Feature vectors, or a mapping ``{domain: X_domain}``.
        y : None
            Ignored.
        sample_domain : array-like of shape (n_samples,), default=None
            Domain of every row.

        Returns
        -------
        similarities : ndarray of shape (n_samples, n_shared) or dict
            Cosine similarities to the shared prototypes (see :meth:`transform`).
        """
        return self.fit(X, sample_domain=sample_domain).transform(X, sample_domain=sample_domain)

    def fit_predict(self, X, y=None, *, sample_domain=None):
        """Fit, then return ``labels_``, the shared prototype id of every training row.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or Mapping
            Feature vectors, or a mapping ``{domain: X_domain}``.
        y : None
            Ignored.
        sample_domain : array-like of shape (n_samples,), default=None
            Domain of every row.

        Returns
        -------
        labels : ndarray of shape (n_samples,) or dict
            Shared prototype ids; a mapping of such arrays when ``X`` is a mapping.
        """
        self.fit(X, sample_domain=sample_domain)
        if isinstance(X, Mapping):
            return self.predict(X)
        return self.labels_

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.dict = True
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags
