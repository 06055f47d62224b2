"""Tests of skucdr.cluster: spherical k-means, the elbow, UEM's merge rule, PrototypeClusterer."""

import pickle
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
import sklearn
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import adjusted_rand_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks
from threadpoolctl import threadpool_limits

from skucdr import PrototypeClusterer, pack_domains
from skucdr.cluster import (
    choose_n_prototypes_elbow,
    l2_normalize,
    merge_prototypes,
    product_distance,
    spherical_kmeans,
)
from skucdr.cluster._kmeans import _knee_by_chord


@pytest.fixture(autouse=True)
def _one_thread():
    # faiss' OpenMP threads spin badly on a busy 2-core machine; results do not depend on it.
    with threadpool_limits(1):
        yield


def sphere_blobs(n_clusters, n_per=40, n_features=64, noise=0.3, seed=0):
    """Well-separated blobs around random unit directions."""
    rng = np.random.RandomState(seed)
    centers = l2_normalize(rng.normal(size=(n_clusters, n_features)))
    y = np.repeat(np.arange(n_clusters), n_per)
    X = centers[y] + noise / np.sqrt(n_features) * rng.normal(size=(len(y), n_features))
    return X, y, centers


def two_domains(seed=0, n_per=30, shift=0.3):
    """Domain a: categories 0..3; domain b (shifted): categories 0..3 and a private 5.

    (B's private category is left unmatched by the Hungarian step, so the merge keeps it
    apart whatever the translation error caused by the different category mixes.)
    """
    rng = np.random.RandomState(seed)
    d = 32
    centers = l2_normalize(rng.normal(size=(6, d)))
    ya = np.repeat(np.arange(4), n_per)
    yb = np.repeat([0, 1, 2, 3, 5], n_per)
    offset = shift * l2_normalize(rng.normal(size=(1, d)))[0]
    Xa = centers[ya] + 0.05 * rng.normal(size=(len(ya), d))
    Xb = centers[yb] + offset + 0.05 * rng.normal(size=(len(yb), d))
    return Xa, ya, Xb, yb


# --------------------------------------------------------------------------------------
# spherical k-means
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["faiss", "sklearn"])
def test_spherical_kmeans_recovers_blobs(backend):
    X, y, _ = sphere_blobs(6, n_per=30, n_features=32)
    centers, labels, inertia = spherical_kmeans(X, 6, random_state=0, backend=backend)
    assert centers.shape == (6, 32) and centers.dtype == np.float32
    assert_allclose(np.linalg.norm(centers, axis=1), 1.0, rtol=1e-5)
    assert labels.shape == (180,) and labels.dtype == np.int64
    assert adjusted_rand_score(y, labels) == 1.0
    Xn = l2_normalize(X)
    expected = np.sum(np.linalg.norm(Xn - centers[labels], axis=1) ** 2)
    assert inertia == pytest.approx(expected, rel=1e-4)
    assert_array_equal(labels, np.argmax(Xn @ centers.T, axis=1))


@pytest.mark.parametrize("backend", ["faiss", "sklearn"])
def test_spherical_kmeans_is_deterministic(backend):
    X, _, _ = sphere_blobs(5, n_per=20, n_features=16, noise=1.0)
    a = spherical_kmeans(X, 7, random_state=3, backend=backend)
    b = spherical_kmeans(X, 7, random_state=3, backend=backend)
    assert_array_equal(a[0], b[0])
    assert_array_equal(a[1], b[1])
    assert a[2] == b[2]


def test_spherical_kmeans_scales_rows_and_handles_k_one_and_n_equals_k():
    X = np.array([[2.0, 0.0], [0.0, 3.0], [5.0, 0.0]])
    centers, labels, _ = spherical_kmeans(X, 1, random_state=0)
    assert_allclose(centers, l2_normalize(np.array([[2.0, 1.0]])), rtol=1e-6)
    assert_array_equal(labels, [0, 0, 0])
    centers, labels, inertia = spherical_kmeans(X[:2], 2, random_state=0)
    assert_allclose(np.linalg.norm(centers, axis=1), 1.0, rtol=1e-6)
    assert inertia == pytest.approx(0.0, abs=1e-6)


