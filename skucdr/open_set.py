"""Open-set detection of private queries (UEM, appendix B.1).

In the open-set setting some query categories have no counterpart in the gallery; such
"private" queries should be answered with "null" rather than with neighbours. UEM detects
them from the unified prototype structure: both sides are clustered, the gallery prototypes
are translated into the query frame and merged with the query prototypes
(:func:`skucdr.cluster.merge_prototypes`), and a query is private when its cluster found no
partner in the gallery, or when it lies farther from the whole gallery than the largest
cross-domain distance seen inside its merged cluster.

:func:`detect_private_queries` does it in one call; :func:`fit_open_set_structure` and
:func:`judge_queries` split it into the part built from the fitted query domain and the
gallery (clusters, merge, per-pair distances: seconds) and the part that judges a query
batch (milliseconds). The retrievers' ``detect_private`` keep the first per query domain
until the gallery changes.
"""

from __future__ import annotations

import numbers

import numpy as np
from sklearn.utils import Bunch, check_array, check_random_state

from ._sklearn_compat import Interval, StrOptions, validate_params
from .cluster import (
    MERGE_RULES,
    choose_n_prototypes_elbow,
    l2_normalize,
    merge_prototypes,
    product_distance,
    spherical_kmeans,
)

__all__ = ["detect_private_queries", "fit_open_set_structure", "judge_queries"]

# the clustering options detect_private_queries and fit_open_set_structure share
_CLUSTERING_PARAMETERS = {
    "max_prototypes": [Interval(numbers.Integral, 2, None, closed="left")],
    "merge_rule": [StrOptions(set(MERGE_RULES))],
    "n_iter": [Interval(numbers.Integral, 1, None, closed="left")],
    "n_redo": [Interval(numbers.Integral, 1, None, closed="left")],
    "random_state": ["random_state"],
}

# Elements of one (rows x gallery) block of product distances; a few float64 temporaries
# of this size live at once (~16 MiB each).
_BLOCK_ELEMENTS = 2**21


