"""Tests of the faiss cosine index (skucdr.neighbors)."""

import pickle
import re
import warnings

import faiss
import joblib
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.neighbors import NearestNeighbors
from sklearn.utils.estimator_checks import parametrize_with_checks

from skucdr.neighbors import FaissCosineIndex, cosine_kneighbors


def _brute_force(queries, gallery, k):
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    g = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
    sim = q @ g.T
    indices = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    return 1.0 - np.take_along_axis(sim, indices, axis=1), indices


def _clustered(n_samples=3000, n_features=32, n_clusters=30, seed=0, return_labels=False):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_clusters, n_features))
    labels = rng.integers(n_clusters, size=n_samples)
    X = (centers[labels] + 0.15 * rng.normal(size=(n_samples, n_features))).astype(np.float32)
    return (X, labels) if return_labels else X


def _recall(indices, exact):
    hits = [np.intersect1d(a, b).size for a, b in zip(indices, exact)]
    return np.sum(hits) / exact.size


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(60, 16)), rng.normal(size=(300, 16))


@pytest.mark.parametrize("batch_size", [7, 8192])
def test_flat_equals_numpy_brute_force(data, batch_size):
    queries, gallery = data
    distances, indices = FaissCosineIndex(batch_size=batch_size).fit(gallery).search(queries, 10)
    ref_dist, ref_ind = _brute_force(queries, gallery, 10)
    assert distances.dtype == np.float32 and indices.dtype == np.int64
    assert distances.shape == indices.shape == (60, 10)
    np.testing.assert_array_equal(indices, ref_ind)
    np.testing.assert_allclose(distances, ref_dist, atol=1e-5)
    assert np.all(np.diff(distances, axis=1) >= 0)


def test_flat_matches_sklearn_kneighbors(data):
    queries, gallery = data
    nn = NearestNeighbors(n_neighbors=5, metric="cosine", algorithm="brute").fit(gallery)
    ref_dist, ref_ind = nn.kneighbors(queries)
    distances, indices = cosine_kneighbors(queries, gallery, 5)
    np.testing.assert_array_equal(indices, ref_ind)
    np.testing.assert_allclose(distances, ref_dist, atol=1e-5)


def test_fit_copies_and_normalises(data):
    _, gallery = data
    original = gallery.copy()
    index = FaissCosineIndex().fit(gallery)
    np.testing.assert_array_equal(gallery, original)
    assert index.embeddings_.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(index.embeddings_, axis=1), 1.0, rtol=1e-6)
    assert (index.n_samples_fit_, index.n_features_in_) == gallery.shape


def test_query_equal_to_gallery_row_is_its_own_nearest(data):
    _, gallery = data
    distances, indices = FaissCosineIndex().fit(gallery).search(3.0 * gallery, 1)
    np.testing.assert_array_equal(indices[:, 0], np.arange(len(gallery)))
    np.testing.assert_allclose(distances[:, 0], 0.0, atol=1e-5)


def test_zero_vectors_and_full_k(data):
    queries, gallery = data
    gallery = gallery[:8].copy()
    gallery[3] = 0.0
    distances, indices = FaissCosineIndex().fit(gallery).search(queries, 8)
    assert np.all(np.sort(indices, axis=1) == np.arange(8))  # every row exactly once
    zero_pos = np.argmax(indices == 3, axis=1)
    np.testing.assert_allclose(distances[np.arange(len(queries)), zero_pos], 1.0, atol=1e-6)


def test_empty_queries(data):
    _, gallery = data
    distances, indices = FaissCosineIndex().fit(gallery).search(np.empty((0, 16)), 3)
    assert distances.shape == indices.shape == (0, 3)


@pytest.mark.parametrize(
    "spec, knobs",
    [("HNSW32", {"ef_search": 64}), ("IVF16,Flat", {"nprobe": 4})],
)
def test_approximate_indexes_have_high_recall(spec, knobs):
    X = _clustered()
    gallery, queries = X[:2500], X[2500:]
    _, exact = FaissCosineIndex().fit(gallery).search(queries, 10)
    distances, indices = FaissCosineIndex(spec, **knobs).fit(gallery).search(queries, 10)
    assert indices.min() >= 0 and indices.max() < len(gallery)
    assert np.all(np.diff(distances, axis=1) >= -1e-6)
    assert _recall(indices, exact) >= 0.9