def test_spherical_kmeans_with_fewer_distinct_rows_than_clusters():
    X = np.tile([[1.0, 0.0], [0.0, 1.0]], (5, 1))
    centers, _labels, inertia = spherical_kmeans(X, 4, random_state=0)
    assert centers.shape == (4, 2) and np.all(np.isfinite(centers))
    assert inertia == pytest.approx(0.0, abs=1e-6)


def test_spherical_kmeans_errors():
    X = np.ones((3, 2))
    with pytest.raises(ValueError, match=r"n_clusters=4 .* \(n_samples=3\)"):
        spherical_kmeans(X, 4)
    with pytest.raises(ValueError, match="'n_clusters' parameter of spherical_kmeans must be"):
        spherical_kmeans(X, 0)
    with pytest.raises(ValueError, match="'n_clusters' parameter of spherical_kmeans must be"):
        spherical_kmeans(X, 2.5)
    with pytest.raises(ValueError, match="backend"):
        spherical_kmeans(X, 2, backend="torch")
    with pytest.raises(ValueError, match="NaN"):
        spherical_kmeans(np.array([[np.nan, 1.0], [1.0, 0.0]]), 1)


# --------------------------------------------------------------------------------------
# elbow
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("n_clusters", [5, 10, 20])
def test_elbow_finds_true_k_on_sphere_blobs(n_clusters):
    X, _, _ = sphere_blobs(n_clusters, seed=n_clusters)
    k, ks, inertias = choose_n_prototypes_elbow(X, random_state=0, return_curve=True)
    assert k == n_clusters
    assert ks[0] == 1 and ks[1] == 2 and ks[-1] == min(50, len(X) // 10)
    assert np.all(np.diff(inertias) <= 0)


def test_elbow_finds_k_min_and_sklearn_backend_agrees():
    X, _, _ = sphere_blobs(2, n_per=30, n_features=32, seed=1)
    assert choose_n_prototypes_elbow(X, random_state=0) == 2
    X, _, _ = sphere_blobs(5, n_per=30, n_features=32, seed=2)
    assert choose_n_prototypes_elbow(X, random_state=0, backend="sklearn") == 5


def test_knee_by_chord_by_hand():
    # Normalised: x = 0, .25, .5, .75, 1; y = 1, .1, .05, 0.0, 0.0 (after the min).
    # The chord falls from 1 to 0: gaps = 0, .65, .45, .25, 0 -> index 1.
    assert _knee_by_chord([1, 2, 3, 4, 5], [21.0, 3.0, 2.0, 1.0, 1.0]) == 1
    assert _knee_by_chord([1, 2, 3], [1.0, 1.0, 1.0]) == 0  # flat: no knee


def test_elbow_on_tiny_data_and_errors():
    X = np.random.RandomState(0).normal(size=(6, 3))
    assert choose_n_prototypes_elbow(X, random_state=0) == 2  # range collapses to k_min
    assert choose_n_prototypes_elbow(X[:1]) == 1  # fewer rows than k_min
    with pytest.raises(ValueError, match="k_max=2 is smaller than k_min=3"):
        choose_n_prototypes_elbow(X, k_min=3, k_max=2)


# --------------------------------------------------------------------------------------
# product distance
# --------------------------------------------------------------------------------------
def test_product_distance_by_hand():
    U = np.array([[1.0, 0.0]])
    V = np.array([[0.0, 1.0], [2.0, 0.0], [-1.0, 0.0], [0.0, 0.0]])
    # orthogonal: (1 - 0) * sqrt(2); same direction: 0; opposite: (1 + 1) * 2;
    # zero vector: cosine 0 -> (1 - 0) * 1.
    assert_allclose(product_distance(U, V), [[np.sqrt(2), 0.0, 4.0, 1.0]], atol=1e-12)


def test_product_distance_matches_definition():
    rng = np.random.RandomState(0)
    U, V = rng.normal(size=(7, 5)), rng.normal(size=(4, 5))
    expected = np.array(
        [
            [(1 - u @ v / np.linalg.norm(u) / np.linalg.norm(v)) * np.linalg.norm(u - v) for v in V]
            for u in U
        ]
    )
    assert_allclose(product_distance(U, V), expected, rtol=1e-10)
    assert_allclose(np.diag(product_distance(U, U)), 0.0, atol=1e-6)
    with pytest.raises(ValueError, match="features"):
        product_distance(U, V[:, :3])


# --------------------------------------------------------------------------------------
# merge rule (Eqs. 8-9)
# --------------------------------------------------------------------------------------
def test_merge_prototypes_by_hand():
    P_a = np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]])
    P_b = np.array([[1.0, 1.5], [5.0, 1.0], [10.0, 10.0]])
    m = merge_prototypes(P_a, P_b, mean_a=[0.0, 0.0], mean_b=[1.0, 1.0])
    # Eq. 8: translate B by mean_a - mean_b = (-1, -1).
    assert_allclose(m.translation, [-1.0, -1.0])
    assert_allclose(m.translated_b, [[0.0, 0.5], [4.0, 0.0], [9.0, 9.0]])
    # Hungarian on Euclidean cost: 0-0 (0.5), 1-1 (0), 2-2 (sqrt(106)).
    assert_array_equal(m.matching, [[0, 0], [1, 1], [2, 2]])
    assert_allclose(m.matched_distances, [0.5, 0.0, np.sqrt(106.0)])
    # Eq. 9: min(min d within A = 4, min d within B = sqrt(16.25)) = 4.
    assert m.threshold == pytest.approx(4.0)
    assert_array_equal(m.merge_mask, [True, True, False])
    assert_array_equal(m.pairs, [[0, 0], [1, 1]])
    # Unified set: A (merged ones averaged), then B's unmerged prototype translated.
    assert_allclose(m.prototypes, [[0.0, 0.25], [4.0, 0.0], [0.0, 4.0], [9.0, 9.0]])
    assert_array_equal(m.a_to_shared, [0, 1, 2])
    assert_array_equal(m.b_to_shared, [0, 1, 3])
    assert m.n_shared == 4
    assert_allclose(m.prototypes_in_b_frame(), m.prototypes + 1.0)


