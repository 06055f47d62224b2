"""UEM's product distance and cross-domain prototype merge (Eqs. 8, 9, 15-17)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist, pdist
from sklearn.utils import check_array

from .._sklearn_compat import StrOptions, validate_params

try:  # faiss is a dependency, but keep a pure scikit-learn path (macOS OpenMP clashes).
    import faiss
except ImportError:  # pragma: no cover - exercised only without faiss
    faiss = None


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


#: the merge rules of :func:`merge_prototypes`
MERGE_RULES = ("eq9", "mutual")


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




@validate_params({"rule": [StrOptions(set(MERGE_RULES))]}, prefer_skip_nested_validation=True)
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


