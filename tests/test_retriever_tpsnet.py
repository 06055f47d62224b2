"""Behaviour of TextPhaseRetriever (TPSNet) on tiny images."""

import io

import joblib
import numpy as np
import pytest
import torch
from conftest import TPSNET_TINY as TINY

from skucdr import TextPhaseRetriever
from skucdr.nn.domain_norm import domain_codes
from skucdr.tpsnet.objective import align_domain_clusters
from skucdr.tpsnet.text import BuiltinTextTower


@pytest.fixture
def two_domains(image_domains):
    return image_domains


@pytest.fixture
def fitted(fitted_tpsnet):
    return fitted_tpsnet


def test_flat_images_with_image_shape_match(two_domains, fitted):
    X, _, d = two_domains
    flat = TextPhaseRetriever(**TINY, image_shape=(3, 12, 12))
    flat.fit(X.reshape(60, -1), sample_domain=d)
    np.testing.assert_allclose(flat.gallery_embedding_, fitted.gallery_embedding_, atol=1e-6)


def test_embedding_uses_the_query_domain_prompts(two_domains, fitted):
    X = two_domains[0]
    module = fitted.net_.module_.eval()
    x = torch.tensor(X[:5])
    tokens, v, attended = {}, {}, {}
    with torch.no_grad():
        for code in (0, 1, -1):
            codes = torch.full((5,), code)
            # each domain's batch-norm statistics (domain_norm=True), the pooled ones for -1
            with domain_codes(module, codes):
                tokens[code], v[code] = module.tokens(x), module.image_features(x)
            # the dual-prior output is queried with the prompts of the image's domain ...
            attended[code] = module.head(tokens[code], module.queries(codes))
        same_tokens = module.head(tokens[0], module.queries(torch.full((5,), 1)))
    assert not torch.allclose(attended[0], same_tokens)
    # ... and an unseen domain with the mean over domains of each class's prompt feature
    torch.testing.assert_close(attended[-1],
                               module.head(tokens[-1], module.class_text.mean(dim=0)))
    assert module.class_text.shape[:2] == (2, fitted.n_classes_)
    # I' = normalize(W v + g * attended), g the learned gate
    assert float(module.prior_gate.detach()) != 0.0
    for code, domain in ((0, "a"), (1, "b"), (-1, "new")):
        expected = torch.nn.functional.normalize(
            module.residual_proj(v[code]) + module.prior_gate * attended[code], dim=1)
        got = fitted.transform(X[:5], sample_domain=[domain] * 5)
        np.testing.assert_allclose(got, expected.detach().numpy(), atol=1e-5)
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)


def test_embedding_runs_the_encoder_once(two_domains, fitted, monkeypatch):
    # the tokens and the residual's v share one forward_map (a second pass would cost a
    # stage-2 step a whole encoder forward and update BatchNorm statistics twice)
    module = fitted.net_.module_
    calls = []
    forward_map = module.encoder.forward_map
    monkeypatch.setattr(module.encoder, "forward_map",
                        lambda x: calls.append(len(x)) or forward_map(x))
    x = torch.from_numpy(two_domains[0][:4])
    with torch.no_grad():
        module.embed(x, torch.zeros(4, dtype=torch.long))
    assert calls == [4]


def test_transform_is_invariant_to_row_order_and_batching(two_domains, fitted):
    X, _, d = two_domains
    Z = fitted.gallery_embedding_
    order = np.random.RandomState(0).permutation(60)
    np.testing.assert_allclose(fitted.transform(X[order], sample_domain=d[order]), Z[order],
                               atol=1e-6)
    np.testing.assert_allclose(fitted.transform(X[7:9], sample_domain=d[7:9]), Z[7:9], atol=1e-6)