def test_merge_uses_hungarian_not_greedy_matching():
    P_a = np.array([[0.0, 0.0], [2.0, 0.0]])
    P_b = np.array([[1.1, 0.0], [3.5, 0.0]])
    m = merge_prototypes(P_a, P_b, np.zeros(2), np.zeros(2))
    # Greedy would pair a1-b0 (0.9) first; the optimal assignment (sum 2.6) is 0-0, 1-1.
    assert_array_equal(m.matching, [[0, 0], [1, 1]])
    assert m.threshold == pytest.approx(2.0)
    assert_array_equal(m.pairs, [[0, 0], [1, 1]])
    assert_allclose(m.prototypes, [[0.55, 0.0], [2.75, 0.0]])


def test_merge_threshold_is_strict():
    P_a = np.array([[0.0, 0.0], [2.0, 0.0]])
    P_b = np.array([[0.0, 2.0], [2.0, 10.0]])
    m = merge_prototypes(P_a, P_b, np.zeros(2), np.zeros(2))
    assert_allclose(m.matched_distances, [2.0, 10.0])
    assert m.threshold == 2.0
    assert len(m.pairs) == 0
    assert_array_equal(m.b_to_shared, [2, 3])
    assert m.n_shared == 4


def test_merge_with_single_prototypes_and_unequal_sizes():
    one_a, one_b = np.array([[0.0, 1.0]]), np.array([[5.0, 5.0]])
    m = merge_prototypes(one_a, one_b, np.zeros(2), np.zeros(2))
    assert m.threshold == np.inf  # no pair within either set
    assert_array_equal(m.pairs, [[0, 0]])
    assert_allclose(m.prototypes, [[2.5, 3.0]])

    P_b = np.array([[0.0, 1.5], [0.0, 9.0], [9.0, 0.0]])
    m = merge_prototypes(one_a, P_b, np.zeros(2), np.zeros(2))
    assert m.threshold == pytest.approx(7.5)  # only B has pairs: d(b0, b1)
    assert m.matching.shape == (1, 2)
    assert_array_equal(m.pairs, [[0, 0]])
    assert_array_equal(m.b_to_shared, [0, 1, 2])
    assert m.n_shared == 3


