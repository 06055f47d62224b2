"""Tests of skucdr.open_set.detect_private_queries (UEM appendix B.1)."""

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from threadpoolctl import threadpool_limits

from skucdr import open_set
from skucdr.cluster import l2_normalize, product_distance
from skucdr.open_set import detect_private_queries


@pytest.fixture(autouse=True)
def _one_thread():
    with threadpool_limits(1):
        yield


def open_set_data(seed=0, n_classes=10, n_shared=5, n_features=32, n_per=40, shift=0.3):
    """Queries of every class; a shifted gallery holding only the first ``n_shared``."""
    rng = np.random.RandomState(seed)
    centers = l2_normalize(rng.normal(size=(n_classes, n_features)))
    noise = 0.4 / np.sqrt(n_features)
    yq = np.repeat(np.arange(n_classes), n_per)
    yg = np.repeat(np.arange(n_shared), n_per)
    offset = shift * l2_normalize(rng.normal(size=(1, n_features)))[0]
    Q = centers[yq] + noise * rng.normal(size=(len(yq), n_features))
    G = centers[yg] + offset + noise * rng.normal(size=(len(yg), n_features))
    return Q, G, yq >= n_shared, centers, offset


@pytest.mark.parametrize("seed, merge_rule", [(0, "eq9"), (1, "eq9"), (2, "eq9"), (0, "mutual")])
def test_detects_private_categories(seed, merge_rule):
    Q, G, truth, _, _ = open_set_data(seed)
    private, details = detect_private_queries(Q, G, random_state=seed, merge_rule=merge_rule,
                                              return_details=True)
    assert private.shape == (len(Q),) and private.dtype == bool
    assert (private == truth).mean() >= 0.95
    assert private[truth].mean() >= 0.95  # private queries found
    assert private[~truth].mean() <= 0.05  # shared queries kept
    assert len(details.query_prototypes) == 10 and len(details.gallery_prototypes) == 5
    assert len(details.merge.pairs) == 5


def test_details_match_brute_force():
    Q, G, _, _, _ = open_set_data(3, n_classes=6, n_shared=3, n_per=15)
    private, det = detect_private_queries(Q, G, random_state=0, return_details=True)
    Qn, Gn = l2_normalize(Q), l2_normalize(G)
    D = product_distance(Qn, Gn)
    assert_allclose(det.gallery_min_distance, D.min(axis=1), rtol=1e-10)
    q_lab = np.argmin(((Qn[:, None] - det.query_prototypes[None]) ** 2).sum(-1), axis=1)
    g_lab = np.argmin(((Gn[:, None] - det.gallery_prototypes[None]) ** 2).sum(-1), axis=1)
    assert_array_equal(det.nearest_prototype, q_lab)
    expected_max = np.full(len(det.query_prototypes), -np.inf)
    for a_idx, b_idx in det.merge.pairs:  # D_c: max over members x members, by loops
        for i in np.flatnonzero(q_lab == a_idx):
            for j in np.flatnonzero(g_lab == b_idx):
                expected_max[a_idx] = max(expected_max[a_idx], D[i, j])
    assert_allclose(det.cluster_max_distance, expected_max, rtol=1e-10)
    merged = np.isin(q_lab, det.merge.pairs[:, 0])
    assert_array_equal(private, ~merged | (expected_max[q_lab] < D.min(axis=1)))


def test_blocked_scan_gives_the_same_answer(monkeypatch):
    Q, G, _, _, _ = open_set_data(4, n_classes=6, n_shared=3, n_per=15)
    ref = detect_private_queries(Q, G, random_state=0, return_details=True)
    monkeypatch.setattr(open_set, "_BLOCK_ELEMENTS", 7 * len(G))  # blocks of 7 queries
    out = detect_private_queries(Q, G, random_state=0, return_details=True)
    assert_array_equal(out[0], ref[0])
    assert_allclose(out[1].cluster_max_distance, ref[1].cluster_max_distance)
    assert_allclose(out[1].gallery_min_distance, ref[1].gallery_min_distance)


def test_new_queries_against_a_reference():
    """Rule (b): a new query near a merged prototype but far from the gallery is private."""
    Q, G, _truth, centers, _ = open_set_data(5)
    rng = np.random.RandomState(0)
    noise = 0.4 / np.sqrt(Q.shape[1])
    fresh_shared = centers[[0, 1, 2]] + noise * rng.normal(size=(3, Q.shape[1]))
    fresh_private = centers[[7, 8, 9]] + noise * rng.normal(size=(3, Q.shape[1]))
    # Outliers: mostly a direction orthogonal to every class, still closest to class 0.
    basis = np.linalg.qr(centers.T)[0]
    orth = rng.normal(size=(3, Q.shape[1]))
    orth -= (orth @ basis) @ basis.T
    outliers = centers[0] + 1.5 * l2_normalize(orth)
    new = np.r_[fresh_shared, fresh_private, outliers]
    private, det = detect_private_queries(
        new, G, query_reference=Q, random_state=0, return_details=True
    )
    assert_array_equal(private, [False] * 3 + [True] * 6)
    merged_ids = det.merge.pairs[:, 0]
    # The outliers are flagged by rule (b): their nearest prototype is a merged one.
    assert np.all(np.isin(det.nearest_prototype[6:], merged_ids))
    assert np.all(
        det.cluster_max_distance[det.nearest_prototype[6:]] < det.gallery_min_distance[6:]
    )
    # Judging the reference queries themselves equals the default call.
    assert_array_equal(
        detect_private_queries(Q, G, query_reference=Q, random_state=0),
        detect_private_queries(Q, G, random_state=0),
    )


def test_deterministic_and_fixed_k():
    Q, G, _truth, _, _ = open_set_data(6, n_classes=4, n_shared=2, n_per=20)
    a = detect_private_queries(Q, G, random_state=1)
    assert_array_equal(a, detect_private_queries(Q, G, random_state=1))
    # With the true k on each side the answer is the same; a fixed k shared by both
    # sides over-splits the gallery, and Eq. 9's threshold then merges nothing.
    _, det = detect_private_queries(Q, G, n_prototypes=4, random_state=1, return_details=True)
    assert len(det.gallery_prototypes) == 4
    assert len(det.merge.pairs) <= 2


def test_errors():
    Q, G, _, _, _ = open_set_data(0, n_classes=4, n_shared=2, n_per=5)
    with pytest.raises(ValueError, match="gallery_emb has 5 features but query_emb has 32"):
        detect_private_queries(Q, G[:, :5])
    with pytest.raises(ValueError, match="query_reference has 4 features"):
        detect_private_queries(Q, G, query_reference=Q[:, :4])
    with pytest.raises(ValueError, match=r"n_prototypes=15 .* gallery rows \(n_samples=10\)"):
        detect_private_queries(Q, G, n_prototypes=15)
    with pytest.raises(ValueError, match="'elbow' or an int"):
        detect_private_queries(Q, G, n_prototypes="auto")
    with pytest.raises(ValueError, match="max_prototypes"):
        detect_private_queries(Q, G, max_prototypes=1)
    with pytest.raises(ValueError, match="'merge_rule' parameter of detect_private_queries"):
        detect_private_queries(Q, G, n_prototypes=2, merge_rule="nearest")