def test_ivf_pq_returns_valid_neighbours():
    # PQ codes are lossy: within a tight cluster the exact order is lost, but the
    # neighbours must still come from the query's own cluster.
    X, labels = _clustered(n_samples=3000, return_labels=True)
    gallery, queries = X[:2600], X[2600:]
    distances, indices = cosine_kneighbors(queries, gallery, 10, index="IVF8,PQ8x4", nprobe=8)
    assert indices.min() >= 0 and indices.max() < len(gallery)
    assert np.all(np.diff(distances, axis=1) >= -1e-6)
    assert np.mean(labels[:2600][indices] == labels[2600:, None]) >= 0.95


def test_incomplete_approximate_results_fall_back_to_exact():
    X = _clustered(n_samples=400, n_clusters=8)
    index = FaissCosineIndex("IVF8,Flat", nprobe=1).fit(X[:300])
    with pytest.warns(UserWarning, match="Increase nprobe"):
        distances, indices = index.search(X[300:], 300)
    assert np.all(np.sort(indices, axis=1) == np.arange(300))
    ref_dist, _ = _brute_force(X[300:], X[:300], 300)
    np.testing.assert_allclose(distances, ref_dist, atol=1e-5)


def test_set_params_after_fit_changes_search_knobs():
    X = _clustered(n_samples=600)
    index = FaissCosineIndex("IVF8,Flat", nprobe=1).fit(X)
    index.set_params(nprobe=5)
    index.search(X[:3], 2)
    assert faiss.extract_index_ivf(index.index_).nprobe == 5


@pytest.mark.parametrize("dump", ["pickle", "joblib"])
@pytest.mark.parametrize(
    "spec, knobs",
    [("Flat", {}), ("HNSW16", {"n_jobs": 1}), ("IVF8,Flat", {"nprobe": 2, "n_jobs": 1})],
)
def test_pickle_round_trip_is_identical(tmp_path, dump, spec, knobs):
    X = _clustered(n_samples=800)
    index = FaissCosineIndex(spec, **knobs).fit(X[:700])
    expected = index.search(X[700:], 7)
    if dump == "pickle":
        loaded = pickle.loads(pickle.dumps(index))
    else:
        joblib.dump(index, tmp_path / "index.joblib")
        loaded = joblib.load(tmp_path / "index.joblib")
    # the faiss index travels in faiss's own serialization: loaded as it was, no rebuild;
    # an exact index is its rows alone (faiss holds no copy of them)
    if spec == "Flat":
        assert index._index is None and loaded._index is None
    else:
        assert loaded._index is not None and loaded._index is not index._index
        assert index._index is not None  # pickling did not drop it from the original
    np.testing.assert_array_equal(loaded.embeddings_, index.embeddings_)
    rebuilds = []
    loaded._build_index = lambda X: rebuilds.append(X)
    result = loaded.search(X[700:], 7)
    assert not rebuilds
    np.testing.assert_array_equal(result[1], expected[1])
    np.testing.assert_array_equal(result[0], expected[0])


def test_an_exact_index_keeps_one_copy_of_the_rows():
    X = _clustered(n_samples=300)
    index = FaissCosineIndex("Flat").fit(X[:200])
    assert index._index is None  # searched with faiss.knn: no faiss copy of the rows
    index.add(X[200:])
    flat = faiss.IndexFlatIP(X.shape[1])  # the same answers as faiss's exact index
    flat.add(index.embeddings_)
    want = flat.search(np.ascontiguousarray(index.embeddings_[:20]), 5)
    got = index.search(X[:20], 5)
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_allclose(got[0], 1 - want[0], atol=1e-6)
    assert index.index_.ntotal == 300  # built on request, for users who want it


def test_n_jobs_does_not_change_global_thread_count(data):
    queries, gallery = data
    before = faiss.omp_get_max_threads()
    FaissCosineIndex(n_jobs=1).fit(gallery).search(queries, 3)
    assert faiss.omp_get_max_threads() == before


def test_sklearn_conventions():
    index = FaissCosineIndex("HNSW32", ef_search=40)
    assert clone(index).get_params() == index.get_params()
    assert "ef_search=40" in repr(index)
    with pytest.raises(NotFittedError):
        index.search(np.ones((1, 2)), 1)


@parametrize_with_checks([FaissCosineIndex()])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


# ---------------------------------------------------------------- error messages


def test_too_many_neighbours(data):
    queries, gallery = data
    index = FaissCosineIndex().fit(gallery[:5])
    msg = "Expected n_neighbors <= n_samples_fit, but n_neighbors = 6, n_samples_fit = 5"
    with pytest.raises(ValueError, match=re.escape(msg)):
        index.search(queries, 6)


