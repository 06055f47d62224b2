"""The prototypes a training objective needs each epoch: :class:`PrototypeClusterer`
on the memory banks, handed back as tensors."""

from __future__ import annotations

__all__ = ["domain_prototypes"]


def domain_prototypes(features, domains, n_prototypes, *, merge, max_prototypes,
                      random_state, n_jobs, device, merge_rule="eq9"):
    """Per-domain prototypes of ``features``, merged across domains.

    Per-domain spherical k-means, translated, matched and (with ``merge``) merged across
    domains by :class:`~skucdr.PrototypeClusterer`.

    Returns
    -------
    prototypes : list of Tensor of shape (k_d, dim)
        Prototypes of every domain (merged pairs share a row), float32 on ``device``.
    labels : ndarray of shape (n,), int
        Shared prototype id of every row, in the order of ``features``.
    """
    import torch

    from ._estimator import PrototypeClusterer

    clusterer = PrototypeClusterer(
        n_prototypes=n_prototypes,
        merge=merge,
        merge_rule=merge_rule,
        max_prototypes=max_prototypes,
        random_state=random_state,
        n_jobs=n_jobs,
    ).fit(features, sample_domain=domains)
    prototypes = [
        torch.as_tensor(clusterer.domain_centers_[d], dtype=torch.float32, device=device)
        for d in range(int(domains.max()) + 1)
    ]
    return prototypes, clusterer.labels_
