"""Label-free scores of embeddings and their scorer for model selection."""

import numpy as np
import pytest
import sklearn
from sklearn.model_selection import GridSearchCV

from skucdr import UniversalCDRRetriever
from skucdr.label_free import mutual_neighbor_rate
from skucdr.metrics import make_label_free_scorer, make_map_scorer
from skucdr.model_selection import DomainStratifiedKFold


def _clusters(seed=0, n_per=30, n_classes=4, dim=8, noise=0.1, shift=0.0):
    rng = np.random.RandomState(seed)
    centres = rng.randn(n_classes, dim)
    y = np.repeat(np.arange(n_classes), n_per)
    A = centres[y] + noise * rng.randn(len(y), dim)
    B = centres[y] + noise * rng.randn(len(y), dim) + shift
    return np.vstack([A, B]), np.repeat(["a", "b"], len(y))


def test_a_copy_of_a_domain_is_perfectly_consistent():
    A = np.random.RandomState(0).randn(40, 6)
    Z, d = np.vstack([A, A]), np.repeat(["a", "b"], 40)
    assert mutual_neighbor_rate(Z, d) == 1.0


def test_aligned_clusters_beat_domains_apart():
    aligned, d = _clusters()
    apart, _ = _clusters(shift=3.0)  # the same clusters, each domain moved off the other
    assert mutual_neighbor_rate(aligned, d) > mutual_neighbor_rate(apart, d)


def test_scores_ignore_row_order_and_scale():
    Z, d = _clusters(seed=1)
    order = np.random.RandomState(2).permutation(len(Z))
    score = mutual_neighbor_rate
    assert score(Z[order], d[order]) == pytest.approx(score(Z, d))
    assert score(3.0 * Z, d) == pytest.approx(score(Z, d))
    assert 0.0 <= score(Z, d) <= 1.0


def test_bad_input_is_named():
    Z, d = _clusters()
    with pytest.raises(ValueError, match="at least 2 domains"):
        mutual_neighbor_rate(Z, np.zeros(len(Z), dtype=int))
    with pytest.raises(TypeError, match="names \\(str\\) or ints, got dtype float64"):
        mutual_neighbor_rate(Z, np.zeros(len(Z)))
    with pytest.raises(TypeError, match="not a mapping"):
        mutual_neighbor_rate({"a": Z}, None)
    with pytest.raises(ValueError, match="Complex data"):
        mutual_neighbor_rate(Z.astype(complex), d)
    with pytest.raises(ValueError, match="one domain label per row of Z"):
        mutual_neighbor_rate(Z, d[:-1])
    with pytest.raises(ValueError, match="sample_domain is required"):
        mutual_neighbor_rate(Z, None)
    bad = Z.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        mutual_neighbor_rate(bad, d)
    with pytest.raises(ValueError, match="dim 3"):
        mutual_neighbor_rate(Z[None], d)


def test_label_free_scorer_selects_without_labels_in_grid_search():
    Z, d = _clusters(n_per=12, dim=6)
    X = Z.astype(np.float32)
    search = GridSearchCV(
        UniversalCDRRetriever(n_components=4, max_epochs=1, batch_size=8, n_prototypes=2,
                              device="cpu", random_state=0),
        {"tau": [0.07, 0.5]}, scoring=make_label_free_scorer(),
        cv=DomainStratifiedKFold(n_splits=2, shuffle=True, random_state=0))
    with sklearn.config_context(enable_metadata_routing=True):
        search.fit(X, sample_domain=d)  # no y anywhere
    scores = search.cv_results_["mean_test_score"]
    assert np.isfinite(scores).all() and ((0 <= scores) & (scores <= 1)).all()
    assert repr(make_label_free_scorer()) == "make_label_free_scorer()"
    with pytest.raises(ValueError, match="received no sample_domain"):
        make_label_free_scorer()(search.best_estimator_, X)
    with pytest.raises(ValueError, match="use make_label_free_scorer"):
        make_map_scorer()(search.best_estimator_, X, None, sample_domain=d)
