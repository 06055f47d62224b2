"""Tests of skucdr.model_selection.DomainStratifiedKFold."""

import numpy as np
import pytest
import sklearn
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.model_selection import GridSearchCV, KFold, cross_validate

from skucdr.metrics import make_map_scorer
from skucdr.model_selection import DomainStratifiedKFold


def _sorted_domains(sizes):
    """Domain labels sorted by domain, as pack_domains lays them out."""
    return np.concatenate([np.full(n, name) for name, n in sizes.items()])


class DomainCentering(TransformerMixin, BaseEstimator):
    """Toy domain-aware transformer: subtracts each domain's mean."""

    __metadata_request__fit = {"sample_domain": True}
    __metadata_request__transform = {"sample_domain": True}

    def __init__(self, center=True):
        self.center = center

    def fit(self, X, y=None, *, sample_domain=None):
        sample_domain = np.asarray(sample_domain)
        self.means_ = {
            dom: X[sample_domain == dom].mean(axis=0) for dom in np.unique(sample_domain)
        }
        return self

    def transform(self, X, *, sample_domain=None):
        X = np.array(X, dtype=float)
        sample_domain = np.asarray(sample_domain)
        if self.center:
            for dom in np.unique(sample_domain):
                X[sample_domain == dom] -= self.means_[dom]
        return X


@pytest.mark.parametrize("n_splits", [2, 3, 5])
@pytest.mark.parametrize("shuffle,random_state", [(False, None), (True, 0)])
def test_every_test_fold_holds_every_domain(n_splits, shuffle, random_state):
    d = _sorted_domains({"art": 23, "clipart": 11, "photo": 5})
    X = np.zeros((len(d), 2))
    # The problem being solved: plain KFold on domain-sorted rows gives single-domain folds.
    assert any(len(set(d[test])) == 1 for _, test in KFold(n_splits).split(X))

    cv = DomainStratifiedKFold(n_splits, shuffle=shuffle, random_state=random_state)
    folds = list(cv.split(X, sample_domain=d))
    assert len(folds) == n_splits == cv.get_n_splits()
    seen = np.concatenate([test for _, test in folds])
    assert np.array_equal(np.sort(seen), np.arange(len(d)))  # test folds partition the rows
    for train, test in folds:
        assert set(d[test]) == {"art", "clipart", "photo"}
        assert np.intersect1d(train, test).size == 0
        assert train.size + test.size == len(d)
        # Stratified: each domain's share of the test fold is about 1 / n_splits.
        for name, n in [("art", 23), ("clipart", 11), ("photo", 5)]:
            assert abs((d[test] == name).sum() - n / n_splits) < 1


def test_integer_domains_and_lists():
    d = [0] * 6 + [1] * 4
    folds = list(DomainStratifiedKFold(2).split(np.zeros((10, 3)), sample_domain=d))
    assert all(set(np.asarray(d)[test]) == {0, 1} for _, test in folds)


def test_shuffle_is_seeded():
    d = _sorted_domains({"a": 30, "b": 30})
    X = np.zeros((60, 1))

    def tests(cv):
        return [test.tolist() for _, test in cv.split(X, sample_domain=d)]

    assert tests(DomainStratifiedKFold(3, shuffle=True, random_state=1)) == tests(
        DomainStratifiedKFold(3, shuffle=True, random_state=1)
    )
    assert tests(DomainStratifiedKFold(3, shuffle=True, random_state=1)) != tests(
        DomainStratifiedKFold(3, shuffle=True, random_state=2)
    )
    assert tests(DomainStratifiedKFold(3)) != tests(
        DomainStratifiedKFold(3, shuffle=True, random_state=1)
    )


def test_missing_sample_domain_mentions_routing():
    cv = DomainStratifiedKFold(3)
    with (
        sklearn.config_context(enable_metadata_routing=False),
        pytest.raises(ValueError, match=r"enable_metadata_routing=True.*currently OFF"),
    ):
        next(cv.split(np.zeros((9, 2))))