def test_mutual_rule_drops_a_pair_whose_b_prototype_is_nearer_another_a():
    # b1 lies between a0 and a1, nearer a0; the Hungarian pairs it with a1 (a0 is taken by
    # b0) at 2.1, under Eq. 9's threshold min(4, d(b0, b1) = 2.4).
    P_a = np.array([[0.0, 0.0], [4.0, 0.0]])
    P_b = np.array([[-0.5, 0.0], [1.9, 0.0]])
    eq9 = merge_prototypes(P_a, P_b, np.zeros(2), np.zeros(2))
    assert eq9.threshold == pytest.approx(2.4)
    assert_allclose(eq9.matched_distances, [0.5, 2.1])
    assert_array_equal(eq9.pairs, [[0, 0], [1, 1]])
    mutual = merge_prototypes(P_a, P_b, np.zeros(2), np.zeros(2), rule="mutual")
    assert_array_equal(mutual.matching, eq9.matching)
    assert_array_equal(mutual.merge_mask, [True, False])
    assert_array_equal(mutual.pairs, [[0, 0]])
    assert_allclose(mutual.prototypes, [[-0.25, 0.0], [4.0, 0.0], [1.9, 0.0]])
    assert_array_equal(mutual.b_to_shared, [0, 2])
    # mutual nearest pairs under the threshold merge as under Eq. 9
    P_b = np.array([[0.5, 0.0], [3.5, 0.0]])
    assert_array_equal(merge_prototypes(P_a, P_b, np.zeros(2), np.zeros(2), rule="mutual").pairs,
                       [[0, 0], [1, 1]])


def test_merge_errors():
    with pytest.raises(ValueError, match="'rule' parameter of merge_prototypes must be"):
        merge_prototypes(np.ones((2, 2)), np.ones((2, 2)), np.zeros(2), np.zeros(2), rule="x")
    with pytest.raises(ValueError, match="P_a has 2 features but P_b has 3"):
        merge_prototypes(np.ones((2, 2)), np.ones((2, 3)), np.zeros(2), np.zeros(3))
    with pytest.raises(ValueError, match=r"mean_b has shape \(3,\)"):
        merge_prototypes(np.ones((2, 2)), np.ones((2, 2)), np.zeros(2), np.zeros(3))


# --------------------------------------------------------------------------------------
# PrototypeClusterer
# --------------------------------------------------------------------------------------
@parametrize_with_checks(
    [PrototypeClusterer(n_prototypes=3), PrototypeClusterer()], expected_failed_checks={}
)
def test_sklearn_compatible(estimator, check):
    check(estimator)


@pytest.mark.parametrize("merge_rule", ["eq9", "mutual"])
def test_two_domains_merge_shared_categories(merge_rule):
    Xa, ya, Xb, yb = two_domains()
    est = PrototypeClusterer(random_state=0, merge_rule=merge_rule).fit({"a": Xa, "b": Xb})
    assert est.domains_ == ["a", "b"]
    assert est.n_prototypes_ == {"a": 4, "b": 5}
    # Categories 0..3 merge; B's private category 5 is kept: 4 + 1 shared prototypes.
    assert est.merged_pairs_.shape == (4, 2)
    assert est.cluster_centers_.shape == (5, 32)
    labels_a, labels_b = est.labels_[: len(ya)], est.labels_[len(ya) :]
    assert adjusted_rand_score(ya, labels_a) == 1.0
    assert adjusted_rand_score(yb, labels_b) == 1.0
    # The same category gets the same shared id in both domains; the private one differs.
    id_of = {c: labels_a[ya == c][0] for c in range(4)}
    for c in range(4):
        assert set(labels_b[yb == c]) == {id_of[c]}
    assert labels_b[yb == 5][0] not in id_of.values()
    # merged pairs link the local k-means clusters of one category.
    for a_idx, b_idx in est.merged_pairs_:
        assert est.local_to_shared_["a"][a_idx] == est.local_to_shared_["b"][b_idx]


