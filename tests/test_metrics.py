"""Tests of skucdr.metrics against brute-force reference implementations."""

import re
import warnings

import numpy as np
import pytest
import sklearn
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.decomposition import PCA
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.model_selection import GridSearchCV, cross_validate

from skucdr import metrics
from skucdr.metrics import (
    RetrievalReport,
    cross_domain_map,
    make_map_scorer,
    mean_average_precision,
    precision_at_k,
    retrieval_report,
)
from skucdr.model_selection import DomainStratifiedKFold

# --------------------------------------------------------------------------------------
# Brute-force references: one query at a time, from the definitions
# --------------------------------------------------------------------------------------


def _ref_ranking(q, gallery):
    """Gallery indices by decreasing cosine similarity, ties by increasing index."""
    q = np.asarray(q, dtype=np.float64)
    sims = []
    for j, g in enumerate(np.asarray(gallery, dtype=np.float64)):
        denom = np.linalg.norm(q) * np.linalg.norm(g)
        sims.append((-(float(q @ g) / denom if denom else 0.0), j))
    return [j for _, j in sorted(sims)]


def _ref_ap(relevant, n_relevant, k, interpolated):
    relevant = relevant[:k] if k is not None else relevant
    norm = min(len(relevant), n_relevant)
    precisions, hits = [], 0
    for rank, rel in enumerate(relevant, start=1):
        hits += rel
        precisions.append(hits / rank)
    if interpolated:
        for i in range(len(precisions) - 2, -1, -1):
            precisions[i] = max(precisions[i], precisions[i + 1])
    return sum(p for p, rel in zip(precisions, relevant) if rel) / norm


def _ref_map(Q, qy, G, gy, k=None, average="query", interpolated=False):
    per_class = {}
    aps = []
    for q, label in zip(Q, qy):
        n_relevant = int(sum(g == label for g in gy))
        if n_relevant == 0:  # excluded query
            continue
        relevant = [gy[j] == label for j in _ref_ranking(q, G)]
        ap = _ref_ap(relevant, n_relevant, k, interpolated)
        aps.append(ap)
        per_class.setdefault(label, []).append(ap)
    if average == "query":
        return float(np.mean(aps))
    return float(np.mean([np.mean(v) for v in per_class.values()]))


def _ref_coda_voc(Q, qy, G, gy):
    """CoDA's cal_map_sda / eval_AP_inner / VOCap, transcribed, with a stable order."""
    per_class = {}
    for q, label in zip(Q, qy):
        flags = np.array([gy[j] == label for j in _ref_ranking(q, G)])
        tot_pos = flags.sum()
        if tot_pos == 0:
            continue
        tp = np.cumsum(flags)
        fp = np.cumsum(~flags)
        rec, prec = tp / tot_pos, tp / (tp + fp)
        mrec = np.concatenate([[0], rec, [1]])
        mpre = np.concatenate([[0], prec, [0]])
        for i in range(len(mpre) - 2, -1, -1):
            mpre[i] = max(mpre[i], mpre[i + 1])
        msk = mrec[1:] != mrec[:-1]
        per_class.setdefault(label, []).append(
            np.sum((mrec[1:][msk] - mrec[:-1][msk]) * mpre[1:][msk])
        )
    return float(np.mean([np.nanmean(v) for v in per_class.values()]))


def _ref_precision(Q, qy, G, gy, k):
    hits = total = 0
    for q, label in zip(Q, qy):
        n_relevant = int(sum(g == label for g in gy))
        cut = min(k, n_relevant)
        ranking = _ref_ranking(q, G)
        hits += sum(gy[j] == label for j in ranking[:cut])
        total += cut
    return hits / total


@pytest.fixture
def data():
    """Queries and gallery with 5 shared classes, a structured signal, and one query class
    (5) absent from the gallery."""
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(6, 8))
    qy = rng.integers(0, 6, size=70)
    gy = rng.integers(0, 5, size=90)
    Q = centers[qy] + 1.5 * rng.normal(size=(70, 8))
    G = centers[gy] + 1.5 * rng.normal(size=(90, 8))
    assert (qy == 5).any()
    return Q, qy, G, gy


