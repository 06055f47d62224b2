"""A score of a cross-domain embedding that needs no labels, for model selection.

Users of unsupervised retrieval have no labels to choose hyper-parameters with.
:func:`mutual_neighbor_rate` looks at the embeddings alone: how often a row and its
nearest neighbour in another domain are each other's nearest neighbours, on unit rows
with the embedding's mean direction removed (so that a collapsed embedding's float noise
is not read as consistency). :func:`skucdr.metrics.make_label_free_scorer` wraps it for
``GridSearchCV``. How well it ranks fits as labelled mAP@All does, and the scores measured
and not adopted (round-trip consistency, soft neighbourhood density), are in
``docs/methods.md`` ("Model selection without labels";
``benchmarks/label_free_selection.py``).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ._validation import l2_normalize

__all__ = ["mutual_neighbor_rate"]

_CHUNK = 1024  # query rows per similarity block: memory ~ _CHUNK * n_gallery floats


def _check(Z, sample_domain):
    from sklearn.utils import check_array

    from ._validation import check_sample_domain

    if isinstance(Z, Mapping):
        raise TypeError("Z must be an array of embeddings (n_samples, n_components) with "
                        "sample_domain, not a mapping: use skucdr.pack_domains first.")
    Z = check_array(Z, dtype=[np.float32, np.float64], input_name="Z", ensure_min_samples=2)
    if sample_domain is None:
        raise ValueError("sample_domain is required: the scores compare domains.")
    sample_domain = check_sample_domain(sample_domain, Z.shape[0], rows_of="Z")
    domains = list(dict.fromkeys(sample_domain.tolist()))
    if len(domains) < 2:
        raise ValueError(f"the scores need at least 2 domains; sample_domain holds "
                         f"{domains}.")
    return _centred(Z), sample_domain, domains


def _centred(Z):
    """Unit rows with the embedding's mean direction removed, then unit again.

    An embedding that has collapsed into a narrow cone keeps its nearest-neighbour
    relations in the float noise around that cone; without its common direction, that
    noise scores as what it is, random.
    """
    Z = l2_normalize(Z).astype(np.float64)
    return l2_normalize(Z - Z.mean(axis=0))


def _nearest(Q, G):
    """Index of the most similar row of ``G`` for every row of ``Q`` (cosine)."""
    return np.concatenate([(Q[start:start + _CHUNK] @ G.T).argmax(axis=1)
                           for start in range(0, len(Q), _CHUNK)])


def _domain_pairs(Z, sample_domain, domains):
    """The rows ``(A, B)`` of every ordered pair of distinct domains."""
    for a in domains:
        for b in domains:
            if a != b:
                yield Z[sample_domain == a], Z[sample_domain == b]


def mutual_neighbor_rate(Z, sample_domain):
    """Share of rows that are the nearest neighbour of their own nearest neighbour in
    another domain (averaged over ordered domain pairs; higher is better, in [0, 1]).

    Parameters
    ----------
    Z : array-like of shape (n_samples, n_components)
    sample_domain : array-like of shape (n_samples,)

    Returns
    -------
    score : float
    """
    Z, sample_domain, domains = _check(Z, sample_domain)
    scores = []
    for A, B in _domain_pairs(Z, sample_domain, domains):
        forward = _nearest(A, B)
        back = _nearest(B, A)
        scores.append((back[forward] == np.arange(len(A))).mean())
    return float(np.mean(scores))