def test_small_domain_and_shape_errors():
    cv = DomainStratifiedKFold(4)
    d = _sorted_domains({"a": 10, "b": 3})
    with pytest.raises(ValueError, match=r"at least 4 rows per domain.*\{'b': 3\}"):
        next(cv.split(np.zeros((13, 2)), sample_domain=d))
    with pytest.raises(ValueError, match="sample_domain has shape"):
        next(cv.split(np.zeros((12, 2)), sample_domain=d))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"n_splits": 1}, ValueError, "at least 2"),
        ({"n_splits": 2.0}, TypeError, "must be an int"),
        ({"shuffle": "yes"}, TypeError, "shuffle must be"),
        ({"random_state": 0}, ValueError, "shuffle is False"),
    ],
)
def test_parameter_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        DomainStratifiedKFold(**kwargs)


def test_repr_and_metadata_request():
    cv = DomainStratifiedKFold(3, shuffle=True, random_state=0)
    assert repr(cv) == "DomainStratifiedKFold(n_splits=3, random_state=0, shuffle=True)"
    routing = cv.get_metadata_routing()
    assert routing.consumes(method="split", params=["sample_domain", "groups"]) == {"sample_domain"}


@pytest.fixture
def shifted():
    rng = np.random.default_rng(0)
    centers = 3 * rng.normal(size=(3, 4))
    y = np.tile(np.arange(3), 20)
    d = np.repeat(["a", "b"], 30)  # sorted by domain
    X = centers[y] + 0.3 * rng.normal(size=(60, 4)) + np.where(d == "b", 5.0, -5.0)[:, None]
    return X, y, d


def test_cross_validate_with_routing(shifted):
    X, y, d = shifted
    cv = DomainStratifiedKFold(3, shuffle=True, random_state=0)
    with sklearn.config_context(enable_metadata_routing=True):
        result = cross_validate(
            DomainCentering(),
            X,
            y,
            params={"sample_domain": d},
            scoring=make_map_scorer(),
            cv=cv,
            return_indices=True,
            error_score="raise",
        )
    for test in result["indices"]["test"]:
        assert set(d[test]) == {"a", "b"}
    assert np.all(np.isfinite(result["test_score"])) and np.all(result["test_score"] > 0.9)


def test_grid_search_with_routing(shifted):
    X, y, d = shifted
    with sklearn.config_context(enable_metadata_routing=True):
        search = GridSearchCV(
            DomainCentering(),
            {"center": [False, True]},
            scoring=make_map_scorer(),
            cv=DomainStratifiedKFold(4),
            error_score="raise",
        ).fit(X, y, sample_domain=d)
    assert search.n_splits_ == 4
    assert search.best_params_ == {"center": True}


def test_cross_validate_without_routing_raises_clear_error(shifted):
    X, y, _ = shifted
    with (
        sklearn.config_context(enable_metadata_routing=False),
        pytest.raises(ValueError, match="currently OFF"),
    ):
        cross_validate(
            DomainCentering(), X, y, scoring=make_map_scorer(), cv=DomainStratifiedKFold(3)
        )



def test_parallel_fits_equal_sequential_fits_at_equal_threads():
    """joblib's workers run torch on cpu_count // n_jobs threads each: sequential fits on
    that many threads give the same models to the bit, so GridSearchCV's scores do not
    depend on n_jobs (docs/estimators.md, "Threads"); on other thread counts they differ."""
    import joblib
    import torch

    from skucdr import UniversalCDRRetriever

    rng = np.random.RandomState(0)
    X = rng.rand(96, 3 * 16 * 16).astype(np.float32)
    d = np.repeat(["a", "b"], 48)
    cv = DomainStratifiedKFold(n_splits=2, shuffle=True, random_state=0)
    est = UniversalCDRRetriever(n_components=4, max_epochs=2, batch_size=8, device="cpu",
                                image_shape=(3, 16, 16), random_state=0)

    def embeddings(n_jobs):
        with sklearn.config_context(enable_metadata_routing=True):
            fitted = cross_validate(est, X, params={"sample_domain": d}, cv=cv, n_jobs=n_jobs,
                                    scoring=lambda *a, **k: 0.0, return_estimator=True)
        return np.stack([e.transform(X, sample_domain=d) for e in fitted["estimator"]])

    threads = torch.get_num_threads()
    worker_threads = max(1, joblib.cpu_count() // 2)
    try:
        torch.set_num_threads(worker_threads)
        sequential, parallel = embeddings(1), embeddings(2)
        torch.set_num_threads(worker_threads + 1)
        other_threads = embeddings(1)
    finally:
        torch.set_num_threads(threads)
    np.testing.assert_array_equal(sequential, parallel)
    assert np.abs(other_threads - sequential).max() > 0