def test_domain_frames_and_means():
    Xa, _, Xb, _ = two_domains()
    est = PrototypeClusterer(n_prototypes=4, random_state=0).fit({"a": Xa, "b": Xb})
    assert_allclose(est.domain_means_["a"], l2_normalize(Xa).mean(axis=0), rtol=1e-5)
    assert_allclose(est.domain_centers_["a"], est.cluster_centers_)
    shift = est.domain_means_["b"] - est.domain_means_["a"]
    assert_allclose(
        est.domain_centers_["b"] - est.cluster_centers_,
        np.tile(shift, (len(est.cluster_centers_), 1)),
        atol=1e-6,
    )


def test_predict_transform_shapes_and_frames():
    Xa, _, Xb, _ = two_domains()
    X, d = pack_domains({"a": Xa, "b": Xb})
    est = PrototypeClusterer(random_state=0).fit(X, sample_domain=d)
    S = est.transform(X, sample_domain=d)
    n_shared = len(est.cluster_centers_)
    assert S.shape == (len(X), n_shared) and S.dtype == np.float32
    assert np.all(np.abs(S) <= 1 + 1e-6)
    labels = est.predict(X, sample_domain=d)
    assert_array_equal(labels, np.argmax(S, axis=1))
    assert_array_equal(labels, est.labels_)
    # Rows of b are scored against the prototypes in b's frame.
    rows_b = d == "b"
    expected = l2_normalize(Xb) @ l2_normalize(est.domain_centers_["b"].astype(float)).T
    assert_allclose(S[rows_b], expected, atol=1e-5)
    # A mapping in gives a mapping out, equal to the flat result.
    out = est.transform({"a": Xa, "b": Xb})
    assert list(out) == ["a", "b"]
    assert_allclose(out["b"], S[rows_b])
    assert_array_equal(est.predict({"b": Xb})["b"], labels[rows_b])
    assert est.get_feature_names_out().shape == (n_shared,)


def test_unseen_domain_uses_first_frame_with_warning():
    Xa, _, Xb, _ = two_domains()
    est = PrototypeClusterer(n_prototypes=4, random_state=0).fit({"a": Xa, "b": Xb})
    with pytest.warns(UserWarning, match=r"\['c'\] were not seen in fit"):
        S = est.transform(Xb, sample_domain=np.full(len(Xb), "c"))
    assert_allclose(S, est.transform(Xb, sample_domain=np.full(len(Xb), "a")))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no domain given: quietly the first frame
        assert_allclose(est.transform(Xb), S)


def test_merge_false_concatenates_translated_prototypes():
    Xa, _, Xb, _ = two_domains()
    est = PrototypeClusterer(n_prototypes=3, merge=False, random_state=0).fit({"a": Xa, "b": Xb})
    assert est.cluster_centers_.shape == (6, 32)
    assert est.merged_pairs_.shape == (0, 2)
    assert_array_equal(est.local_to_shared_["b"], [3, 4, 5])
    # Without merging, A's own centres (A's frame) and B's own centres (B's frame) are the
    # raw unit-norm k-means centroids.
    assert_allclose(np.linalg.norm(est.domain_centers_["a"][:3], axis=1), 1.0, rtol=1e-5)
    assert_allclose(np.linalg.norm(est.domain_centers_["b"][3:], axis=1), 1.0, rtol=1e-5)


def test_three_domains_merge_sequentially():
    Xa, ya, Xb, _yb = two_domains()
    rng = np.random.RandomState(1)
    Xc = np.r_[Xa[ya == 0], Xa[ya == 3]] + 0.01 * rng.normal(size=(60, 32))
    est = PrototypeClusterer(random_state=0).fit({"a": Xa, "b": Xb, "c": Xc})
    assert isinstance(est.merged_pairs_, dict) and list(est.merged_pairs_) == ["b", "c"]
    assert est.merged_pairs_["c"].shape == (2, 2)
    assert len(est.cluster_centers_) == 5  # c brings nothing new
    for domain, pairs in est.merged_pairs_.items():
        assert_array_equal(est.local_to_shared_[domain][pairs[:, 1]], pairs[:, 0])
    labels_c = est.predict(Xc, sample_domain=np.full(60, "c"))
    labels_a = est.predict(Xa, sample_domain=np.full(len(Xa), "a"))
    assert set(labels_c[:30]) == set(labels_a[ya == 0])
    assert set(labels_c[30:]) == set(labels_a[ya == 3])