def test_input_kinds_and_validation(two_domains, fitted):
    X, _, d = two_domains
    assert fitted.n_features_in_ == 3 * 12 * 12 and fitted.image_shape_ == (3, 12, 12)
    as_f64 = fitted.transform(X.astype(np.float64), sample_domain=d)
    np.testing.assert_allclose(as_f64, fitted.gallery_embedding_, atol=1e-6)
    readonly = X.copy()
    readonly.flags.writeable = False
    np.testing.assert_allclose(fitted.transform(readonly, sample_domain=d),
                               fitted.gallery_embedding_, atol=1e-6)
    bad = X.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fitted.transform(bad, sample_domain=d)
    with pytest.raises(ValueError, match="shape"):
        fitted.transform(X[:, :, :6, :6], sample_domain=d)
    assert set(fitted._expected_failed_checks()) >= {"check_estimators_pickle"}
    assert TextPhaseRetriever(image_shape=(3, 12, 12))._expected_failed_checks() == {}


def test_history_has_the_losses_of_every_phase(fitted):
    names = [set(epoch) for epoch in fitted.history_]
    assert "loss_ince" in names[0]
    assert {"loss_i2t", "loss_t2i"} <= names[1]
    assert {"loss_pce", "loss_i2tce", "loss_pnce", "loss_sel", "stat_repaired"} <= names[2]
    assert not {"loss_pnce", "loss_sel", "loss_pce"} & names[1]  # not in the prompt epochs
    assert [epoch["stage"] for epoch in fitted.history_] == [1, 1, 2]
    assert all(np.isfinite(epoch["train_loss"]) for epoch in fitted.history_)


@pytest.mark.parametrize(
    "ablation",
    [{"text_prior": False}, {"phase_prior": False}, {"fusion": "concat"},
     {"n_prototypes": "elbow", "max_prototypes": 4}, {"gamma": 0.0},
     {"alpha": 0.0, "beta": 0.0}],
)
def test_ablations_fit(two_domains, ablation):
    X, _, d = two_domains
    r = TextPhaseRetriever(**{**TINY, "max_epochs": 2, **ablation}).fit(X, sample_domain=d)
    Z = r.transform(X, sample_domain=d)
    assert np.isfinite(Z).all() and Z.shape == (60, 8)
    last = r.history_[-1]
    assert "loss_pce" in last
    assert ("loss_i2tce" in last) == r.text_prior
    if not r.text_prior:
        assert r.net_.module_.prompts is None
        # no prompts: every domain, fitted or not, is queried with the one learned query
        queries = r.net_.module_.queries
        assert queries(torch.tensor([0])) is queries(torch.tensor([-1])) is r.net_.module_.query
    if not r.phase_prior:
        assert r.net_.module_.phase_cnn is None
    assert ("loss_pnce" in last) == (r.gamma > 0)


def test_custom_text_tower_is_copied(two_domains):
    X, _, d = two_domains
    tower = BuiltinTextTower(width=16, heads=2, output_dim=12, seed=3)
    before = {k: v.clone() for k, v in tower.state_dict().items()}
    r = TextPhaseRetriever(**{**TINY, "max_epochs": 2}, text_tower=tower).fit(X, sample_domain=d)
    assert r.net_.module_.prompts.tower is not tower
    assert r.net_.module_.class_text.shape[-1] == 12
    for k, v in tower.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), before[k].numpy())


def test_clear_errors(two_domains):
    X, _, d = two_domains
    with pytest.raises(ValueError, match="needs images"):
        TextPhaseRetriever(**TINY).fit(np.random.rand(20, 5), sample_domain=[0] * 10 + [1] * 10)
    with pytest.raises(ValueError, match="text_tower"):
        TextPhaseRetriever(text_tower="clip").fit(X, sample_domain=d)
    with pytest.raises(ValueError, match="encoder"):
        TextPhaseRetriever(**TINY, encoder="mlp").fit(X, sample_domain=d)


