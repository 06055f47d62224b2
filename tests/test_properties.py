"""Property-based tests of every public entry point (hypothesis).

Over arbitrary shapes, dtypes (NaN and inf included), domain labels and mappings, every
call either gives a correct result (finite, of the documented shape) or raises a clear
``ValueError`` / ``TypeError`` from skucdr's or scikit-learn's own validation: never an
error from deep inside torch, faiss, skorch or scipy, never a hang, never NaN output.
"""

import traceback
import warnings

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from skucdr import (
    PhasePriorExtractor,
    PrototypeClusterer,
    TextPhaseRetriever,
    UniversalCDRRetriever,
    pack_domains,
    unpack_domains,
)
from skucdr.label_free import mutual_neighbor_rate
from skucdr.metrics import cross_domain_map, mean_average_precision, precision_at_k
from skucdr.model_selection import DomainStratifiedKFold
from skucdr.neighbors import cosine_kneighbors

FAST = settings(max_examples=40, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SLOW = settings(FAST, max_examples=30)

# libraries an error must not come from: the user would see their internals
_DEEP = ("/torch/", "/faiss/", "/skorch/", "/scipy/")

_ELEMENTS = {
    "O": st.one_of(st.floats(), st.text(max_size=2), st.none(), st.integers(-3, 3)),
    "U": st.text(max_size=3),
}


_ELEMENTS = {
    "f": st.floats(-10, 10, width=32),
    "i": st.integers(-5, 5),
    "u": st.integers(0, 5),
    "b": st.booleans(),
}
_X_FAULTS = ["nan", "inf", "huge", "1-D", "3-D", "no rows", "object", "complex",
                            "str", "list of arrays", "tuple of arrays"]
_LABEL_FAULTS = ["short", "None entry", "NaN entry", "mixed", "unseen", "bool",
                                "omitted", "2-D"]


@st.composite
def rows(draw, n_rows=None, n_features=None, image=False, faults=True):
    """A valid 2-D (or image) array, half the time with one fault (``_X_FAULTS``);
    always valid, and of at least 4 rows, with ``faults=False``."""
    n = n_rows if n_rows is not None else draw(
        st.integers(4, 16) | st.integers(0, 3) if faults else st.integers(4, 16))
    if image:
        side = draw(st.sampled_from([4, 8]))
        shape = (n, draw(st.sampled_from([1, 3])), side, side)
    else:
        shape = (n, n_features if n_features is not None else draw(st.integers(1, 8)))
    dtype = np.dtype(draw(st.sampled_from(["float32", "float32", "float64", "int64", "uint8",
                                           "bool"])))
    X = draw(hnp.arrays(dtype, shape, elements=_ELEMENTS[dtype.kind]))
    fault = draw(st.sampled_from(_X_FAULTS)) if faults and draw(st.booleans()) else None
    if fault in ("nan", "inf", "huge") and X.size:
        X = X.astype(np.float64)
        X.flat[draw(st.integers(0, X.size - 1))] = {"nan": np.nan, "inf": -np.inf,
                                                    "huge": 1e39}[fault]
    elif fault == "1-D":
        X = X.ravel()
    elif fault == "3-D":
        X = X[:, None, :]
    elif fault == "no rows":
        X = X[:0]
    elif fault == "object":
        X = X.astype(object)
    elif fault == "complex":
        X = X.astype(np.complex64)
    elif fault == "str":
        X = X.astype(str)
    elif fault == "list of arrays":
        X = list(X)
    elif fault == "tuple of arrays":
        X = (X[: n // 2], X[n // 2:])
    return X


@st.composite
def domain_labels(draw, n, names=("a", "b"), faults=True, keep_names=False):
    """Labels of ``n`` rows from ``names`` (str or int), half the time with one fault
    (never with ``faults=False``); ``keep_names``: never ints in place of ``names``."""
    if not keep_names and draw(st.booleans()):
        names = tuple(range(len(names)))
    d = np.asarray([names[i % len(names)] for i in range(n)])
    d = d[draw(st.permutations(range(n)))] if n else d
    fault = draw(st.sampled_from(_LABEL_FAULTS)) if faults and draw(st.booleans()) else None
    if fault == "short":
        return d[:-1]
    if fault in ("None entry", "NaN entry", "mixed", "unseen", "bool") and n:
        d = d.astype(object)
        d[draw(st.integers(0, n - 1))] = {"None entry": None, "NaN entry": float("nan"),
                                          "mixed": 1 if isinstance(names[0], str) else "a",
                                          "unseen": "typo" if isinstance(names[0], str) else 7,
                                          "bool": True}[fault]
    if fault == "omitted":
        return None
    if fault == "2-D":
        return d.reshape(-1, 1)
    return d


@st.composite
def data(draw, n_features=None, image=False, names=("a", "b"), faults=True,
         keep_names=False):
    """``(X, sample_domain)``: rows and their domains, or a mapping of domains and None;
    with ``faults=False``, valid input only; ``keep_names``: the domains are ``names``
    (as a fitted model's must be)."""
    if draw(st.integers(0, 3)) == 0:  # a mapping
        width = n_features if n_features is not None else draw(st.integers(1, 8))
        keys = draw(st.sampled_from([names, names, (0, 1), ("a", 0), (None, "b"), names[:1]]
                                    if faults else [names] if keep_names else [names, (0, 1)]))
        widths = [0, 0, 0, 1] if faults else [0]
        mapping = {k: draw(rows(n_features=width + draw(st.sampled_from(widths)),
                                image=image, faults=faults)) for k in keys}
        return mapping, None
    X = draw(rows(n_features=n_features, image=image, faults=faults))
    return X, draw(domain_labels(len(X) if hasattr(X, "__len__") else 0, names, faults,
                                 keep_names))


def _clean(call):
    """Run ``call``: its result, or None when it raised a clean ValueError / TypeError."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = call()
    except (ValueError, TypeError) as exc:
        origin = traceback.extract_tb(exc.__traceback__)[-1].filename
        assert not any(deep in origin for deep in _DEEP), (
            f"{type(exc).__name__} from {origin}: {exc}")
        assert str(exc), "an error without a message"
        assert "std::" not in str(exc) and ".cpp" not in str(exc), f"C++ internals: {exc}"
        return None
    return result, caught


def _finite(value):
    """Every float inside ``value`` (arrays, tuples, dicts, scalars) is finite."""
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, (tuple, list)):
        return all(_finite(v) for v in value)
    array = np.asarray(value)
    return array.dtype.kind not in "fc" or bool(np.isfinite(array).all())


TINY = dict(n_components=4, max_epochs=1, batch_size=4, n_prototypes=2, device="cpu",
            random_state=0)


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.RandomState(0)
    X = rng.rand(24, 6).astype(np.float32)
    return UniversalCDRRetriever(**TINY).fit(X, sample_domain=np.repeat(["a", "b"], 12))


def _embeddings_ok(Z, n_rows):
    if isinstance(Z, dict):
        return all(_embeddings_ok(z, len(z)) for z in Z.values())
    return Z.shape == (n_rows, 4) and Z.dtype == np.float32 and _finite(Z)


def _n(X):
    return sum(len(v) for v in X.values()) if isinstance(X, dict) else len(X)


@SLOW
@given(data())
def test_fit_and_transform(given_data):
    X, d = given_data
    out = _clean(lambda: UniversalCDRRetriever(**TINY).fit(X, sample_domain=d))
    if out is not None:
        Z = out[0].transform(X, sample_domain=d)
        assert _embeddings_ok(Z, _n(X))


@FAST
@given(data(n_features=6),
       st.integers(1, 30) | st.sampled_from([0, -1, True, False, 1.5, 10**9]))
def test_inference(fitted, given_data, n_neighbors):
    X, d = given_data
    out = _clean(lambda: fitted.transform(X, sample_domain=d))
    if out is not None:
        assert _embeddings_ok(out[0], _n(X))
    out = _clean(lambda: fitted.kneighbors(X, sample_domain=d, n_neighbors=n_neighbors))
    if out is not None:
        dist, idx = out[0] if not isinstance(out[0], dict) else next(iter(out[0].values()))
        assert _finite(dist) and dist.shape == idx.shape and (idx >= 0).all()


@FAST
@given(data(n_features=6), st.data())
def test_score_and_detect_private(fitted, given_data, draw):
    X, d = given_data
    if isinstance(X, dict):
        return
    y = draw.draw(domain_labels(len(X) if hasattr(X, "__len__") else 0, names=(0, 1, 2)))
    for call in (lambda: fitted.score(X, y, sample_domain=d),
                 lambda: fitted.detect_private(X, sample_domain=d)):
        out = _clean(call)
        if out is not None:
            result, caught = out
            # an undefined score is NaN only together with a warning that says why
            assert _finite(result) or caught


@SLOW
@given(data(image=True))
def test_text_phase_retriever(given_data):
    X, d = given_data
    est = TextPhaseRetriever(**TINY, prompt_epochs=1)
    out = _clean(lambda: est.fit(X, sample_domain=d))
    if out is not None:
        assert _embeddings_ok(out[0].transform(X, sample_domain=d), _n(X))


@FAST
@given(st.one_of(rows(), rows(image=True)))
def test_phase_prior_extractor(X):
    out = _clean(lambda: PhasePriorExtractor().fit_transform(X))
    if out is not None:
        assert _finite(out[0]) and len(out[0]) == len(X)


@FAST
@given(data())
def test_prototype_clusterer(given_data):
    X, d = given_data
    out = _clean(lambda: PrototypeClusterer(n_prototypes=2, random_state=0).fit(
        X, sample_domain=d))
    if out is not None:
        assert _finite(out[0].predict(X, sample_domain=d))


@FAST
@given(st.data(), st.integers(1, 8),
       st.integers(1, 9) | st.sampled_from([(1, 5), 0, -1, True, 10**9]))
def test_metrics(draw, width, k):
    Q = draw.draw(rows(n_features=width))
    G = draw.draw(rows(n_features=width + draw.draw(st.sampled_from([0, 0, 1]))))
    nq = len(Q) if hasattr(Q, "__len__") else 0
    ng = len(G) if hasattr(G, "__len__") else 0
    yq = draw.draw(domain_labels(nq, names=(0, 1, 2)))
    yg = draw.draw(domain_labels(ng, names=(0, 1, 2)))
    d = draw.draw(domain_labels(nq))
    for call in (lambda: mean_average_precision(Q, yq, G, yg),
                 lambda: precision_at_k(Q, yq, G, yg, k=k),
                 lambda: cross_domain_map(Q, yq, d)):
        out = _clean(call)
        if out is not None:
            result, caught = out
            assert _finite(result) or caught


@FAST
@given(data())
def test_label_free_score(given_data):
    Z, d = given_data
    out = _clean(lambda: mutual_neighbor_rate(Z, d))
    if out is not None:
        result, caught = out
        assert (_finite(result) and 0 <= result <= 1) or caught


@FAST
@given(data())
def test_pack_and_unpack(given_data):
    X, d = given_data
    if isinstance(X, dict):
        out = _clean(lambda: pack_domains(X))
        if out is not None:
            packed, packed_d = out[0][0], out[0][-1]  # (X, d) or, for (X, y) pairs, (X, y, d)
            assert len(packed) == len(packed_d)
        return
    out = _clean(lambda: unpack_domains(X, d))
    if out is not None:
        assert sum(len(v) for v in out[0].values()) == len(X)


@FAST
@given(data(), st.one_of(st.integers(-1, 4), st.booleans()))
def test_domain_stratified_split(given_data, n_splits):
    X, d = given_data
    out = _clean(lambda: list(DomainStratifiedKFold(n_splits=n_splits).split(
        X, sample_domain=d)))
    if out is not None:
        for train, test in out[0]:
            assert len(np.intersect1d(train, test)) == 0 and len(test)


@FAST
@given(st.data(), st.integers(1, 8), st.integers(1, 4) | st.sampled_from([0, -1, True, 10**9]),
       st.sampled_from(["Flat", "Flat", "Flat", "HNSW8", "IVF2,Flat", "PQ7", "nonsense", ""]))
def test_cosine_kneighbors(draw, width, k, index):
    Q = draw.draw(rows(n_features=width))
    G = draw.draw(rows(n_features=width + draw.draw(st.sampled_from([0, 0, 1]))))
    out = _clean(lambda: cosine_kneighbors(Q, G, k, index=index))
    if out is not None:
        dist, idx = out[0]
        assert _finite(dist) and dist.shape == idx.shape


# ------------------------------------------------------------------ clean draws succeed
# The tests above accept a clean ValueError for any draw; these make sure that valid
# input is never among the rejected: every clean draw gives a result.


@SLOW
@given(data(faults=False))
def test_clean_draws_fit_and_transform(given_data):
    X, d = given_data
    model = UniversalCDRRetriever(**TINY).fit(X, sample_domain=d)
    assert _embeddings_ok(model.transform(X, sample_domain=d), _n(X))


@FAST
@given(data(n_features=6, faults=False, keep_names=True), st.integers(1, 4))
def test_clean_draws_inference(fitted, given_data, n_neighbors):
    X, d = given_data
    assert _embeddings_ok(fitted.transform(X, sample_domain=d), _n(X))
    dist, idx = fitted.kneighbors(X, sample_domain=d, n_neighbors=n_neighbors)
    assert _finite(dist) and dist.shape == idx.shape == (_n(X), n_neighbors)


@FAST
@given(st.data(), st.integers(1, 8), st.integers(1, 4))
def test_clean_draws_metrics_and_search(draw, width, k):
    Q = draw.draw(rows(n_features=width, faults=False))
    G = draw.draw(rows(n_features=width, faults=False))
    yq = draw.draw(domain_labels(len(Q), names=(0, 1, 2), faults=False))
    yg = draw.draw(domain_labels(len(G), names=(0, 1, 2), faults=False))
    d = draw.draw(domain_labels(len(Q), faults=False))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # an undefined mAP warns and is NaN, by design
        mean_average_precision(Q, yq, G, yg)
        precision_at_k(Q, yq, G, yg, k=k)
        cross_domain_map(Q, yq, d)
    dist, idx = cosine_kneighbors(Q, G, k)
    assert _finite(dist) and dist.shape == idx.shape == (len(Q), k)


@FAST
@given(data(faults=False))
def test_clean_draws_pack_unpack_and_split(given_data):
    X, d = given_data
    if isinstance(X, dict):
        packed, packed_d = pack_domains(X)
        assert len(packed) == len(packed_d) == _n(X)
        return
    assert sum(len(v) for v in unpack_domains(X, d).values()) == len(X)