def test_fit_is_deterministic_and_ignores_y():
    Xa, ya, Xb, yb = two_domains()
    X, d = pack_domains({"a": Xa, "b": Xb})
    y = np.r_[ya, yb]
    a = PrototypeClusterer(random_state=7).fit(X, y, sample_domain=d)
    b = PrototypeClusterer(random_state=7).fit(X, np.random.permutation(y), sample_domain=d)
    assert_array_equal(a.cluster_centers_, b.cluster_centers_)
    assert_array_equal(a.labels_, b.labels_)
    c = pickle.loads(pickle.dumps(a))
    assert_array_equal(c.transform(X, sample_domain=d), a.transform(X, sample_domain=d))


def test_errors():
    Xa, _, Xb, _ = two_domains()
    with pytest.raises(ValueError, match=r"n_prototypes=200 .* domain 'b' \(n_samples=150\)"):
        PrototypeClusterer(n_prototypes=200).fit({"a": np.r_[Xa, Xa], "b": Xb})
    with pytest.raises(ValueError, match="n_prototypes"):
        PrototypeClusterer(n_prototypes="auto").fit(Xa)
    with pytest.raises(TypeError, match="Sparse data"):
        PrototypeClusterer(3).fit(sp.dok_matrix(Xa))
    est = PrototypeClusterer(3).fit(Xa)
    with pytest.raises(ValueError, match="features"):
        est.transform(Xa[:, :5])


def test_pipeline_with_metadata_routing():
    Xa, ya, Xb, yb = two_domains()
    X, y, d = pack_domains({"a": (Xa, ya), "b": (Xb, yb)})
    with sklearn.config_context(enable_metadata_routing=True):
        pipe = make_pipeline(PrototypeClusterer(random_state=0), LogisticRegression(max_iter=500))
        pipe.fit(X, y, sample_domain=d)
        est = pipe[0]
        assert est.domains_ == ["a", "b"]
        assert pipe.score(X, y, sample_domain=d) > 0.95
        direct = PrototypeClusterer(random_state=0).fit(X, sample_domain=d)
        assert_array_equal(est.cluster_centers_, direct.cluster_centers_)

        # fit_transform receives sample_domain as well (custom fit_transform).
        scaled = make_pipeline(PrototypeClusterer(random_state=0), StandardScaler())
        Z = scaled.fit_transform(X, sample_domain=d)
        expected = StandardScaler().fit_transform(direct.transform(X, sample_domain=d))
        assert_allclose(Z, expected, atol=1e-5)


def test_set_output_pandas():
    pd = pytest.importorskip("pandas")
    Xa, _, _, _ = two_domains()
    est = PrototypeClusterer(n_prototypes=3, random_state=0).set_output(transform="pandas")
    out = est.fit_transform(Xa)
    assert isinstance(out, pd.DataFrame)
    assert list(out.columns) == [
        "prototypeclusterer0",
        "prototypeclusterer1",
        "prototypeclusterer2",
    ]


def test_thread_count_does_not_change_the_clusters():
    """The retrievers cluster on one thread (n_threads=1); the result is the same to the
    bit as with every thread, so fits keep their numbers."""
    rng = np.random.RandomState(0)
    X = rng.randn(600, 16).astype(np.float32)
    X[:300, :4] += 3.0
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    many = spherical_kmeans(X, 6, random_state=0)
    one = spherical_kmeans(X, 6, random_state=0, n_threads=1)
    np.testing.assert_array_equal(many[0], one[0])
    np.testing.assert_array_equal(many[1], one[1])
    assert (choose_n_prototypes_elbow(X, k_min=2, k_max=12, random_state=0)
            == choose_n_prototypes_elbow(X, k_min=2, k_max=12, random_state=0, n_threads=1))