def test_align_domain_clusters_matches_translated_centres():
    P_a = np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]])
    # domain b: a shifted by (10, 10), in another order, plus one extra cluster
    P_b = np.array([[10.0, 14.0], [10.0, 10.0], [14.0, 10.0], [30.0, 30.0]])
    maps, n_shared = align_domain_clusters([P_a, P_b], [P_a.mean(0), P_b[:3].mean(0)])
    assert maps[0].tolist() == [0, 1, 2]
    assert maps[1].tolist() == [2, 0, 1, 3]
    assert n_shared == 4


def test_two_view_nce_matches_its_formula():
    from skucdr.uem.losses import two_view_nce

    v = torch.eye(4)[:3]  # three orthonormal rows, identical views
    tau = 0.5
    expected = -np.log(np.exp(1 / tau) / (np.exp(1 / tau) + 4))  # 2n - 2 = 4 negatives at 0
    assert float(two_view_nce(v, v, tau)) == pytest.approx(expected, rel=1e-6)
    swapped = two_view_nce(v, v[[1, 2, 0]], tau)  # wrong positives: a larger loss
    assert float(swapped) > expected


def test_idse_warmup_trains_uem_stage1_on_the_image_features(two_domains):
    X, _, d = two_domains
    kw = {**TINY, "max_epochs": 8, "prompt_epochs": 1}
    r = TextPhaseRetriever(**kw).fit(X, sample_domain=d)
    warm = [e for e in r.history_ if "loss_ince" in e]
    assert len(warm) == 4  # 8 epochs: stage 1 = 5, one of them prompts
    assert any("loss_pnce" in e and "loss_sel" in e for e in warm)  # the alpha ramp
    assert {"loss_i2t", "loss_t2i"} <= set(r.history_[4])
    again = TextPhaseRetriever(**kw).fit(X, sample_domain=d)
    np.testing.assert_array_equal(r.transform(X, sample_domain=d),
                                  again.transform(X, sample_domain=d))
    buffer = io.BytesIO()
    joblib.dump(r, buffer)
    buffer.seek(0)
    np.testing.assert_array_equal(joblib.load(buffer).transform(X, sample_domain=d),
                                  r.transform(X, sample_domain=d))


@pytest.mark.parametrize("n_components", [8, 16])
def test_image_residual_starts_from_the_stage1_image_features(n_components):
    """With the gate at 0, I' is the (projected) stage-1 feature v; the projection keeps
    v's cosines when the embedding is at least as wide as v."""
    from skucdr.nn.encoders import SmallCNN
    from skucdr.tpsnet.network import TPSNetModule

    torch.manual_seed(0)
    tower = BuiltinTextTower(output_dim=8, width=16, layers=1, heads=2)
    module = TPSNetModule(
        SmallCNN(in_channels=3, width=8, image_size=12), n_components=n_components, n_domains=2,
        tower=tower, text_dim=8, max_classes=3, n_ctx=2, phase_prior=True,
        phase_channels=1, fusion="attention", n_heads=2,
    ).eval()
    module.class_text = torch.randn(2, 3, 8)
    x, codes = torch.rand(5, 3, 12, 12), torch.tensor([0, 1, 0, 1, -1])
    with torch.no_grad():
        v = module.image_features(x)
        z = module.embed(x, codes)
        torch.testing.assert_close(z @ z.T, v @ v.T, atol=1e-5, rtol=0)
        module.prior_gate.fill_(1.0)  # the gate lets the dual-prior output in
        assert not torch.allclose(module.embed(x, codes) @ z.T, z @ z.T, atol=1e-3)


def test_prototype_tau_reaches_the_warmup_and_the_stage2_prototype_terms(two_domains,
                                                                        monkeypatch):
    """One temperature for UEM's prototype terms, in the warm-up and in stage 2."""
    import skucdr.tpsnet.objective as tpsnet_objective
    import skucdr.uem.objective as uem_objective

    seen = {"warmup": set(), "stage2": set()}

    def spy(where, original):
        def wrapped(z, prototypes, assignment, tau):
            seen[where].add(tau)
            return original(z, prototypes, assignment, tau)

        return wrapped

    monkeypatch.setattr(uem_objective, "prototype_nce",
                        spy("warmup", uem_objective.prototype_nce))
    monkeypatch.setattr(tpsnet_objective, "prototype_nce",
                        spy("stage2", tpsnet_objective.prototype_nce))
    monkeypatch.setattr(tpsnet_objective.TPSNetObjective, "PROTOTYPE_TAU", 0.13)
    X, _, d = two_domains
    TextPhaseRetriever(**{**TINY, "max_epochs": 8}).fit(X, sample_domain=d)
    assert seen == {"warmup": {0.13}, "stage2": {0.13}}


