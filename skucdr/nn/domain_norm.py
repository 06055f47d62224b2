"""Domain-specific batch normalisation: one set of statistics per domain.

Every batch-norm layer of an encoder normalises a feature with the mean and variance of
the batch. When the batch mixes domains, those statistics mix them too, and the layer
passes each domain's offset (colour, background, contrast, sharpness) on to the next:
the network has to learn to undo it. :class:`DomainBatchNorm` normalises each domain's
rows with that domain's own statistics (DSBN, Chang et al., CVPR 2019; AdaBN, Li et al.,
2018), so every layer sees each domain centred and scaled alike; the affine parameters
stay shared, so the layer is one function of the normalised feature for every domain.

The layers learn which rows belong to which domain from :func:`domain_codes`, a context
manager the training objectives and the retrievers' inference wrap around every forward
pass. At inference, a row of a domain that was not fitted (code ``-1``) and a forward
pass outside the context are normalised with the statistics of all fitted domains
together (the pooled mean and variance of the per-domain running statistics), which is
what an ordinary batch-norm layer would have stored.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["DomainBatchNorm", "convert_domain_batchnorm", "domain_codes"]


class DomainBatchNorm(nn.Module):
    """Batch norm with running statistics per domain and shared affine parameters.

    Works on ``(n, C)`` and ``(n, C, ...)`` inputs, like ``BatchNorm1d`` / ``BatchNorm2d``.
    The domain of every row comes from :func:`domain_codes` (codes ``0 .. n_domains - 1``;
    ``-1`` for a domain not fitted).

    In training mode each domain's rows are normalised with their own batch statistics,
    which update that domain's running statistics (exponential average with
    ``momentum``, as in ``torch.nn.BatchNorm2d``); rows of code ``-1``, or all rows when
    no codes are set, are normalised with their batch statistics without updating any.
    A domain with a single row in a batch is normalised with its running statistics
    (one row is too few for batch statistics; ``BatchNorm1d`` rejects it). In eval
    mode each row is normalised with its domain's running statistics, or with the
    pooled statistics of all domains for code ``-1``.

    Parameters
    ----------
    num_features : int
        Channels ``C``.
    n_domains : int
        Number of domains with their own statistics.
    eps : float, default=1e-5
        Added to the variance.
    momentum : float, default=0.1
        Weight of the new batch in the running statistics.
    affine : bool, default=True
        Learn a shared scale and shift.
    """

    #: the batch's :class:`DomainRuns`, set by :func:`domain_codes`; never saved (a class
    #: default, so that modules pickled before it existed read None)
    runs = None

    def __init__(self, num_features, n_domains, eps=1e-5, momentum=0.1, affine=True):
        super().__init__()
        if n_domains < 1:
            raise ValueError(f"n_domains must be at least 1, got {n_domains}.")
        self.num_features = int(num_features)
        self.n_domains = int(n_domains)
        self.eps = eps
        self.momentum = momentum
        if affine:
            self.weight = nn.Parameter(torch.ones(num_features))
            self.bias = nn.Parameter(torch.zeros(num_features))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        self.register_buffer("running_mean", torch.zeros(n_domains, num_features))
        self.register_buffer("running_var", torch.ones(n_domains, num_features))
        self.runs = None

    @classmethod
    def from_batchnorm(cls, bn, n_domains):
        """A :class:`DomainBatchNorm` starting from ``bn``'s affine and running statistics."""
        layer = cls(bn.num_features, n_domains, eps=bn.eps,
                    momentum=0.1 if bn.momentum is None else bn.momentum, affine=bn.affine)
        with torch.no_grad():
            if bn.affine:
                layer.weight.copy_(bn.weight)
                layer.bias.copy_(bn.bias)
            if bn.running_mean is not None:
                layer.running_mean.copy_(bn.running_mean.expand_as(layer.running_mean))
                layer.running_var.copy_(bn.running_var.expand_as(layer.running_var))
        layer.train(bn.training)
        return layer.to(device=bn.running_mean.device if bn.running_mean is not None else None)

    def extra_repr(self):
        return (f"{self.num_features}, n_domains={self.n_domains}, eps={self.eps}, "
                f"momentum={self.momentum}, affine={self.weight is not None}")

    def pooled_statistics(self):
        """Mean and variance of the union of the domains (equal weights)."""
        mean = self.running_mean.mean(dim=0)
        var = self.running_var.mean(dim=0) + (self.running_mean - mean).pow(2).mean(dim=0)
        return mean, var

    @property
    def codes(self):
        """The domain code of every row of the coming batch (set by :func:`domain_codes`),
        or None."""
        return None if self.runs is None else self.runs.codes

    def _codes_for(self, x):
        codes = self.codes
        if codes is None:
            return None
        if codes.shape != (x.shape[0],):
            raise RuntimeError(
                f"{type(self).__name__} got {x.shape[0]} rows but {tuple(codes.shape)} domain "
                "codes: set them with domain_codes(module, codes) for this very batch."
            )
        return codes.to(x.device)

    def forward(self, x):
        codes = self._codes_for(x)
        if self.training:
            return self._train_forward(x, codes)
        return self._eval_forward(x, codes)

    def _eval_forward(self, x, codes):
        if codes is not None and self.runs.all_fitted:
            mean, var = self.running_mean[codes], self.running_var[codes]
        elif codes is not None:
            mean, var = self.pooled_statistics()
            table_mean = torch.cat([self.running_mean, mean[None]])
            table_var = torch.cat([self.running_var, var[None]])
            slot = torch.where(codes < 0, self.n_domains, codes)
            mean, var = table_mean[slot], table_var[slot]
        else:
            mean, var = self.pooled_statistics()
            mean, var = mean.expand(x.shape[0], -1), var.expand(x.shape[0], -1)
        return self._normalize(x, mean, var)

    def _normalize(self, x, mean, var):
        shape = (x.shape[0], x.shape[1]) + (1,) * (x.ndim - 2)
        out = (x - mean.reshape(shape)) * torch.rsqrt(var.reshape(shape) + self.eps)
        if self.weight is not None:
            affine = (1, -1) + (1,) * (x.ndim - 2)
            out = out * self.weight.view(affine) + self.bias.view(affine)
        return out

    def _segment(self, x, domain):
        if domain < 0:  # not a fitted domain: its own batch statistics, nothing stored
            if x.shape[0] < 2:
                return self._eval_forward(x, None)
            return F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)
        if x.shape[0] < 2:
            return self._normalize(x, self.running_mean[domain].expand(1, -1),
                                   self.running_var[domain].expand(1, -1))
        return F.batch_norm(x, self.running_mean[domain], self.running_var[domain],
                            self.weight, self.bias, True, self.momentum, self.eps)

    def _train_forward(self, x, codes):
        if codes is None:
            return self._segment(x, -1)
        runs = self.runs
        if runs.order is not None:
            x = x[runs.order.to(x.device)]
        parts = [self._segment(part, d)
                 for part, d in zip(torch.split(x, runs.counts), runs.domains)]
        out = torch.cat(parts) if len(parts) > 1 else parts[0]
        if runs.order is not None:
            out = out[runs.inverse.to(x.device)]
        return out


