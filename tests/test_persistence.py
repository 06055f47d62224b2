"""save_retriever / load_retriever: a fitted retriever shared without pickle."""

import json

import numpy as np
import pytest
import torch

from skucdr import TextPhaseRetriever, UniversalCDRRetriever
from skucdr.persistence import load_retriever, save_retriever

rng = np.random.RandomState(0)
X = rng.rand(80, 16).astype(np.float32)
DOMAINS = np.repeat(["photo", "sketch"], 40)
TINY = dict(n_components=8, batch_size=16, max_epochs=2, random_state=0)


@pytest.mark.parametrize("estimator", [
    UniversalCDRRetriever(**TINY),  # feature vectors, standardised per domain
    UniversalCDRRetriever(**TINY, image_shape=(1, 4, 4)),  # the small CNN, domain norm
    UniversalCDRRetriever(**TINY, image_shape=(1, 4, 4), encoder="cnn", freeze_encoder=True),
    TextPhaseRetriever(**TINY, image_shape=(1, 4, 4), prompt_epochs=1),
], ids=["uem-features", "uem-images", "uem-frozen", "tpsnet"])
def test_saved_retriever_loads_and_answers_the_same(estimator, tmp_path):
    fitted = estimator.fit(X, sample_domain=DOMAINS)
    save_retriever(fitted, tmp_path / "model")
    loaded = load_retriever(tmp_path / "model")
    assert type(loaded) is type(fitted)
    assert loaded.get_params() .keys() == fitted.get_params().keys()
    assert repr(loaded) == repr(fitted)
    np.testing.assert_array_equal(loaded.transform(X, sample_domain=DOMAINS),
                                  fitted.transform(X, sample_domain=DOMAINS))
    for a, b in zip(loaded.kneighbors(X[:5], sample_domain=DOMAINS[:5], n_neighbors=3),
                    fitted.kneighbors(X[:5], sample_domain=DOMAINS[:5], n_neighbors=3)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(loaded.detect_private(X[:5], sample_domain=DOMAINS[:5]),
                                  fitted.detect_private(X[:5], sample_domain=DOMAINS[:5]))
    assert loaded.domains_.tolist() == fitted.domains_.tolist()
    assert [r["epoch"] for r in loaded.history_] == [r["epoch"] for r in fitted.history_]


def _state_equal(a, b, name):
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and np.array_equal(a, b)
    if name == "gallery_":
        return np.array_equal(a.embedding, b.embedding) and np.array_equal(a.domain, b.domain)
    if name == "net_":
        sa, sb = a.module_.state_dict(), b.module_.state_dict()
        return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    if name == "history_":
        return [r["epoch"] for r in a] == [r["epoch"] for r in b]
    return a == b


@pytest.mark.parametrize("estimator", [
    UniversalCDRRetriever(**TINY),
    UniversalCDRRetriever(**TINY, image_shape=(1, 4, 4), encoder="cnn", freeze_encoder=True),
    TextPhaseRetriever(**TINY, image_shape=(1, 4, 4), prompt_epochs=1),
], ids=["uem-features", "uem-frozen", "tpsnet"])
def test_a_loaded_model_has_exactly_the_fitted_state(estimator, tmp_path):
    from skucdr._base import fitted_state_of

    fitted = estimator.fit(X, sample_domain=DOMAINS)
    declared = fitted_state_of(fitted)
    params = fitted.get_params(deep=False)
    # the declaration is complete: a fit sets nothing else
    assert set(vars(fitted)) - set(params) <= set(declared)
    save_retriever(fitted, tmp_path)
    loaded = load_retriever(tmp_path)
    assert set(vars(loaded)) - set(params) == set(vars(fitted)) - set(params)
    for name in set(vars(fitted)) - set(params):
        assert _state_equal(getattr(loaded, name), getattr(fitted, name), name), name


def test_saved_files_are_json_and_tensors_only(tmp_path):
    fitted = UniversalCDRRetriever(**TINY).fit({"a": X[:40], "b": X[40:]})
    save_retriever(fitted, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["class"] == "UniversalCDRRetriever" and config["params"]["n_components"] == 8
    torch.load(tmp_path / "weights.pt", weights_only=True)  # raises on anything but tensors
    loaded = load_retriever(tmp_path)
    Z = loaded.transform({"a": X[:3]})
    np.testing.assert_array_equal(Z["a"], fitted.transform({"a": X[:3]})["a"])


class _Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_weights_holding_code_are_refused_without_running_it(tmp_path, capsys):
    fitted = UniversalCDRRetriever(**TINY).fit(X, sample_domain=DOMAINS)
    save_retriever(fitted, tmp_path)
    torch.save({"module": _Payload(), "arrays": {}}, tmp_path / "weights.pt")
    with pytest.raises(ValueError, match="weights.pt is not a skucdr weights file: it holds "
                                         "objects other than tensors"):
        load_retriever(tmp_path)
    assert "must never run" not in capsys.readouterr().out


def test_parameters_that_are_not_plain_values_are_named(tmp_path):
    fitted = UniversalCDRRetriever(**TINY, augment=lambda x, g: x).fit(X, sample_domain=DOMAINS)
    with pytest.raises(TypeError, match="augment=.*joblib"):
        save_retriever(fitted, tmp_path)
    with pytest.raises(TypeError, match="takes a skucdr retriever"):
        save_retriever(object(), tmp_path)


def test_loading_checks_what_it_reads(tmp_path):
    with pytest.raises(ValueError, match="holds no saved retriever"):
        load_retriever(tmp_path)
    fitted = UniversalCDRRetriever(**TINY).fit(X, sample_domain=DOMAINS)
    save_retriever(fitted, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    for change, message in [({"class": "os.system"}, "unknown class 'os.system'"),
                            ({"format_version": 99}, "format version 99"),
                            ({"format": "other"}, "not a skucdr retriever")]:
        (tmp_path / "config.json").write_text(json.dumps({**config, **change}))
        with pytest.raises(ValueError, match=message):
            load_retriever(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**config, "skucdr_version": "0.0.1"}))
    with pytest.warns(UserWarning, match="saved by skucdr 0.0.1"):
        load_retriever(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(
        {**config, "fitted": {**config["fitted"], "device_": "cuda:7"}}))
    with pytest.warns(UserWarning, match="'cuda:7', which is not available"):
        assert load_retriever(tmp_path).device_ == "cpu"


@pytest.mark.parametrize("mmap", [False, True])
def test_gallery_indexes_are_saved_and_loaded_without_rebuild(tmp_path, mmap, monkeypatch):
    from skucdr.neighbors import FaissCosineIndex

    fitted = UniversalCDRRetriever(**TINY, index="HNSW8").fit(X, sample_domain=DOMAINS)
    expected = fitted.kneighbors(X, sample_domain=DOMAINS, n_neighbors=5)  # builds 2
    save_retriever(fitted, tmp_path)
    assert sorted(p.name for p in tmp_path.glob("*.faiss")) == ["index-0.faiss",
                                                                "index-1.faiss"]
    monkeypatch.setattr(FaissCosineIndex, "fit", lambda *a, **k: pytest.fail("rebuilt"))
    loaded = load_retriever(tmp_path, mmap_indexes=mmap)
    for got, want in zip(loaded.kneighbors(X, sample_domain=DOMAINS, n_neighbors=5), expected):
        np.testing.assert_array_equal(got, want)


def test_joblib_keeps_the_gallery_indexes(tmp_path, monkeypatch):
    import joblib

    from skucdr.neighbors import FaissCosineIndex

    fitted = UniversalCDRRetriever(**TINY, index="HNSW8").fit(X, sample_domain=DOMAINS)
    expected = fitted.kneighbors(X, sample_domain=DOMAINS, n_neighbors=5)
    joblib.dump(fitted, tmp_path / "m.joblib")
    monkeypatch.setattr(FaissCosineIndex, "fit", lambda *a, **k: pytest.fail("rebuilt"))
    loaded = joblib.load(tmp_path / "m.joblib")
    for got, want in zip(loaded.kneighbors(X, sample_domain=DOMAINS, n_neighbors=5), expected):
        np.testing.assert_array_equal(got, want)
