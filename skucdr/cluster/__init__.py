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

from ._estimator import PrototypeClusterer
from ._kmeans import choose_n_prototypes_elbow, l2_normalize, spherical_kmeans
from ._merge import (
    MERGE_RULES,
    PrototypeMerge,
    merge_prototypes,
    product_distance,
    translate_prototypes,
)
from ._training import domain_prototypes

__all__ = [
    "MERGE_RULES",
    "PrototypeClusterer",
    "PrototypeMerge",
    "choose_n_prototypes_elbow",
    "domain_prototypes",
    "l2_normalize",
    "merge_prototypes",
    "product_distance",
    "spherical_kmeans",
    "translate_prototypes",
]

