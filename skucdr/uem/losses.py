"""UEM's losses, one function per equation of Wang, Du & Zhu (NeurIPS 2024).

All embeddings are L2-normalised rows; ``tau`` is the temperature (0.07 in the paper).
Each function returns a scalar tensor averaged over the batch (the paper writes sums;
means only rescale the learning rate and keep the weights of Eq. 12/18 comparable
across batch sizes).
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

__all__ = [
    "two_view_nce",
    "prototype_nce",
    "ipm_weight",
    "semantic_enhanced_loss",
    "domain_adversarial_loss",
    "semantic_preserving_loss",
    "product_distance",
    "switchable_nn_loss",
    "GradientReversal",
]


def two_view_nce(v1, v2, tau):
    r"""Instance discrimination between two augmented views (NT-Xent, SimCLR): the
    instance term of stage 1, in place of Eq. 6's memory-bank form (docs/methods.md).

    Each row's positive is its other view; the negatives are the other ``2n - 2`` views
    of the batch:

    .. math:: L = \frac{1}{2n}\sum_i -\log\frac{\exp(z_i\cdot z_{i'}/\tau)}
              {\sum_{j\ne i}\exp(z_i\cdot z_j/\tau)}

    Parameters
    ----------
    v1, v2 : Tensor of shape (n, dim)
        L2-normalised features of the two views.
    tau : float
        Temperature.

    Returns
    -------
    loss : Tensor (scalar)
    """
    n = v1.shape[0]
    z = torch.cat([v1, v2])
    logits = (z @ z.T / tau).fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(logits, target)


def prototype_nce(z, prototypes, assignment, tau):
    r"""Prototypical contrastive loss (Eq. 7): cross-entropy of ``z·p / tau`` to the own cluster.

    .. math:: L = \frac1B\sum_i -\log\frac{\exp(z_i\cdot p_{c_i}/\tau)}{\sum_c \exp(z_i\cdot p_c/\tau)}
    """
    return F.cross_entropy(z @ prototypes.t() / tau, assignment)


def ipm_weight(epoch, total_epochs):
    r"""The sigmoid ramp of Eq. 10: :math:`\alpha = 1 / (1 + \exp(0.5E - e))`."""
    return 1.0 / (1.0 + math.exp(0.5 * total_epochs - epoch))


def semantic_enhanced_loss(z, prototypes, tau):
    r"""Semantic-enhanced loss (Eq. 11): softmax-weighted Euclidean distance to prototypes.

    .. math:: L = \frac1B\sum_i\sum_c \mathrm{softmax}_c(z_i\cdot p_c/\tau)\,\lVert z_i - p_c\rVert_2

    The soft assignment is not detached: the loss both pulls ``z`` towards likely
    prototypes and sharpens the assignment, as Eq. 11 is written.
    """
    weights = torch.softmax(z @ prototypes.t() / tau, dim=1)
    dist = torch.cdist(z, prototypes)
    return (weights * dist).sum(dim=1).mean()


class _ReverseGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, lam):
        ctx.lam = lam
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.lam * grad, None


class GradientReversal(torch.nn.Module):
    """Identity forward, gradient multiplied by ``-lam`` backward (DANN's GRL)."""

    def __init__(self, lam=1.0):
        super().__init__()
        self.lam = lam

    def forward(self, x):
        return _ReverseGrad.apply(x, self.lam)


def domain_adversarial_loss(domain_logits, domain_codes):
    r"""Domain classification loss (Eq. 13).

    For two domains this is the binary cross-entropy of Eq. 13; for more domains the
    multi-class cross-entropy that generalises it. The encoder maximises it through a
    gradient-reversal layer placed before the classifier.
    """
    return F.cross_entropy(domain_logits, domain_codes)


def semantic_preserving_loss(z, z_frozen):
    r"""Semantic-preserving regulariser (Eq. 14) against the frozen stage-1 encoder.

    .. math:: L = \frac{1}{B^2}\sum_{i,j}\big[\cos(z_i,z_j)-\cos(z'_i,z'_j)\big]^2
              + \big[d(z_i,z_j)-d(z'_i,z'_j)\big]^2
    """
    zn, fn = F.normalize(z, dim=1), F.normalize(z_frozen, dim=1)
    cos_term = (zn @ zn.t() - fn @ fn.t()).pow(2)
    dist_term = (_pairwise_l2(z) - _pairwise_l2(z_frozen)).pow(2)
    return (cos_term + dist_term).mean()


def _pairwise_l2(z):
    sq = (z * z).sum(dim=1)
    d2 = (sq[:, None] + sq[None, :] - 2 * z @ z.t()).clamp_min(0)
    # sqrt has an infinite gradient at 0 (the diagonal): add a tiny floor.
    return torch.sqrt(d2 + 1e-12)


def product_distance(u, v):
    r"""Product distance of SN2M (Eqs. 15-17): :math:`(1 - \cos(u, v))\,\lVert u - v\rVert_2`.

    Returns the ``(len(u), len(v))`` matrix.
    """
    cos = F.normalize(u, dim=1) @ F.normalize(v, dim=1).t()
    return (1 - cos) * torch.cdist(u, v)


def switchable_nn_loss(z, own_prototypes, other_prototypes, other_bank, tau, *, switchable=True):
    r"""Switchable nearest-neighbour matching (SN2M, Eqs. 15-17), for queries of domain A.

    ``own_prototypes`` (:math:`P^{A'}`) and ``other_prototypes`` (:math:`P^{B'}`) are the
    unified prototype sets in the two domains' frames, with the same row for the same
    shared prototype, so translating :math:`p^A_{c_i}` into B (with the merge rule
    already applied) is taking the same row of ``other_prototypes``.

    For each query: its prototype :math:`s_i = \arg\min_j D(z_i, P^{A'}_j)` (Eq. 15), its
    nearest cross-domain instance :math:`n_i = \arg\min_j D(z_i, m^B_j)` (Eq. 16), and
    that instance's prototype :math:`t_i = \arg\min_c D(m^B_{n_i}, P^{B'}_c)`. The
    positives are :math:`P^{B'}_{s_i}`, plus :math:`m^B_{n_i}` when :math:`t_i = s_i`
    (the neighbour is "convincing"); the negatives are all of :math:`P^{B'}` and the
    neighbour. Eq. 17 as printed also puts the whole bank of B in the denominator, which
    pushes every same-category instance of B away from the query (:ref:`uem-stage2`).

    Parameters
    ----------
    switchable : bool, default=True
        False gives the UCDIR-style alternative used in the ablation: the nearest
        cross-domain neighbour is always a positive and no prototype is.

    Returns
    -------
    loss : Tensor
        Scalar loss.
    convincing : Tensor (B,) bool
        Which queries used their neighbour as a positive.
    """
    with torch.no_grad():
        s = product_distance(z, own_prototypes).argmin(dim=1)
        nn_idx = product_distance(z, other_bank).argmin(dim=1)
        t = product_distance(other_bank[nn_idx], other_prototypes).argmin(dim=1)
        convincing = t == s
    logits_p = z @ other_prototypes.t() / tau
    pos_b = (z * other_bank[nn_idx]).sum(dim=1) / tau
    denominator = torch.logsumexp(torch.cat([logits_p, pos_b[:, None]], dim=1), dim=1)
    pos_p = logits_p.gather(1, s[:, None]).squeeze(1)
    if switchable:
        numerator = torch.where(
            convincing, torch.logaddexp(pos_p, pos_b), pos_p
        )
    else:
        numerator = pos_b
        convincing = torch.ones_like(convincing)
    return (denominator - numerator).mean(), convincing
