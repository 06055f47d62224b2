"""Tests of TPSNet's network pieces and of its losses (each pinned to its equation)."""

import math

import pytest
import torch
import torch.nn.functional as F

from skucdr.nn.phase import phase_only
from skucdr.tpsnet.losses import (
    image_to_text_contrastive,
    label_smoothed_i2t_ce,
    momentum_update_prototypes,
    prototype_ce,
    text_to_image_contrastive,
)
from skucdr.tpsnet.network import (
    DualPriorFusion,
    PhaseCNN,
    TextQueryCrossAttention,
    TokenProjector,
)
from skucdr.tpsnet.prompts import PromptLearner
from skucdr.tpsnet.text import BuiltinTextTower


def _t(rows):
    return torch.tensor(rows, dtype=torch.float64)


# --- modules ------------------------------------------------------------------------------


def test_phase_cnn_tokens():
    cnn = PhaseCNN(dim=16, channels=(8, 8))
    assert cnn(torch.rand(3, 1, 28, 28)).shape == (3, 49, 16)
    assert PhaseCNN(dim=16)(torch.rand(2, 1, 28, 28)).shape == (2, 4, 16)
    with pytest.raises(ValueError, match=r"\(n, 1, H, W\)"):
        cnn(torch.rand(3, 3, 28, 28))
    with pytest.raises(ValueError, match="channels"):
        PhaseCNN(dim=16, channels=())


def test_token_projector_layouts():
    proj = TokenProjector(5, 4)
    fmap = torch.rand(2, 5, 3, 2)
    tokens = proj(fmap)
    assert tokens.shape == (2, 6, 4)
    torch.testing.assert_close(tokens[:, 1 * 2 + 1], proj.proj(fmap[:, :, 1, 1]))  # row-major
    assert proj(torch.rand(2, 5)).shape == (2, 1, 4)
    assert proj(torch.rand(2, 7, 5)).shape == (2, 7, 4)
    with pytest.raises(ValueError, match="TokenProjector expects"):
        proj(torch.rand(2, 4, 3, 3))


def test_dual_prior_fusion_attention_is_residual_self_attention():
    torch.manual_seed(0)
    fusion = DualPriorFusion(8, n_heads=2).eval()
    rgb, phase = torch.rand(3, 5, 8), torch.rand(3, 2, 8)
    out = fusion(rgb, phase)
    assert out.shape == (3, 7, 8)
    x = torch.cat([rgb + fusion.source_embedding[0], phase + fusion.source_embedding[1]], 1)
    h = fusion.norm(x)
    torch.testing.assert_close(out, x + fusion.attention(h, h, h)[0])
    # The phase tokens change the RGB tokens' outputs (attention mixes the priors).
    assert not torch.allclose(out[:, :5], fusion(rgb, torch.rand(3, 2, 8))[:, :5])
    assert fusion(rgb).shape == (3, 5, 8)
    with pytest.raises(ValueError, match="phase_tokens"):
        fusion(rgb, torch.rand(3, 2, 6))


def test_dual_prior_fusion_concat_ablation():
    fusion = DualPriorFusion(8, mode="concat")
    rgb, phase = torch.rand(3, 5, 8), torch.rand(3, 2, 8)
    out = fusion(rgb, phase)
    assert out.shape == (3, 1, 8)
    expected = fusion.proj(fusion.norm(torch.cat([rgb.mean(1), phase.mean(1)], -1)))
    torch.testing.assert_close(out[:, 0], expected)
    torch.testing.assert_close(fusion(rgb)[:, 0], rgb.mean(1))
    with pytest.raises(ValueError, match="mode"):
        DualPriorFusion(8, mode="sum")


def test_text_query_cross_attention():
    torch.manual_seed(0)
    head = TextQueryCrossAttention(8, text_dim=6, n_heads=2).eval()
    tokens, text = torch.rand(4, 5, 8), torch.rand(3, 6)
    z = head(tokens, text)
    assert z.shape == (4, 8)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(4))
    # Definition: normalised mean over the C queries of the attended values.
    keys = head.norm(tokens)
    attended = head.attention(head.query_proj(text).expand(4, -1, -1), keys, keys)[0]
    torch.testing.assert_close(z, F.normalize(attended.mean(1), dim=-1))
    # Shared text features == the same features given per image.
    torch.testing.assert_close(head(tokens, text.expand(4, -1, -1)), z)
    # Padded classes do not count: changing them changes nothing.
    mask = torch.tensor([True, True, False])
    masked = head(tokens, text, mask)
    other = text.clone()
    other[2] = 5.0
    torch.testing.assert_close(head(tokens, other, mask), masked)
    torch.testing.assert_close(masked, head(tokens, text[:2]))
    torch.testing.assert_close(head(tokens, text, torch.ones(3, dtype=torch.bool)), z)
    with pytest.raises(ValueError, match="text_features"):
        head(tokens, torch.rand(3, 5))
    # One set per group, gathered by text_index == the gathered sets given per image.
    groups, index = torch.rand(2, 3, 6), torch.tensor([1, 0, 0, 1])
    torch.testing.assert_close(head(tokens, groups, text_index=index),
                               head(tokens, groups[index]))
    with pytest.raises(ValueError, match="text_index must have shape"):
        head(tokens, groups, text_index=index[:3])
    with pytest.raises(ValueError, match=r"With text_index, text_features must have shape"):
        head(tokens, text, text_index=index)