@pytest.fixture
def tie_data():
    """Embeddings with massive exact ties: one-hot rows and a constant row (similarities
    0, 0.5 or 1, exact in float32 and float64)."""
    rng = np.random.default_rng(1)
    basis = np.vstack([np.eye(4), np.ones((1, 4))])
    Q = basis[rng.integers(0, 5, size=25)]
    G = basis[rng.integers(0, 5, size=40)]
    return Q, rng.integers(0, 3, size=25), G, rng.integers(0, 3, size=40)


# --------------------------------------------------------------------------------------
# mean_average_precision / precision_at_k
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("average", ["query", "class"])
@pytest.mark.parametrize("interpolated", [False, True])
def test_map_matches_reference(data, average, interpolated):
    score = mean_average_precision(*data, average=average, interpolated=interpolated)
    assert score == pytest.approx(_ref_map(*data, None, average, interpolated), abs=1e-6)


def test_coda_variant_matches_transcribed_coda_code(data):
    score = mean_average_precision(*data, average="class", interpolated=True)
    assert score == pytest.approx(_ref_coda_voc(*data), abs=1e-6)
    # The envelope never lowers AP.
    assert score >= mean_average_precision(*data, average="class") - 1e-12


@pytest.mark.parametrize("k", [1, 7, 30])
@pytest.mark.parametrize("interpolated", [False, True])
def test_map_at_k_matches_reference(data, k, interpolated):
    score = mean_average_precision(*data, k=k, interpolated=interpolated)
    assert score == pytest.approx(_ref_map(*data, k, "query", interpolated), abs=1e-6)


def test_map_at_k_beyond_gallery_is_map_at_all(data):
    assert mean_average_precision(*data, k=10_000) == pytest.approx(
        mean_average_precision(*data), abs=1e-12
    )


def test_precision_matches_reference(data):
    result = precision_at_k(*data)
    assert set(result) == {1, 5, 15}
    for k, value in result.items():
        assert value == pytest.approx(_ref_precision(*data, k), abs=1e-6)
    assert isinstance(precision_at_k(*data, k=5), float)
    assert precision_at_k(*data, k=5) == pytest.approx(result[5])
    # k larger than the gallery: every relevant item is within the top R_q.
    assert precision_at_k(*data, k=500) == pytest.approx(_ref_precision(*data, 500), abs=1e-6)


def test_ties_are_broken_by_gallery_index():
    Q = np.array([[1.0, 0.0]])
    G = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [3.0, 0.0]])  # rows 0, 1, 3 tie
    # Ranking 0, 1, 3, 2: relevant items (label 0) at ranks 2 and 3.
    assert mean_average_precision(Q, [0], G, [1, 0, 1, 0]) == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert mean_average_precision(Q, [0], G, [0, 1, 1, 0]) == pytest.approx((1 + 2 / 3) / 2)
    assert precision_at_k(Q, [0], G, [1, 0, 1, 0], k=1) == 0.0


@pytest.mark.parametrize("average,interpolated", [("query", False), ("class", True)])
def test_ties_match_reference(tie_data, average, interpolated):
    got = mean_average_precision(*tie_data, average=average, interpolated=interpolated)
    assert got == pytest.approx(_ref_map(*tie_data, None, average, interpolated), abs=1e-6)
    got_k = mean_average_precision(*tie_data, k=6)
    assert got_k == pytest.approx(_ref_map(*tie_data, 6), abs=1e-6)
    for k, value in precision_at_k(*tie_data).items():
        assert value == pytest.approx(_ref_precision(*tie_data, k), abs=1e-6)


