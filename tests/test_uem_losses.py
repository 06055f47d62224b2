"""Each UEM loss pinned to its equation on a small, hand-checkable example."""

import math

import pytest
import torch
from torch.nn import functional as F

from skucdr.uem.losses import (
    GradientReversal,
    domain_adversarial_loss,
    ipm_weight,
    product_distance,
    prototype_nce,
    semantic_enhanced_loss,
    semantic_preserving_loss,
    switchable_nn_loss,
)

E1, E2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])


def test_prototype_nce_matches_eq7():
    protos = torch.stack([E1, E2])
    z = torch.stack([E2])
    tau = 1.0
    expected = -math.log(math.e / (math.e + 1))
    assert prototype_nce(z, protos, torch.tensor([1]), tau).item() == pytest.approx(expected)


def test_ipm_weight_is_the_sigmoid_ramp_of_eq10():
    assert ipm_weight(50, 100) == pytest.approx(0.5)
    assert ipm_weight(0, 100) == pytest.approx(1 / (1 + math.exp(50)))
    assert ipm_weight(52, 100) == pytest.approx(1 / (1 + math.exp(-2)))


def test_semantic_enhanced_loss_matches_eq11():
    protos = torch.stack([E1, E2])
    z = torch.stack([E1])
    tau = 1.0
    w = torch.softmax(torch.tensor([1.0, 0.0]), 0)
    expected = w[0] * 0.0 + w[1] * math.sqrt(2)
    assert semantic_enhanced_loss(z, protos, tau).item() == pytest.approx(expected.item(), rel=1e-6)


def test_domain_adversarial_loss_is_bce_for_two_domains():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    codes = torch.tensor([0, 1])
    # softmax over two logits == sigmoid of their difference: Eq. 13's BCE
    p0 = torch.sigmoid(torch.tensor(2.0))
    p1 = torch.sigmoid(torch.tensor(1.0))
    expected = -(torch.log(p0) + torch.log(p1)) / 2
    assert domain_adversarial_loss(logits, codes).item() == pytest.approx(expected.item(), rel=1e-6)


def test_gradient_reversal_flips_the_gradient():
    x = torch.ones(3, requires_grad=True)
    GradientReversal(2.0)(x).sum().backward()
    assert torch.equal(x.grad, torch.full((3,), -2.0))


def test_semantic_preserving_loss_matches_eq14():
    z = torch.stack([E1, E2])
    z_frozen = torch.stack([E1, E1])
    # cos: [[1,0],[0,1]] vs [[1,1],[1,1]] -> squared diffs 0,1,1,0
    # dist: [[0,sqrt2],[sqrt2,0]] vs zeros -> squared diffs 0,2,2,0
    expected = (0 + 1 + 1 + 0 + 0 + 2 + 2 + 0) / 4
    assert semantic_preserving_loss(z, z_frozen).item() == pytest.approx(expected, rel=1e-5)
    assert semantic_preserving_loss(z, z).item() == pytest.approx(0.0, abs=1e-6)


def test_product_distance_is_one_minus_cos_times_l2():
    u = torch.tensor([[1.0, 0.0]])
    v = torch.tensor([[0.0, 2.0], [3.0, 0.0]])
    got = product_distance(u, v)
    assert got[0, 0].item() == pytest.approx(1.0 * math.sqrt(5))
    assert got[0, 1].item() == pytest.approx(0.0, abs=1e-6)


def test_switchable_nn_loss_uses_the_neighbour_only_when_convincing():
    tau = 1.0
    own = torch.stack([E1, E2])            # P^A'
    other = torch.stack([E1, E2])          # P^B', same shared rows
    bank = torch.stack([F.normalize(torch.tensor([1.0, 0.1]), dim=0), -E1])
    z = torch.stack([E1, -E1 * 0 + F.normalize(torch.tensor([0.2, 1.0]), dim=0)])
    loss, convincing = switchable_nn_loss(z, own, other, bank, tau)
    # query 0: own prototype 0; nearest bank item 0, whose prototype is 0 -> convincing
    # query 1: own prototype 1; nearest bank item 0 (prototype 0) -> not convincing
    assert convincing.tolist() == [True, False]
    # the denominator: every prototype of B and the neighbour (not the whole bank of B)
    logits_p, pos_b = z @ other.t(), z @ bank[0]
    denom = torch.logsumexp(torch.cat([logits_p, pos_b[:, None]], 1), 1)
    num0 = torch.logaddexp(logits_p[0, 0], pos_b[0])
    num1 = logits_p[1, 1]
    expected = ((denom[0] - num0) + (denom[1] - num1)) / 2
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    # the UCDIR-style ablation always takes the neighbour as the positive
    loss_nn, _ = switchable_nn_loss(z, own, other, bank, tau, switchable=False)
    expected_nn = ((denom[0] - pos_b[0]) + (denom[1] - pos_b[1])) / 2
    assert loss_nn.item() == pytest.approx(expected_nn.item(), rel=1e-6)