@pytest.mark.parametrize("k, error", [(0, ValueError), (2.0, TypeError), (True, TypeError)])
def test_bad_n_neighbors(data, k, error):
    queries, gallery = data
    with pytest.raises(error, match="n_neighbors"):
        FaissCosineIndex().fit(gallery).search(queries, k)


def test_dimension_mismatch(data):
    _, gallery = data
    msg = "queries have 8 features, but the index was fitted with 16"
    with pytest.raises(ValueError, match=msg):
        FaissCosineIndex().fit(gallery).search(np.ones((2, 8)), 1)


@pytest.mark.parametrize("bad, what", [(np.nan, "NaN"), (np.inf, "infinite")])
def test_non_finite_input(data, bad, what):
    queries, gallery = data
    gallery, queries = gallery.copy(), queries.copy()
    gallery[2, 3] = bad
    with pytest.raises(ValueError, match=f"embeddings contains {what}"):
        FaissCosineIndex().fit(gallery)
    index = FaissCosineIndex().fit(np.nan_to_num(gallery, posinf=0.0))
    queries[0, 0] = bad
    with pytest.raises(ValueError, match=f"queries contains {what}"):
        index.search(queries, 1)


def test_bad_factory_string(data):
    _, gallery = data
    with pytest.raises(ValueError, match="Invalid faiss index factory string 'IVFX,Nope'"):
        FaissCosineIndex("IVFX,Nope").fit(gallery)


@pytest.mark.parametrize(
    "spec, needed",
    [("IVF512,Flat", 512), ("IVF16,PQ4", 256), ("PQ4", 256), ("OPQ4,IVF8,PQ4", 256)],
)
def test_too_few_rows_to_train(data, spec, needed):
    _, gallery = data
    msg = f"needs at least {needed} rows to train, but only 200 were given"
    index = FaissCosineIndex(spec)
    with pytest.raises(ValueError, match=msg):
        index.fit(gallery[:200])
    assert not hasattr(index, "embeddings_")  # a failed fit leaves no fitted state


@pytest.mark.parametrize(
    "spec, knobs, match",
    [("HNSW32", {"nprobe": 4}, "nprobe=4 only applies to IVF"),
     ("IVF4,Flat", {"ef_search": 4}, "ef_search=4 only applies to HNSW"),
     ("Flat", {"nprobe": 4}, "nprobe=4 only applies to IVF")],
)
def test_knob_for_wrong_index_type(data, spec, knobs, match):
    _, gallery = data
    with pytest.raises(ValueError, match=match):
        FaissCosineIndex(spec, **knobs).fit(gallery)


def test_invalid_parameters_and_shapes(data):
    _, gallery = data
    with pytest.raises(ValueError, match="batch_size"):
        FaissCosineIndex(batch_size=0).fit(gallery)
    with pytest.raises(ValueError, match="2D"):
        FaissCosineIndex().fit(gallery[0])
    with pytest.raises(ValueError, match="minimum of 1 is required"):
        FaissCosineIndex().fit(np.empty((0, 4)))


def test_no_warning_for_complete_results(data):
    queries, gallery = data
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        FaissCosineIndex("HNSW16").fit(gallery).search(queries, 5)


def test_auto_index_by_size_and_its_nprobe_follows_the_built_lists(monkeypatch):
    from skucdr import neighbors

    X = _clustered(n_samples=3000)
    assert FaissCosineIndex("auto").fit(X[:500]).index_string_ == "Flat"
    monkeypatch.setattr(neighbors, "AUTO_EXACT_BELOW", 1000)
    index = FaissCosineIndex("auto").fit(X[:1500])
    # 4 * sqrt(1500) = 155 -> 128 lists, one in AUTO_LISTS_PER_PROBE (64) visited: 2
    assert index.index_string_ == "IVF128,Flat"
    assert neighbors.auto_index(1500) == ("IVF128,Flat", 2)
    index.search(X[:3], 5)
    assert faiss.extract_index_ivf(index.index_).nprobe == 2
    index.add(X[1500:])  # 3000 rows would choose 256 lists; the built index has 128
    index.search(X[:3], 5)
    assert faiss.extract_index_ivf(index.index_).nprobe == 2
    assert index.index_string_ == "IVF128,Flat" and index.n_samples_fit_ == 3000
    given = FaissCosineIndex("auto", nprobe=7).fit(X[:1500])
    given.search(X[:3], 5)
    assert faiss.extract_index_ivf(given.index_).nprobe == 7  # a given knob wins
