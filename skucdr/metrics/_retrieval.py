"""mAP@All, precision@k and the cross-domain mean over ordered domain pairs."""

from __future__ import annotations

import warnings
from numbers import Integral

import numpy as np

from .._sklearn_compat import Interval, StrOptions, validate_params
from .._validation import domain_order, l2_normalize
from ._ranking import (
    check_domain_data,
    check_ks,
    check_labels,
    check_map_params,
    check_retrieval_input,
    leave_one_out_map,
    mean_ap,
    precision,
    query_stats,
    warn_no_query,
)

# --------------------------------------------------------------------------------------
# Public metrics
# --------------------------------------------------------------------------------------

# the parameters mean_average_precision and cross_domain_map share
MAP_PARAMETERS = {
    "k": [Interval(Integral, 1, None, closed="left"), None],
    "average": [StrOptions({"query", "class"})],
    "interpolated": ["boolean"],
}
# the cut-offs of precision_at_k and retrieval_report: an int or a sequence of them
CUTOFFS = [Interval(Integral, 1, None, closed="left"), "array-like"]


@validate_params(MAP_PARAMETERS, prefer_skip_nested_validation=True)
def mean_average_precision(
    query_emb,
    query_labels,
    gallery_emb,
    gallery_labels,
    *,
    k=None,
    average="query",
    interpolated=False,
):
    """Mean average precision of cosine-similarity retrieval (mAP@All or mAP@k).

    For each query, the gallery is ranked by decreasing cosine similarity and the
    average precision is ``AP_q = (1 / N_q) * sum_{r relevant, r <= k} P_q(r)``, where
    ``P_q(r)`` is the fraction of items with the query's label among the first ``r`` and
    ``N_q = min(k, R_q)`` (``R_q``: number of gallery items with the query's label; with
    ``k=None``, ``N_q = R_q`` and the whole gallery is ranked).

    Parameters
    ----------
    query_emb : array-like of shape (n_queries, n_features)
        Query embeddings. Rows are L2-normalised inside.
    query_labels : array-like of shape (n_queries,)
        Class label of every query (ints or strings).
    gallery_emb : array-like of shape (n_gallery, n_features)
        Gallery embeddings. Rows are L2-normalised inside.
    gallery_labels : array-like of shape (n_gallery,)
        Class label of every gallery item.
    k : int, default=None
        Rank only the top ``k`` gallery items (mAP@k, normaliser ``min(k, R_q)`` as in
        CoDA's ``eval_AP_inner``, so a perfect ranking scores 1). None ranks the whole
        gallery (mAP@All).
    average : {"query", "class"}, default="query"
        ``"query"``: mean over queries. ``"class"``: mean over queries of each class,
        then mean over classes (class-balanced).
    interpolated : bool, default=False
        Replace ``P_q(r)`` by its envelope ``max_{r' >= r} P_q(r')`` (PASCAL VOC AP).
        ``average="class", interpolated=True`` reproduces CoDA's ``cal_map_sda``, the
        mAP@All variant that UEM reports; it is never lower than the default.

    Returns
    -------
    score : float
        The mAP in [0, 1]. NaN (with an ``UndefinedMetricWarning``) when no query's
        label occurs in the gallery.

    Notes
    -----
    Queries whose label is absent from the gallery are excluded. Gallery items with
    equal float32 similarity are ranked by increasing gallery index. Similarities are
    computed in float32 chunk by chunk; memory does not grow with the number of queries.

    Examples
    --------
    >>> import numpy as np
    >>> from skucdr.metrics import mean_average_precision
    >>> queries = np.array([[1.0, 0.0], [0.0, 1.0]])
    >>> gallery = np.array([[0.9, 0.1], [0.2, 0.8], [0.8, 0.3]])
    >>> round(mean_average_precision(queries, [0, 1], gallery, [0, 0, 1]), 4)
    0.6667
    """
    check_map_params(k, average, interpolated)
    Q, q_labels, G, g_labels = check_retrieval_input(
        query_emb, query_labels, gallery_emb, gallery_labels
    )
    stats = query_stats(Q, q_labels, G, g_labels, top=k, interpolated=(bool(interpolated),))
    if stats.codes.size == 0:
        warn_no_query()
        return np.nan
    return mean_ap(stats, bool(interpolated), average)