def test_tpsnet_forward_backward_end_to_end():
    # RGB encoder -> tokens, phase prior -> PhaseCNN, fusion, text-query cross-attention,
    # stage-2 losses; every trainable piece gets a gradient.
    torch.manual_seed(0)
    n, dim, n_classes = 6, 16, 3
    images = torch.rand(n, 3, 16, 16)
    domains = torch.tensor([0, 0, 0, 1, 1, 1])
    labels = torch.tensor([0, 1, 2, 2, 1, 0])
    encoder = torch.nn.Conv2d(3, 12, kernel_size=4, stride=4)
    to_tokens, phase_cnn = TokenProjector(12, dim), PhaseCNN(dim, channels=(8, 8))
    fusion, head = DualPriorFusion(dim, n_heads=4), TextQueryCrossAttention(dim, 24, n_heads=4)
    prompts = PromptLearner(
        BuiltinTextTower(width=32, output_dim=24, context_length=12), 2, n_classes
    )

    text = prompts.all_features()  # (2, C, 24)
    fused = fusion(to_tokens(encoder(images)), phase_cnn(phase_only(images)))
    z = head(fused, text[domains])
    prototypes = F.normalize(torch.randn(2, n_classes, dim), dim=-1)
    text_proj = head.project_text(text)[domains]
    loss = prototype_ce(z, prototypes[domains], labels) + label_smoothed_i2t_ce(
        z, text_proj, labels, logit_scale=10.0
    )
    loss.backward()
    for module in (encoder, to_tokens, phase_cnn, fusion, head):
        assert all(p.grad is not None for p in module.parameters() if p.requires_grad)
    assert prompts.ctx.grad.abs().sum() > 0


# --- losses, each against its equation on a hand-checkable example -------------------------


def test_image_to_text_contrastive_by_hand():
    # v = [[1, 0], [0, 1], [1, 1]], labels [0, 0, 1], t_{y_i} = t0, t0, t1 with
    # t0 = [1, 0], t1 = [0, 1]. Row i: -log exp(<v_i, t_{y_i}>) / sum_a exp(<v_i, t_{y_a}>).
    v = _t([[1, 0], [0, 1], [1, 1]])
    t = _t([[1, 0], [1, 0], [0, 1]])
    labels = torch.tensor([0, 0, 1])
    e = math.e
    rows = [
        -math.log(e / (e + e + 1)),  # <v0,t0>=1, candidates 1, 1, 0
        -math.log(1 / (1 + 1 + e)),  # <v1,t0>=0, candidates 0, 0, 1
        -math.log(e / (e + e + e)),  # <v2,t1>=1, candidates 1, 1, 1
    ]
    got = image_to_text_contrastive(v, t, labels)
    assert got.item() == pytest.approx(sum(rows) / 3)
    # logit_scale multiplies every logit.
    scaled = image_to_text_contrastive(v, t, labels, logit_scale=2.0)
    assert scaled.item() == pytest.approx(image_to_text_contrastive(2 * v, t, labels).item())


def test_text_to_image_contrastive_by_hand():
    v = _t([[1, 0], [0, 1], [1, 1]])
    t = _t([[1, 0], [1, 0], [0, 1]])
    labels = torch.tensor([0, 0, 1])
    e = math.e
    # Anchor t0 (rows 0 and 1): logits over images <v_a, t0> = 1, 0, 1; positives a = 0, 1.
    row_t0 = -(math.log(e / (e + 1 + e)) + math.log(1 / (e + 1 + e))) / 2
    # Anchor t1 (row 2): logits <v_a, t1> = 0, 1, 1; positive a = 2.
    row_t1 = -math.log(e / (1 + e + e))
    got = text_to_image_contrastive(v, t, labels)
    assert got.item() == pytest.approx((2 * row_t0 + row_t1) / 3)


def test_contrastive_losses_match_clip_reid_supcon():
    # CLIP-ReID's SupConLoss(anchor, contrast, anchor_labels, contrast_labels).
    def supcon(anchor, contrast, anchor_labels, contrast_labels):
        mask = (anchor_labels[:, None] == contrast_labels[None, :]).float()
        logits = anchor @ contrast.T
        logits = logits - logits.max(dim=1, keepdim=True).values.detach()
        log_prob = logits - torch.log(torch.exp(logits).sum(1, keepdim=True))
        return -((mask * log_prob).sum(1) / mask.sum(1)).mean()

    torch.manual_seed(0)
    labels = torch.tensor([0, 2, 2, 1, 0, 2])
    v = torch.randn(6, 5)
    t = torch.randn(3, 5)[labels]
    torch.testing.assert_close(
        image_to_text_contrastive(v, t, labels), supcon(v, t, labels, labels)
    )
    torch.testing.assert_close(
        text_to_image_contrastive(v, t, labels), supcon(t, v, labels, labels)
    )