def test_stage2_prototypes_refresh_from_a_full_pass(two_domains, monkeypatch):
    """Stage 2 re-clusters I' every epoch on a fresh pass over every row (the first
    epoch reuses the pass that starts stage 2)."""
    import skucdr.tpsnet.objective as tpsnet_objective
    from skucdr.tpsnet.objective import TPSNetObjective

    passes, clustered = [], []
    original_embed_rows = TPSNetObjective.embed_rows
    original_prototypes = tpsnet_objective.domain_prototypes

    def embed_rows(self, net, fn):
        out = original_embed_rows(self, net, fn)
        if getattr(fn, "__name__", "") == "embed":
            passes.append(out.clone())
        return out

    def domain_prototypes(z, *args, **kwargs):
        clustered.append(np.array(z))
        return original_prototypes(z, *args, **kwargs)

    monkeypatch.setattr(TPSNetObjective, "embed_rows", embed_rows)
    monkeypatch.setattr(tpsnet_objective, "domain_prototypes", domain_prototypes)
    X, _, d = two_domains
    TextPhaseRetriever(**{**TINY, "max_epochs": 10}).fit(X, sample_domain=d)
    assert len(clustered) == 4  # one refresh per stage-2 epoch
    assert len(passes) == 4
    for z, fresh in zip(clustered, passes):
        np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1, atol=1e-5)
        np.testing.assert_array_equal(z, fresh.numpy())
    assert not np.array_equal(clustered[1], clustered[0])  # trained in between


def test_one_cosine_learning_rate_schedule_runs_over_all_stages(two_domains):
    from skorch.callbacks import Callback

    import skucdr._base as base

    lrs = []

    class _RecordLR(Callback):
        def on_epoch_begin(self, net, **kwargs):
            lrs.append(net.optimizer_.param_groups[0]["lr"])

    original = base.train_objective

    def train_objective(*args, **kwargs):
        return original(*args, extra_callbacks=[("record_lr", _RecordLR())], **kwargs)

    X, _, d = two_domains
    kw = {**TINY, "max_epochs": 8, "prompt_epochs": 2, "lr": 0.01}
    model = TextPhaseRetriever(**kw)
    assert model._schedule() == (3, 5)  # 3 warm-up, 2 prompt and 3 stage-2 epochs
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(base, "train_objective", train_objective)
        model.fit(X, sample_domain=d)
    expected = [0.5 * (1 + np.cos(np.pi * e / 8)) for e in range(8)]
    np.testing.assert_allclose(lrs, 0.01 * np.array(expected), atol=1e-6)


def test_augment_gives_the_views_of_every_phase(two_domains):
    """``augment`` makes the warm-up's views and stage 2's."""
    calls = []

    def augment(x, generator):
        calls.append(x.shape[0])
        return x

    X, _, d = two_domains
    model = TextPhaseRetriever(**{**TINY, "max_epochs": 8, "prompt_epochs": 2},
                               augment=augment)
    history = model.fit(X, sample_domain=d).history_
    n_steps = sum(len(e["batches"]) for e in history)
    n_prompt_steps = sum(len(e["batches"]) for e in history if "loss_i2t" in e)
    # two views per warm-up step, one per stage-2 step, none in the prompt epochs
    warmup_steps = sum(len(e["batches"]) for e in history if "loss_ince" in e)
    assert len(calls) == 2 * warmup_steps + (n_steps - warmup_steps - n_prompt_steps)