def _n_prototypes(X, n_prototypes, max_prototypes, seed, n_iter, n_redo, side):
    n = len(X)
    if isinstance(n_prototypes, str):
        if n_prototypes != "elbow":
            raise ValueError(f"n_prototypes must be 'elbow' or an int, got {n_prototypes!r}.")
        k_max = max(2, min(max_prototypes, n // 10))
        return choose_n_prototypes_elbow(
            X, k_min=2, k_max=k_max, n_iter=n_iter, n_redo=n_redo, random_state=seed
        )
    if (
        isinstance(n_prototypes, bool)
        or not isinstance(n_prototypes, numbers.Integral)
        or n_prototypes < 1
    ):
        raise ValueError(f"n_prototypes must be 'elbow' or an int >= 1, got {n_prototypes!r}.")
    if n_prototypes > n:
        raise ValueError(
            f"n_prototypes={n_prototypes} is larger than the number of {side} rows (n_samples={n})."
        )
    return int(n_prototypes)


def _row_blocks(n_rows, n_cols):
    step = max(1, _BLOCK_ELEMENTS // max(n_cols, 1))
    return (slice(start, min(start + step, n_rows)) for start in range(0, n_rows, step))


def _nearest_prototype(X, prototypes):
    """Index of the Euclidean-nearest prototype of every row."""
    sq = np.einsum("ij,ij->i", prototypes, prototypes)[None, :] - 2.0 * (
        X @ prototypes.T
    )  # ||x||^2 is constant per row
    return np.argmin(sq, axis=1)


def _scan_gallery(Q, G, g_order, g_starts, q_partner, compute_max):
    """One blocked pass over ``D(Q, G)``.

    Returns the minimum product distance of every query row to the gallery and, when
    ``compute_max``, the maximum over the gallery members of each query row's partner
    cluster (``-inf`` when the row's cluster has no partner or the partner no member).
    """
    n_q = len(Q)
    d_min = np.empty(n_q)
    row_max = np.full(n_q, -np.inf)
    nonempty = g_starts[:-1] < g_starts[1:]
    for rows in _row_blocks(n_q, len(G)):
        D = product_distance(Q[rows], G)
        d_min[rows] = D.min(axis=1)
        if not compute_max:
            continue
        partner = q_partner[rows]
        has = partner >= 0
        if not has.any():
            continue
        # Segment maxima over gallery clusters (gallery sorted by cluster id).
        group_max = np.full((D.shape[0], len(g_starts) - 1), -np.inf)
        group_max[:, nonempty] = np.maximum.reduceat(D[:, g_order], g_starts[:-1][nonempty], axis=1)
        idx = np.flatnonzero(has)
        row_max[rows.start + idx] = group_max[idx, partner[idx]]
    return d_min, row_max


@validate_params(_CLUSTERING_PARAMETERS, prefer_skip_nested_validation=True)
def detect_private_queries(
    query_emb,
    gallery_emb,
    *,
    n_prototypes="elbow",
    max_prototypes=50,
    query_reference=None,
    merge_rule="eq9",
    n_iter=20,
    n_redo=3,
    random_state=None,
    return_details=False,
):
    """Flag queries whose category is judged absent from the gallery (UEM appendix B.1).

    1. Spherical k-means on the query side (``query_reference``, by default the queries
       themselves) and on the gallery, ``k`` per side by the elbow or given.
    2. Translate the gallery prototypes into the query frame (Eq. 8), match them with the
       Hungarian algorithm and merge by Eq. 9 (:func:`skucdr.cluster.merge_prototypes`).
    3. For every merged pair ``c``, ``D_c = max D(x_q, x_g)`` over the query-side members
       times the gallery-side members, where a member of a side is a row of that side whose
       Euclidean-nearest prototype (of its own side, in its own frame) is the pair's
       prototype and ``D`` is :func:`skucdr.cluster.product_distance` on the embeddings.
    4. A query is private when its Euclidean-nearest query prototype is unmerged, or when it
       is merged and ``D_c < min_j D(query, gallery_j)``.

    Rows are L2-normalised first (a no-op for the retrievers' embeddings).

    Parameters
    ----------
    query_emb : array-like of shape (n_queries, n_features)
        Query embeddings to judge.
    gallery_emb : array-like of shape (n_gallery, n_features)
        Gallery embeddings.
    n_prototypes : "elbow" or int, default="elbow"
        Prototypes per side: chosen by :func:`skucdr.cluster.choose_n_prototypes_elbow`
        (``k`` in ``[2, min(max_prototypes, n // 10)]``) or the same given number.
    max_prototypes : int, default=50
        Largest ``k`` the elbow scans.
    query_reference : array-like of shape (n_reference, n_features), default=None
        Query-domain rows the query-side clusters and ``D_c`` are built from (e.g. the
        fitted query domain when judging new queries). None uses ``query_emb``.
    merge_rule : {"eq9", "mutual"}, default="eq9"
        When a matched pair of prototypes merges (:func:`skucdr.cluster.merge_prototypes`).
    n_iter : int, default=20
        k-means iterations per run.
    n_redo : int, default=3
        k-means runs per ``k``; the lowest inertia is kept.
    random_state : int, RandomState instance or None, default=None
        Seeds k-means.
    return_details : bool, default=False
        Also return a :class:`~sklearn.utils.Bunch` with the intermediate quantities.

    Returns
    -------
    private : ndarray of shape (n_queries,), bool
        True where the query is judged private.
    details : Bunch
        Only with ``return_details=True``: ``merge`` (the
        :class:`~skucdr.cluster.PrototypeMerge`), ``query_prototypes``,
        ``gallery_prototypes``, ``nearest_prototype`` (per query), ``cluster_max_distance``
        (``D_c`` per query prototype, ``-inf`` when unmerged or without members on a side),
        ``gallery_min_distance`` (``min_j D(query, gallery_j)`` per query).

    Notes
    -----
    When the judged queries are the rows the clusters were built from (the default), a
    query of a merged cluster is itself one of the members over which ``D_c`` is a
    maximum, so ``min_j D(query, gallery_j) <= D_c`` and rule (b) can only fire for
    clusters without gallery members; rule (a), the unmerged prototypes, does the work.
    Rule (b) matters for queries judged against a ``query_reference``: new queries far from
    every gallery item are flagged even when their nearest prototype is merged.

    Examples
    --------
    >>> import numpy as np
    >>> from skucdr.open_set import detect_private_queries
    >>> rng = np.random.RandomState(0)
    >>> centers = rng.normal(size=(4, 16))
    >>> queries = np.repeat(centers, 25, axis=0) + 0.05 * rng.normal(size=(100, 16))
    >>> gallery = np.repeat(centers[:2], 25, axis=0) + 0.05 * rng.normal(size=(50, 16))
    >>> private = detect_private_queries(queries, gallery, random_state=0)
    >>> private.reshape(4, 25).mean(axis=1).tolist()  # the last two categories are private
    [0.0, 0.0, 1.0, 1.0]
    """
    Q = check_array(query_emb, dtype=np.float64, input_name="query_emb")
    G = check_array(gallery_emb, dtype=np.float64, input_name="gallery_emb")
    R = (
        Q
        if query_reference is None
        else check_array(query_reference, dtype=np.float64, input_name="query_reference")
    )
    for name, arr in (("gallery_emb", G), ("query_reference", R)):
        if arr.shape[1] != Q.shape[1]:
            raise ValueError(f"{name} has {arr.shape[1]} features but query_emb has {Q.shape[1]}.")
    structure = _fit_structure(
        R,
        G,
        n_prototypes=n_prototypes,
        max_prototypes=max_prototypes,
        merge_rule=merge_rule,
        n_iter=n_iter,
        n_redo=n_redo,
        random_state=random_state,
    )
    if query_reference is None:  # the queries are the reference rows: reuse their pass
        nearest, d_min = structure.reference_nearest, structure.reference_min_distance
        private = _private_rule(structure, nearest, d_min)
    else:
        private, nearest, d_min = judge_queries(structure, Q)
    if not return_details:
        return private
    return private, Bunch(
        merge=structure.merge,
        query_prototypes=structure.query_prototypes,
        gallery_prototypes=structure.gallery_prototypes,
        nearest_prototype=nearest,
        cluster_max_distance=structure.cluster_max_distance,
        gallery_min_distance=d_min,
    )


@validate_params(_CLUSTERING_PARAMETERS, prefer_skip_nested_validation=True)
def fit_open_set_structure(
    query_reference,
    gallery_emb,
    *,
    n_prototypes="elbow",
    max_prototypes=50,
    merge_rule="eq9",
    n_iter=20,
    n_redo=3,
    random_state=None,
):
    """Steps 1-3 of :func:`detect_private_queries`: everything that does not depend on
    the judged queries (clusters, merge, ``D_c``), reusable for many query batches.

    Parameters are those of :func:`detect_private_queries` (``query_reference`` the
    query-domain rows the query side is built from).

    Returns
    -------
    structure : Bunch
        ``merge``, ``query_prototypes``, ``gallery_prototypes``, ``cluster_max_distance``
        and what :func:`judge_queries` needs.
    """
    R = check_array(query_reference, dtype=np.float64, input_name="query_reference")
    G = check_array(gallery_emb, dtype=np.float64, input_name="gallery_emb")
    if G.shape[1] != R.shape[1]:
        raise ValueError(
            f"gallery_emb has {G.shape[1]} features but query_reference has {R.shape[1]}."
        )
    return _fit_structure(
        R,
        G,
        n_prototypes=n_prototypes,
        max_prototypes=max_prototypes,
        merge_rule=merge_rule,
        n_iter=n_iter,
        n_redo=n_redo,
        random_state=random_state,
    )


def _fit_structure(
    R, G, *, n_prototypes, max_prototypes, merge_rule, n_iter, n_redo, random_state
):
    """:func:`fit_open_set_structure` on arrays already validated (float64, same width)."""
    if (
        isinstance(max_prototypes, bool)
        or not isinstance(max_prototypes, numbers.Integral)
        or max_prototypes < 2
    ):
        raise ValueError(f"max_prototypes must be an int >= 2, got {max_prototypes!r}.")
    R, G = l2_normalize(R), l2_normalize(G)

    rng = check_random_state(random_state)
    seed_q, seed_g = (int(s) for s in rng.randint(0, 2**31 - 1, size=2))
    kw = {"n_iter": n_iter, "n_redo": n_redo}
    k_q = _n_prototypes(R, n_prototypes, max_prototypes, seed_q, side="query", **kw)
    k_g = _n_prototypes(G, n_prototypes, max_prototypes, seed_g, side="gallery", **kw)
    P_q = spherical_kmeans(R, k_q, random_state=seed_q, **kw)[0].astype(np.float64)
    P_g = spherical_kmeans(G, k_g, random_state=seed_g, **kw)[0].astype(np.float64)
    merge = merge_prototypes(P_q, P_g, R.mean(axis=0), G.mean(axis=0), rule=merge_rule)

    q_partner = np.full(k_q, -1, dtype=np.int64)  # gallery cluster merged with each query one
    q_partner[merge.pairs[:, 0]] = merge.pairs[:, 1]
    ref_labels = _nearest_prototype(R, P_q)
    g_labels = _nearest_prototype(G, P_g)
    g_order = np.argsort(g_labels, kind="stable")
    g_starts = np.searchsorted(g_labels[g_order], np.arange(k_g + 1))

    d_min_ref, row_max = _scan_gallery(
        R, G, g_order, g_starts, q_partner[ref_labels], compute_max=True
    )
    cluster_max = np.full(k_q, -np.inf)
    np.maximum.at(cluster_max, ref_labels, row_max)
    return Bunch(
        merge=merge,
        query_prototypes=P_q,
        gallery_prototypes=P_g,
        cluster_max_distance=cluster_max,
        query_partner=q_partner,
        gallery=G,
        gallery_order=g_order,
        gallery_starts=g_starts,
        reference_nearest=ref_labels,
        reference_min_distance=d_min_ref,
    )


def judge_queries(structure, query_emb):
    """Step 4 of :func:`detect_private_queries` for new queries against a fitted structure.

    Returns
    -------
    private : ndarray of shape (n_queries,), bool
    nearest : ndarray of shape (n_queries,), int
        Euclidean-nearest query prototype of every query.
    gallery_min_distance : ndarray of shape (n_queries,)
        ``min_j D(query, gallery_j)``.
    """
    Q = check_array(query_emb, dtype=np.float64, input_name="query_emb")
    if Q.shape[1] != structure.gallery.shape[1]:
        raise ValueError(
            f"query_emb has {Q.shape[1]} features but the gallery has "
            f"{structure.gallery.shape[1]}."
        )
    Q = l2_normalize(Q)
    nearest = _nearest_prototype(Q, structure.query_prototypes)
    d_min = _scan_gallery(
        Q,
        structure.gallery,
        structure.gallery_order,
        structure.gallery_starts,
        structure.query_partner[nearest],
        False,
    )[0]
    return _private_rule(structure, nearest, d_min), nearest, d_min


def _private_rule(structure, nearest, d_min):
    unmerged = structure.query_partner[nearest] < 0
    return unmerged | (structure.cluster_max_distance[nearest] < d_min)


class DetectionCache:
    """A retriever's open-set detection: appendix B.1's structures of each query domain
    against the gallery rows it searches, built on first use and reused until the
    gallery changes (keyed on :attr:`skucdr._gallery.Gallery.version` and the rows).

    The elbow scans and k-means cost seconds; judging a batch of queries against a
    built structure, milliseconds. The cache is never pickled or saved.
    """

    def __init__(self):
        self._structures = {}

    def detect(self, Q, q_domains, gallery, *, gallery_domain=None, reference_of,
               options, random_state=None):
        """Which rows of ``Q`` are private (their category absent from the gallery).

        Parameters
        ----------
        Q : ndarray of shape (n_queries, n_components)
            Query embeddings.
        q_domains : ndarray of shape (n_queries,)
            The domain of every query.
        gallery : skucdr._gallery.Gallery
            The gallery the queries search.
        gallery_domain : label or list of labels, default=None
            As in ``kneighbors``.
        reference_of : callable
            ``reference_of(domain)``: the fitted embeddings of ``domain`` (the query
            side of appendix B.1), or None for a domain not seen in fit, whose queries
            are then their own reference.
        options : dict
            ``n_prototypes`` and ``merge_rule``.
        random_state : int, RandomState or None

        Returns
        -------
        private : ndarray of shape (n_queries,), bool
        """
        from threadpoolctl import threadpool_limits

        q_domains = np.asarray(q_domains)
        private = np.zeros(Q.shape[0], dtype=bool)
        for group in dict.fromkeys(q_domains.tolist()):
            q_rows = np.flatnonzero(q_domains == group)
            g_rows, _ = gallery.rows_for(group, gallery_domain)
            # faiss k-means on one thread: its OpenMP pool and torch's fight in one process
            with threadpool_limits(limits=1):
                reference = reference_of(group)
                if reference is None:
                    private[q_rows] = detect_private_queries(
                        Q[q_rows], gallery.embedding[g_rows], **options,
                        random_state=random_state)
                    continue
                key = (gallery.version, g_rows.tobytes())
                cached = self._structures.get(group)
                if cached is None or cached[0] != key:
                    structure = fit_open_set_structure(
                        reference, gallery.embedding[g_rows], **options,
                        random_state=random_state)
                    cached = self._structures[group] = (key, structure)  # one per domain
                private[q_rows] = judge_queries(cached[1], Q[q_rows])[0]
        return private