def test_prototype_ce_by_hand():
    # cos(I', P0) = 1, cos(I', P1) = 0 (inputs are normalised inside): loss of row 0 with
    # label 0 is -log(e^{1/tau} / (e^{1/tau} + e^0)); row 1, at 45 degrees with label 1,
    # has cosines sqrt(1/2) to both prototypes: -log(1/2).
    emb = _t([[3, 0], [1, 1]])
    prototypes = _t([[2, 0], [0, 5]])
    tau = 0.5
    row0 = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + 1))
    row1 = math.log(2)
    got = prototype_ce(emb, prototypes, torch.tensor([0, 1]), tau=tau)
    assert got.item() == pytest.approx((row0 + row1) / 2)
    # Per-image prototypes and a padded class mask.
    per_image = torch.stack([prototypes, prototypes])
    assert prototype_ce(emb, per_image, torch.tensor([0, 1]), tau=tau).item() == pytest.approx(
        got.item()
    )
    padded = torch.cat([prototypes, _t([[1, 0]])])
    masked = prototype_ce(
        emb, padded, torch.tensor([0, 1]), tau=tau, class_mask=torch.tensor([True, True, False])
    )
    assert masked.item() == pytest.approx(got.item())


def test_label_smoothed_i2t_ce_by_hand():
    # One image, C = 3, logits s = <I', t_c> = (2, 0, -1), label 0, eps = 0.3:
    # q = (0.7 + 0.1, 0.1, 0.1); loss = -sum_c q_c log softmax_c.
    image = _t([[1, 0]])
    text = _t([[2, 0], [0, 1], [-1, 3]])
    z = math.exp(2) + math.exp(0) + math.exp(-1)
    log_p = [2 - math.log(z), 0 - math.log(z), -1 - math.log(z)]
    expected = -(0.8 * log_p[0] + 0.1 * log_p[1] + 0.1 * log_p[2])
    got = label_smoothed_i2t_ce(image, text, torch.tensor([0]), epsilon=0.3)
    assert got.item() == pytest.approx(expected)
    # epsilon = 0 is plain cross-entropy; logit_scale multiplies the logits.
    plain = label_smoothed_i2t_ce(image, text, torch.tensor([1]), epsilon=0.0, logit_scale=2.0)
    assert plain.item() == pytest.approx(
        F.cross_entropy(2 * (image @ text.T), torch.tensor([1])).item()
    )
    # A padded class is left out: C counts the valid classes (eps / 2 here).
    padded = label_smoothed_i2t_ce(
        image,
        torch.cat([text[:2], _t([[9, 9]])]),
        torch.tensor([0]),
        epsilon=0.3,
        class_mask=torch.tensor([True, True, False]),
    )
    z2 = math.exp(2) + 1
    expected2 = -(0.85 * (2 - math.log(z2)) + 0.15 * (0 - math.log(z2)))
    assert padded.item() == pytest.approx(expected2)
    with pytest.raises(ValueError, match="epsilon"):
        label_smoothed_i2t_ce(image, text, torch.tensor([0]), epsilon=1.0)


def test_momentum_update_prototypes_by_hand():
    prototypes = _t([[1, 0], [0, 1], [0.6, 0.8]])
    emb = _t([[0, 1], [0, 1], [1, 0]])
    labels = torch.tensor([0, 0, 1])
    out = momentum_update_prototypes(prototypes, emb, labels, momentum=0.9)
    assert out is prototypes  # in place
    # P0 <- normalize(0.9 [1, 0] + 0.1 mean([0, 1], [0, 1])) = [0.9, 0.1] / |.|
    norm0 = math.hypot(0.9, 0.1)
    torch.testing.assert_close(prototypes[0], _t([0.9 / norm0, 0.1 / norm0]))
    norm1 = math.hypot(0.1, 0.9)
    torch.testing.assert_close(prototypes[1], _t([0.1 / norm1, 0.9 / norm1]))
    torch.testing.assert_close(prototypes[2], _t([0.6, 0.8]))  # absent label: unchanged
    raw = momentum_update_prototypes(
        _t([[2, 0]]), _t([[0, 4]]), torch.tensor([0]), momentum=0.5, normalize=False
    )
    torch.testing.assert_close(raw, _t([[1, 2]]))
    with pytest.raises(ValueError, match="labels"):
        momentum_update_prototypes(_t([[1, 0]]), _t([[0, 1]]), torch.tensor([1]))


def test_losses_reject_bad_shapes():
    with pytest.raises(ValueError, match="labels"):
        image_to_text_contrastive(torch.rand(3, 2), torch.rand(3, 2), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="prototypes"):
        prototype_ce(torch.rand(3, 2), torch.rand(2, 2, 2), torch.tensor([0, 1, 0]))