def test_absent_label_queries_are_excluded(data):
    Q, qy, G, gy = data
    kept = qy != 5
    for kwargs in ({}, {"average": "class", "interpolated": True}, {"k": 5}):
        assert mean_average_precision(Q, qy, G, gy, **kwargs) == pytest.approx(
            mean_average_precision(Q[kept], qy[kept], G, gy, **kwargs), abs=1e-12
        )
    assert precision_at_k(Q, qy, G, gy) == pytest.approx(
        precision_at_k(Q[kept], qy[kept], G, gy), abs=1e-12
    )


def test_no_valid_query_gives_nan_with_warning(data):
    Q, _, G, gy = data
    qy = np.full(len(Q), 99)
    with pytest.warns(UndefinedMetricWarning, match="No query has a label"):
        assert np.isnan(mean_average_precision(Q, qy, G, gy))
    with pytest.warns(UndefinedMetricWarning):
        assert np.isnan(precision_at_k(Q, qy, G, gy, k=1))


@pytest.mark.parametrize("chunk", [1, 90 * 3, 90 * 64])
def test_chunking_does_not_change_results(data, monkeypatch, chunk):
    expected = {
        "map": mean_average_precision(*data),
        "coda": mean_average_precision(*data, average="class", interpolated=True),
        "map_k": mean_average_precision(*data, k=9, interpolated=True),
        "p": precision_at_k(*data),
    }
    monkeypatch.setattr(metrics._ranking, "_CHUNK_ELEMENTS", chunk)
    assert mean_average_precision(*data) == pytest.approx(expected["map"], abs=1e-12)
    assert mean_average_precision(*data, average="class", interpolated=True) == pytest.approx(
        expected["coda"], abs=1e-12
    )
    assert mean_average_precision(*data, k=9, interpolated=True) == pytest.approx(
        expected["map_k"], abs=1e-12
    )
    assert precision_at_k(*data) == expected["p"]


def test_perfect_retrieval_and_cosine_invariance(data):
    Q, qy, G, gy = data
    one_hot = np.eye(6)
    assert mean_average_precision(one_hot[qy], qy, one_hot[gy], gy) == 1.0
    assert precision_at_k(one_hot[qy], qy, one_hot[gy], gy, k=(1, 15)) == {1: 1.0, 15: 1.0}
    # Cosine similarity: positive row scalings and float32 input change nothing.
    scales = np.random.default_rng(3).uniform(0.1, 10, size=(len(Q), 1))
    assert mean_average_precision((Q * scales).astype(np.float32), qy, G, gy) == pytest.approx(
        mean_average_precision(Q, qy, G, gy), abs=1e-6
    )


def test_string_labels(data):
    Q, qy, G, gy = data
    names = np.array(list("abcdef"))
    assert mean_average_precision(Q, names[qy], G, names[gy]) == pytest.approx(
        mean_average_precision(Q, qy, G, gy), abs=1e-12
    )
    assert mean_average_precision(Q, list(names[qy]), G, names[gy].astype(object)) == (
        pytest.approx(mean_average_precision(Q, qy, G, gy), abs=1e-12)
    )