@validate_params({"k": CUTOFFS}, prefer_skip_nested_validation=True)
def precision_at_k(query_emb, query_labels, gallery_emb, gallery_labels, *, k=(1, 5, 15)):
    """Precision at k of cosine-similarity retrieval, as defined by UCDIR.

    For each query ``q`` with ``R_q`` relevant gallery items, count the relevant items
    among the top ``min(k, R_q)`` of the ranking; the precision is the micro-average
    ``sum_q hits_q / sum_q min(k, R_q)`` (not the mean of per-query precisions). This is
    ``retrieval_precision_cal`` of UCDIR, ProtoOT and DG-UCDIR, as a fraction in [0, 1]
    instead of a percentage.

    Parameters
    ----------
    query_emb : array-like of shape (n_queries, n_features)
        Query embeddings. Rows are L2-normalised inside.
    query_labels : array-like of shape (n_queries,)
        Class label of every query.
    gallery_emb : array-like of shape (n_gallery, n_features)
        Gallery embeddings. Rows are L2-normalised inside.
    gallery_labels : array-like of shape (n_gallery,)
        Class label of every gallery item.
    k : int or sequence of int, default=(1, 5, 15)
        Cut-off(s). The papers use (1, 5, 15) on Office-Home and (50, 100, 200) on
        DomainNet.

    Returns
    -------
    precision : float or dict of int to float
        A float when ``k`` is an int, else ``{k: precision}``. NaN (with an
        ``UndefinedMetricWarning``) when no query's label occurs in the gallery.

    Notes
    -----
    Queries whose label is absent from the gallery contribute nothing (``min(k, 0) = 0``).
    Ties are broken by increasing gallery index.

    Examples
    --------
    >>> import numpy as np
    >>> from skucdr.metrics import precision_at_k
    >>> queries = np.array([[1.0, 0.0], [0.0, 1.0]])
    >>> gallery = np.array([[0.9, 0.1], [0.2, 0.8], [0.8, 0.3]])
    >>> precision_at_k(queries, [0, 1], gallery, [0, 0, 1], k=(1, 2))
    {1: 0.5, 2: 0.3333333333333333}
    """
    ks, single = check_ks(k)
    Q, q_labels, G, g_labels = check_retrieval_input(
        query_emb, query_labels, gallery_emb, gallery_labels
    )
    stats = query_stats(Q, q_labels, G, g_labels, top=max(ks), ks=ks)
    if stats.codes.size == 0:
        warn_no_query()
    result = {k_: precision(stats, k_) for k_ in ks}
    return result[ks[0]] if single else result


# --------------------------------------------------------------------------------------
# Domain pairs
# --------------------------------------------------------------------------------------


def as_domain_list(value, present, name):
    if value is None:
        return list(present)
    values = [value] if isinstance(value, (str, bytes)) or not np.iterable(value) else value
    values = [v.item() if isinstance(v, np.generic) else v for v in values]
    missing = [v for v in values if v not in present]
    if missing:
        raise ValueError(
            f"{name} {missing!r} not found in sample_domain; the domains present are {present!r}."
        )
    return values


def domain_pairs(sample_domain, query_domain, gallery_domain):
    present = domain_order(sample_domain)
    queries = as_domain_list(query_domain, present, "query_domain")
    galleries = as_domain_list(gallery_domain, present, "gallery_domain")
    pairs = [(a, b) for a in queries for b in galleries if a != b]
    if not pairs:
        raise ValueError(
            "Cross-domain retrieval needs at least one ordered pair of different domains "
            f"(query -> gallery); the domains present are {present!r}, "
            f"query_domain={query_domain!r}, gallery_domain={gallery_domain!r}."
        )
    return pairs