class DomainRuns:
    """The rows of a batch grouped by domain, as every :class:`DomainBatchNorm` layer of
    a forward pass needs them: worked out once per batch by :func:`domain_codes` (one
    device-to-host copy, not one per layer).

    Attributes
    ----------
    codes : LongTensor
        The domain codes they were worked out from.
    order : LongTensor or None
        A stable sort of the rows by domain code; None when they are sorted already.
    inverse : LongTensor or None
        The permutation that undoes ``order``.
    domains, counts : list of int
        The domain code and the number of rows of every run of the sorted rows.
    all_fitted : bool
        Whether every code is a fitted domain (no ``-1``).
    """

    def __init__(self, codes, order, domains, counts):
        self.codes = codes
        self.order = order
        self.inverse = None if order is None else torch.argsort(order)
        self.domains, self.counts = domains, counts
        self.all_fitted = not domains or min(domains) >= 0

    @classmethod
    def of(cls, codes):
        """The runs of ``codes`` (a 1-D integer tensor)."""
        order, ordered = None, codes
        if codes.numel() > 1 and bool((codes[1:] < codes[:-1]).any()):
            order = torch.argsort(codes, stable=True)
            ordered = codes[order]
        domains, counts = torch.unique_consecutive(ordered, return_counts=True)
        return cls(codes, order, domains.tolist(), counts.tolist())


def convert_domain_batchnorm(module, n_domains):
    """Replace every ``BatchNorm1d`` / ``BatchNorm2d`` of ``module`` by a :class:`DomainBatchNorm`.

    Each new layer starts from the old one's affine parameters and running statistics
    (copied into every domain), so pretrained weights keep their meaning. ``module`` is
    changed in place and returned; a ``module`` that is itself a batch-norm layer is
    returned converted.

    Parameters
    ----------
    module : torch.nn.Module
    n_domains : int

    Returns
    -------
    torch.nn.Module
    """
    if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)) and module.track_running_stats:
        return DomainBatchNorm.from_batchnorm(module, n_domains)
    for name, child in module.named_children():
        converted = convert_domain_batchnorm(child, n_domains)
        if converted is not child:
            setattr(module, name, converted)
    return module


@contextmanager
def domain_codes(module, codes):
    """Tell every :class:`DomainBatchNorm` in ``module`` the domain of each row.

    Parameters
    ----------
    module : torch.nn.Module or None
        The network about to run a forward pass (None: nothing to set).
    codes : torch.Tensor of shape (n,), int
        Domain code of every row of the coming batch(es), ``-1`` for an unfitted domain.
    """
    layers = [] if module is None else [m for m in module.modules()
                                        if isinstance(m, DomainBatchNorm)]
    previous = [layer.runs for layer in layers]
    runs = DomainRuns.of(codes) if layers and codes is not None else None
    for layer in layers:
        layer.runs = runs
    try:
        yield
    finally:
        for layer, old in zip(layers, previous):
            layer.runs = old
