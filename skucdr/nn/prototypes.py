"""Memory banks and cross-domain prototypes, shared by UEM's objective and TPSNet's."""

from __future__ import annotations

import torch
from torch.nn import functional as F

__all__ = ["domain_prototypes", "momentum_update_bank"]


@torch.no_grad()
def momentum_update_bank(bank, index, features, momentum):
    """Move memory-bank rows towards new features and re-normalise them (NPID).

    ``bank[index] <- normalize(momentum * bank[index] + (1 - momentum) * features)``,
    in place.
    """
    mixed = momentum * bank[index] + (1 - momentum) * features
    bank[index] = F.normalize(mixed, dim=1)


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
    from ..cluster import PrototypeClusterer

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