@pytest.mark.parametrize(
    "change, error, match",
    [
        (lambda Q, qy, G, gy: (Q[:, :3], qy, G, gy), ValueError, "3 features per row but"),
        (lambda Q, qy, G, gy: (Q[:0], qy[:0], G, gy), ValueError, "minimum of 1 is required"),
        (lambda Q, qy, G, gy: (Q, qy, G[:0], gy[:0]), ValueError, "minimum of 1 is required"),
        (lambda Q, qy, G, gy: (np.where(Q > 1, np.nan, Q), qy, G, gy), ValueError, "NaN"),
        (lambda Q, qy, G, gy: (Q, qy[:-1], G, gy), ValueError, "query_labels has shape"),
        (lambda Q, qy, G, gy: (Q, qy, G, gy[:, None]), ValueError, "gallery_labels has shape"),
        (lambda Q, qy, G, gy: (Q[0], qy[:1], G, gy), ValueError, "Expected 2D array"),
        (lambda Q, qy, G, gy: (Q, qy.astype(str), G, gy), TypeError, "comparable"),
        (lambda Q, qy, G, gy: (Q, qy, G, gy.astype(float) * np.nan), ValueError, "NaN"),
    ],
)
def test_input_validation(change, error, match):
    rng = np.random.default_rng(0)
    args = (rng.normal(size=(5, 4)), np.arange(5), rng.normal(size=(6, 4)), np.arange(6) % 5)
    with pytest.raises(error, match=match):
        mean_average_precision(*change(*args))
    with pytest.raises(error, match=match):
        precision_at_k(*change(*args))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"average": "macro"}, "'average' parameter of mean_average_precision must be"),
        ({"k": 0}, "'k' parameter of mean_average_precision must be an int in the range"),
        ({"k": 2.5}, "'k' parameter"),
        ({"interpolated": "yes"}, "'interpolated' parameter"),
    ],
)
def test_map_parameter_validation(data, kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        mean_average_precision(*data, **kwargs)


@pytest.mark.parametrize("k", [0, (), (1, -5), 1.5, "5"])
def test_precision_k_validation(data, k):
    # scikit-learn's validate_params, or for a sequence, the check of its items
    with pytest.raises(ValueError, match="k must be an int|'k' parameter of precision_at_k"):
        precision_at_k(*data, k=k)


# --------------------------------------------------------------------------------------
# Domain pairs: cross_domain_map and retrieval_report
# --------------------------------------------------------------------------------------


@pytest.fixture
def domains():
    """Three domains sharing 4 classes; domain 'c' lacks class 3."""
    rng = np.random.default_rng(5)
    centers = rng.normal(size=(4, 6))
    parts = []
    for name, n, shift in [("a", 40, 0.0), ("b", 30, 1.0), ("c", 35, -1.0)]:
        y = rng.integers(0, 3 if name == "c" else 4, size=n)
        parts.append((centers[y] + shift + rng.normal(size=(n, 6)), y, np.full(n, name)))
    Z, y, d = (np.concatenate(p) for p in zip(*parts))
    return Z, y, d


def _pair(Z, y, d, a, b):
    return Z[d == a], y[d == a], Z[d == b], y[d == b]


def test_cross_domain_map_is_mean_over_ordered_pairs(domains):
    Z, y, d = domains
    pairs = [(a, b) for a in "abc" for b in "abc" if a != b]
    for kwargs in ({}, {"average": "class", "interpolated": True}, {"k": 10}):
        expected = np.mean(
            [mean_average_precision(*_pair(Z, y, d, a, b), **kwargs) for a, b in pairs]
        )
        assert cross_domain_map(Z, y, d, **kwargs) == pytest.approx(expected, abs=1e-12)


def test_cross_domain_map_restricted_domains(domains):
    Z, y, d = domains
    assert cross_domain_map(Z, y, d, query_domain="a", gallery_domain="b") == pytest.approx(
        mean_average_precision(*_pair(Z, y, d, "a", "b")), abs=1e-12
    )
    expected = np.mean([mean_average_precision(*_pair(Z, y, d, "a", b)) for b in "bc"])
    assert cross_domain_map(Z, y, d, query_domain=["a"]) == pytest.approx(expected, abs=1e-12)
    expected = np.mean([mean_average_precision(*_pair(Z, y, d, a, "c")) for a in "ab"])
    assert cross_domain_map(Z, y, d, gallery_domain="c") == pytest.approx(expected, abs=1e-12)


def test_cross_domain_map_errors(domains):
    Z, y, d = domains
    with pytest.raises(ValueError, match=r"query_domain \['x'\] not found"):
        cross_domain_map(Z, y, d, query_domain="x")
    with pytest.raises(ValueError, match="at least one ordered pair"):
        cross_domain_map(Z[d == "a"], y[d == "a"], d[d == "a"])
    with pytest.raises(ValueError, match="at least one ordered pair"):
        cross_domain_map(Z, y, d, query_domain="a", gallery_domain="a")
    with pytest.raises(ValueError, match="sample_domain has shape"):
        cross_domain_map(Z, y, d[:-1])


def test_cross_domain_map_skips_undefined_pairs(domains):
    Z, y, d = domains
    y = np.where(d == "b", 10 + y, y)  # domain b shares no class with the others
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        score = cross_domain_map(Z, y, d)
    messages = sorted(str(w.message) for w in caught if w.category is UndefinedMetricWarning)
    assert len(messages) == 4 and all("is skipped" in m for m in messages)
    assert "'a' -> 'b'" in messages[0]
    expected = np.mean([mean_average_precision(*_pair(Z, y, d, a, b)) for a, b in ["ac", "ca"]])
    assert score == pytest.approx(expected, abs=1e-12)


def test_retrieval_report_rows(domains):
    Z, y, d = domains
    report = retrieval_report(Z, y, d)
    assert isinstance(report, RetrievalReport)
    assert [(r["query_domain"], r["gallery_domain"]) for r in report.rows] == [
        ("a", "b"),
        ("a", "c"),
        ("b", "a"),
        ("b", "c"),
        ("c", "a"),
        ("c", "b"),
    ]
    for row in report.rows:
        args = _pair(Z, y, d, row["query_domain"], row["gallery_domain"])
        assert row["map_all"] == pytest.approx(mean_average_precision(*args), abs=1e-12)
        assert row["map_class_interp"] == pytest.approx(
            mean_average_precision(*args, average="class", interpolated=True), abs=1e-12
        )
        precision = precision_at_k(*args)
        for k in (1, 5, 15):
            assert row[f"p@{k}"] == pytest.approx(precision[k], abs=1e-12)
        # n_queries counts the scored queries: 'a' and 'b' queries of class 3 are not
        # scored against 'c', which has no class 3.
        q_labels, g_labels = args[1], args[3]
        assert row["n_queries"] == int(np.isin(q_labels, g_labels).sum())
        assert row["n_gallery"] == len(g_labels)
    assert report.rows[1]["n_queries"] < (d == "a").sum()
    mean = report.mean
    assert mean["map_all"] == pytest.approx(np.mean([r["map_all"] for r in report.rows]))
    assert mean["map_all"] == pytest.approx(cross_domain_map(Z, y, d), abs=1e-12)


def test_retrieval_report_text(domains):
    Z, y, d = domains
    report = retrieval_report(Z, y, d, k=(1, 5), pairs=[("a", "b"), ("b", "a")])
    assert len(report.rows) == 2 and report.k == (1, 5)
    text = str(report)
    lines = text.splitlines()
    assert "mAP@All" in lines[0] and "P@5" in lines[0] and "P@15" not in lines[0]
    assert lines[-1].startswith("mean")
    assert f"{report.mean['map_all']:.4f}" in lines[-1]
    assert f"{report.rows[0]['p@1']:.4f}" in text
    assert len({len(line) for line in lines[:-1] if not line.startswith("-")}) >= 1
    assert repr(report) == text
    markdown = report.to_markdown().splitlines()
    assert len(markdown) == 2 + 2 + 1 and markdown[0].startswith("| query")
    assert markdown[-1].startswith("| mean")


def test_retrieval_report_to_frame(domains):
    pd = pytest.importorskip("pandas")
    frame = retrieval_report(*domains).to_frame()
    assert isinstance(frame, pd.DataFrame) and len(frame) == 6
    assert {"map_all", "map_class_interp", "p@1", "p@5", "p@15", "n_queries"} <= set(frame)


def test_retrieval_report_bad_pairs(domains):
    with pytest.raises(ValueError, match="must differ"):
        retrieval_report(*domains, pairs=[("a", "a")])
    with pytest.raises(ValueError, match="not found"):
        retrieval_report(*domains, pairs=[("a", "z")])
    with pytest.raises(ValueError, match="pairs must hold"):
        retrieval_report(*domains, pairs=["ab"])


# --------------------------------------------------------------------------------------
# make_map_scorer and metadata routing
# --------------------------------------------------------------------------------------


class DomainCentering(TransformerMixin, BaseEstimator):
    """Toy domain-aware transformer: subtracts each domain's mean when ``center``."""

    __metadata_request__fit = {"sample_domain": True}
    __metadata_request__transform = {"sample_domain": True}

    def __init__(self, center=True):
        self.center = center

    def fit(self, X, y=None, *, sample_domain=None):
        X = np.asarray(X, dtype=float)
        sample_domain = np.zeros(len(X)) if sample_domain is None else np.asarray(sample_domain)
        self.means_ = {
            dom: X[sample_domain == dom].mean(axis=0) for dom in np.unique(sample_domain)
        }
        return self

    def transform(self, X, *, sample_domain=None):
        X = np.asarray(X, dtype=float).copy()
        if self.center:
            sample_domain = np.zeros(len(X)) if sample_domain is None else np.asarray(sample_domain)
            for dom in np.unique(sample_domain):
                X[sample_domain == dom] -= self.means_[dom]
        return X

    def fit_transform(self, X, y=None, *, sample_domain=None):
        return self.fit(X, y, sample_domain=sample_domain).transform(X, sample_domain=sample_domain)


@pytest.fixture
def shifted():
    """Two domains with a large offset: centering is needed to retrieve across them."""
    rng = np.random.default_rng(7)
    centers = rng.normal(size=(3, 5))
    y = np.tile(np.arange(3), 30)
    d = np.repeat(["photo", "sketch"], 45)  # sorted by domain
    X = (
        3 * centers[y]
        + 0.3 * rng.normal(size=(90, 5))
        + np.where(d == "sketch", 6.0, -6.0)[:, None]
    )
    return X, y, d


def test_scorer_value_and_repr(shifted):
    X, y, d = shifted
    est = DomainCentering().fit(X, sample_domain=d)
    scorer = make_map_scorer(average="class", interpolated=True)
    expected = cross_domain_map(
        est.transform(X, sample_domain=d), y, d, average="class", interpolated=True
    )
    assert scorer(est, X, y, sample_domain=d) == pytest.approx(expected, abs=1e-12)
    assert repr(scorer) == "make_map_scorer(average='class', interpolated=True)"
    assert repr(make_map_scorer()) == "make_map_scorer()"
    assert "query_domain='photo'" in repr(make_map_scorer(query_domain="photo"))
    routing = scorer.get_metadata_routing()
    assert routing.consumes(method="score", params=["sample_domain"]) == {"sample_domain"}


def test_scorer_in_grid_search_with_routing(shifted):
    X, y, d = shifted
    scorer = make_map_scorer()
    cv = DomainStratifiedKFold(n_splits=3)
    with sklearn.config_context(enable_metadata_routing=True):
        search = GridSearchCV(
            DomainCentering(), {"center": [False, True]}, scoring=scorer, cv=cv, error_score="raise"
        ).fit(X, y, sample_domain=d)
    assert search.best_params_ == {"center": True}
    scores = search.cv_results_["mean_test_score"]
    assert scores[1] > 0.95 and scores[0] < scores[1]
    # The score of one fold equals the metric computed by hand on that fold.
    train, test = next(cv.split(X, sample_domain=d))
    est = DomainCentering(center=True).fit(X[train], sample_domain=d[train])
    expected = cross_domain_map(est.transform(X[test], sample_domain=d[test]), y[test], d[test])
    assert search.cv_results_["split0_test_score"][1] == pytest.approx(expected, abs=1e-12)


def test_scorer_in_cross_validate_with_routing(shifted):
    X, y, d = shifted
    with sklearn.config_context(enable_metadata_routing=True):
        result = cross_validate(
            DomainCentering(),
            X,
            y,
            params={"sample_domain": d},
            scoring={
                "map": make_map_scorer(),
                "coda": make_map_scorer(average="class", interpolated=True),
            },
            cv=DomainStratifiedKFold(n_splits=3, shuffle=True, random_state=0),
            error_score="raise",
        )
    assert np.all(result["test_map"] > 0.9)
    assert np.all(result["test_coda"] >= result["test_map"] - 0.1)


def test_scorer_without_routing_raises_clear_error(shifted):
    X, y, d = shifted
    est = DomainCentering().fit(X, sample_domain=d)
    scorer = make_map_scorer()
    with sklearn.config_context(enable_metadata_routing=False):
        with pytest.raises(ValueError, match=re.escape("set_config(enable_metadata_routing=True)")):
            scorer(est, X, y)
        with pytest.raises(ValueError, match="currently OFF"):
            GridSearchCV(
                DomainCentering(), {"center": [True]}, scoring=scorer, cv=3, error_score="raise"
            ).fit(X, y, sample_domain=d)
    with (
        sklearn.config_context(enable_metadata_routing=True),
        pytest.raises(ValueError, match="currently on"),
    ):
        scorer(est, X, y)


def test_scorer_other_errors(shifted):
    X, y, d = shifted
    est = DomainCentering().fit(X, sample_domain=d)
    with pytest.raises(ValueError, match="needs the class labels"):
        make_map_scorer()(est, X, None, sample_domain=d)
    with pytest.raises(TypeError, match="unexpected metadata"):
        make_map_scorer()(est, X, y, sample_domain=d, sample_weight=np.ones(len(y)))
    with pytest.raises(ValueError, match="average must be one of"):
        make_map_scorer(average="micro")


def test_scorer_with_domain_agnostic_transformer(shifted):
    X, y, d = shifted
    pca = PCA(n_components=3).fit(X)
    assert make_map_scorer()(pca, X, y, sample_domain=d) == pytest.approx(
        cross_domain_map(pca.transform(X), y, d), abs=1e-12
    )


def test_import_does_not_enable_routing():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        import skucdr.metrics  # noqa: F401
    assert sklearn.get_config()["enable_metadata_routing"] is False


def test_scorer_with_pipelines(shifted):
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y, d = shifted
    with sklearn.config_context(enable_metadata_routing=True):
        # A pipeline whose last step consumes sample_domain in transform gets it.
        search = GridSearchCV(
            make_pipeline(StandardScaler(), DomainCentering()),
            {"domaincentering__center": [False, True]},
            scoring=make_map_scorer(),
            cv=DomainStratifiedKFold(3),
            error_score="raise",
        ).fit(X, y, sample_domain=d)
        assert search.best_params_ == {"domaincentering__center": True}
        # A pipeline that consumes no domain is called with X only.
        pipe = make_pipeline(StandardScaler(), PCA(n_components=3)).fit(X)
        assert make_map_scorer()(pipe, X, y, sample_domain=d) == pytest.approx(
            cross_domain_map(pipe.transform(X), y, d), abs=1e-12
        )


def test_leave_one_out_map_matches_a_per_row_loop():
    from skucdr.metrics._ranking import leave_one_out_map as _leave_one_out_map

    rng = np.random.RandomState(3)
    Z = rng.randn(70, 5).astype(np.float32)
    y = rng.randint(0, 4, 70)
    y[0] = 9  # alone in its class: skipped
    Z[5] = Z[6]  # a tie
    expected = []
    for r in range(70):
        others = np.delete(np.arange(70), r)
        if (y[others] == y[r]).any():
            expected.append(mean_average_precision(Z[[r]], y[[r]], Z[others], y[others]))
    assert _leave_one_out_map(Z, y) == pytest.approx(np.mean(expected), abs=1e-6)
