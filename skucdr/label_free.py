"""Scores of a cross-domain embedding that need no labels, for model selection.

Users of unsupervised retrieval have no labels to choose hyper-parameters with. These
scores look at the embeddings alone (unit rows, with the embedding's mean direction
removed, so that a collapsed embedding does not look consistent):

- :func:`mutual_neighbor_rate`: how often a row and its nearest neighbour in another
  domain are each other's nearest neighbours;
- :func:`cycle_consistency`: follow each row to its nearest neighbour in another domain
  and back; the round trip should land among the row's own nearest neighbours;
- :func:`soft_neighborhood_density`: the entropy of each row's softmax similarity
  distribution over the other domain (SND, Saito et al., ICCV 2021).

:func:`skucdr.metrics.make_label_free_scorer` wraps one of them for ``GridSearchCV``.
How well each ranks fits like labelled mAP@All does is measured in
``benchmarks/label_free_selection.py`` (docs/methods.md, "Model selection without
labels").
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "LABEL_FREE_SCORES",
    "cycle_consistency",
    "label_free_score",
    "mutual_neighbor_rate",
    "soft_neighborhood_density",
]

_CHUNK = 1024  # query rows per similarity block: memory ~ _CHUNK * n_gallery floats


def _normalized(Z):
    Z = np.asarray(Z, dtype=np.float32)
    norms = np.linalg.norm(Z, axis=1, keepdims=True)
    return Z / np.maximum(norms, 1e-12)


def _check(Z, sample_domain):
    Z = np.asarray(Z)
    if Z.ndim != 2:
        raise ValueError(f"Z must be 2-D embeddings (n_samples, n_components), got shape "
                         f"{Z.shape}.")
    if sample_domain is None:
        raise ValueError("sample_domain is required: the scores compare domains.")
    sample_domain = np.asarray(sample_domain)
    if sample_domain.shape != (Z.shape[0],):
        raise ValueError(f"sample_domain has shape {sample_domain.shape}; expected "
                         f"({Z.shape[0]},), one domain per row of Z.")
    if not np.isfinite(Z).all():
        raise ValueError("Z holds NaN or infinite values.")
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
    Z = _normalized(Z).astype(np.float64)
    return _normalized(Z - Z.mean(axis=0))


def _top_k(Q, G, k, exclude_self=False):
    """Indices of the ``k`` most similar rows of ``G`` for every row of ``Q`` (cosine)."""
    out = np.empty((len(Q), k), dtype=np.int64)
    for start in range(0, len(Q), _CHUNK):
        sims = Q[start:start + _CHUNK] @ G.T
        if exclude_self:  # Q is G: a row is not its own neighbour
            rows = np.arange(len(sims))
            sims[rows, start + rows] = -np.inf
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        order = np.take_along_axis(sims, part, axis=1).argsort(axis=1)[:, ::-1]
        out[start:start + _CHUNK] = np.take_along_axis(part, order, axis=1)
    return out


def _domain_pairs(Z, sample_domain, domains):
    """The rows ``(A, B)`` of every ordered pair of distinct domains."""
    for a in domains:
        for b in domains:
            if a != b:
                yield Z[sample_domain == a], Z[sample_domain == b]


def cycle_consistency(Z, sample_domain, *, n_neighbors=10):
    """Share of rows whose round trip to another domain comes back near them.

    For a row ``a`` of domain A and another domain B: ``b`` is the nearest row of B to
    ``a``, ``a'`` the nearest row of A to ``b``; the trip is consistent when ``a'`` is
    ``a`` or one of its ``n_neighbors`` nearest rows in A. The score is the mean over
    rows, averaged over ordered domain pairs; higher is better, in [0, 1].

    Parameters
    ----------
    Z : array-like of shape (n_samples, n_components)
        Embeddings (cosine similarity; rows are L2-normalised here).
    sample_domain : array-like of shape (n_samples,)
        Domain of every row; at least two domains.
    n_neighbors : int, default=10
        Size of the neighbourhood the round trip must land in.

    Returns
    -------
    score : float
    """
    Z, sample_domain, domains = _check(Z, sample_domain)
    scores = []
    for A, B in _domain_pairs(Z, sample_domain, domains):
        k = min(n_neighbors, len(A) - 1)
        forward = _top_k(A, B, 1)[:, 0]
        back = _top_k(B[forward], A, 1)[:, 0]
        home = np.arange(len(A))
        near = _top_k(A, A, k, exclude_self=True) if k > 0 else np.empty((len(A), 0), int)
        consistent = (back == home) | (near == back[:, None]).any(axis=1)
        scores.append(consistent.mean())
    return float(np.mean(scores))


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
        forward = _top_k(A, B, 1)[:, 0]
        back = _top_k(B, A, 1)[:, 0]
        scores.append((back[forward] == np.arange(len(A))).mean())
    return float(np.mean(scores))


def soft_neighborhood_density(Z, sample_domain, *, temperature=0.05):
    """Mean entropy of each row's softmax similarity over another domain (SND).

    Saito et al. (ICCV 2021) score domain adaptation by the density of target
    neighbourhoods; here each row's similarities to the rows of every other domain,
    divided by ``temperature``, are turned into a softmax whose entropy is averaged.
    Higher is better in that paper; it also rises for an embedding that collapses.

    Parameters
    ----------
    Z : array-like of shape (n_samples, n_components)
    sample_domain : array-like of shape (n_samples,)
    temperature : float, default=0.05

    Returns
    -------
    score : float
    """
    Z, sample_domain, domains = _check(Z, sample_domain)
    scores = []
    for A, B in _domain_pairs(Z, sample_domain, domains):
        total = 0.0
        for start in range(0, len(A), _CHUNK):
            logits = (A[start:start + _CHUNK] @ B.T) / temperature
            logits -= logits.max(axis=1, keepdims=True)
            p = np.exp(logits)
            p /= p.sum(axis=1, keepdims=True)
            total += float(-(p * np.log(np.maximum(p, 1e-30))).sum())
        scores.append(total / len(A))
    return float(np.mean(scores))


LABEL_FREE_SCORES = {
    "mutual_nn": mutual_neighbor_rate,
    "cycle": cycle_consistency,
    "snd": soft_neighborhood_density,
}


def label_free_score(Z, sample_domain, *, method="mutual_nn", **params):
    """One of :data:`LABEL_FREE_SCORES` by name (see each function).

    Parameters
    ----------
    Z : array-like of shape (n_samples, n_components)
    sample_domain : array-like of shape (n_samples,)
    method : {"mutual_nn", "cycle", "snd"}, default="mutual_nn"
    **params
        Passed to the score's function (``n_neighbors``, ``temperature``).

    Returns
    -------
    score : float
    """
    if method not in LABEL_FREE_SCORES:
        raise ValueError(f"method must be one of {sorted(LABEL_FREE_SCORES)}, got "
                         f"{method!r}.")
    return LABEL_FREE_SCORES[method](Z, sample_domain, **params)