def check_pairs(pairs, sample_domain):
    present = domain_order(sample_domain)
    checked = []
    for pair in pairs:
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
            raise ValueError(f"pairs must hold (query_domain, gallery_domain) pairs, got {pair!r}.")
        a, b = (as_domain_list([v], present, "domain")[0] for v in pair)
        if a == b:
            raise ValueError(
                f"Pair {pair!r}: query and gallery domain must differ (the query would "
                "retrieve itself)."
            )
        checked.append((a, b))
    if not checked:
        raise ValueError("pairs is empty.")
    return checked


@validate_params(MAP_PARAMETERS, prefer_skip_nested_validation=True)
def cross_domain_map(
    embeddings,
    labels,
    sample_domain,
    *,
    query_domain=None,
    gallery_domain=None,
    k=None,
    average="query",
    interpolated=False,
):
    """Mean of :func:`mean_average_precision` over ordered pairs of domains.

    Every ordered pair ``(A, B)`` with ``A != B`` is scored with the rows of domain
    ``A`` as queries and the rows of domain ``B`` as gallery; the result is the mean over
    pairs. This is what the estimators' ``score`` and :func:`make_map_scorer` return.

    Parameters
    ----------
    embeddings : array-like of shape (n_samples, n_features)
        Embeddings of all domains, stacked.
    labels : array-like of shape (n_samples,)
        Class label of every row.
    sample_domain : array-like of shape (n_samples,)
        Domain label (str or int) of every row.
    query_domain : domain label or list of them, default=None
        Restrict the query side of the pairs to these domains (default: every domain).
    gallery_domain : domain label or list of them, default=None
        Restrict the gallery side of the pairs to these domains (default: every domain).
    k : int, default=None
        See :func:`mean_average_precision`.
    average : {"query", "class"}, default="query"
        See :func:`mean_average_precision`.
    interpolated : bool, default=False
        See :func:`mean_average_precision`.

    Returns
    -------
    score : float
        The mean mAP over the pairs whose mAP is defined; pairs that share no class are
        skipped with an ``UndefinedMetricWarning``; NaN when no pair is defined.

    Raises
    ------
    ValueError
        When fewer than two domains take part (no ordered pair of different domains),
        or when a requested domain is not in ``sample_domain``.

    Examples
    --------
    >>> import numpy as np
    >>> from skucdr.metrics import cross_domain_map
    >>> Z = np.array([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1], [0.1, 0.9]])
    >>> cross_domain_map(Z, [0, 1, 0, 1], ["a", "a", "b", "b"])
    1.0
    """
    check_map_params(k, average, interpolated)
    embeddings, labels, sample_domain = check_domain_data(embeddings, labels, sample_domain)
    pairs = domain_pairs(sample_domain, query_domain, gallery_domain)
    Z = l2_normalize(embeddings)
    flag = bool(interpolated)
    scores = []
    for a, b in pairs:
        qa, gb = sample_domain == a, sample_domain == b
        stats = query_stats(Z[qa], labels[qa], Z[gb], labels[gb], top=k, interpolated=(flag,))
        if stats.codes.size == 0:
            warn_no_query(f" for the pair {a!r} -> {b!r}", "the pair is skipped")
            continue
        scores.append(mean_ap(stats, flag, average))
    return float(np.mean(scores)) if scores else np.nan




def within_domain_map(embeddings, labels):
    """Leave-one-out mAP@All inside one set of rows: every row queries all the others.

    What a retriever's ``score`` returns when the rows it is given hold one domain.
    Rows alone in their class have no relevant item and are skipped; NaN, with a
    warning, when fewer than two rows are given or no row shares its class.

    Parameters
    ----------
    embeddings : array-like of shape (n_samples, n_features)
    labels : array-like of shape (n_samples,)

    Returns
    -------
    score : float
    """
    labels = check_labels(labels, len(embeddings), "y", "X")
    if len(embeddings) < 2:
        warnings.warn("score needs at least two rows; returning nan.", stacklevel=3)
        return float("nan")
    score = leave_one_out_map(embeddings, labels)
    if np.isnan(score):
        warnings.warn("score: no row shares its class with another row, so no query has a "
                      "relevant item; returning nan.", UserWarning, stacklevel=3)
    return score
