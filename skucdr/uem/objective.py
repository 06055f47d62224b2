"""UEM's two-stage training objective (IDSE then CDSM), driven by the skorch engine.

See :class:`skucdr.UniversalCDRRetriever` for the method and ``docs/methods.md`` for the
reconstructed choices.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import torch
from torch.nn import functional as F

from ..cluster import domain_prototypes
from ..nn.domain_norm import domain_codes
from ..nn.prototypes import momentum_update_bank
from ..nn.training import RowObjective
from .losses import (
    domain_adversarial_loss,
    ipm_weight,
    prototype_nce,
    semantic_enhanced_loss,
    semantic_preserving_loss,
    switchable_nn_loss,
    two_view_nce,
)

__all__ = ["UEMObjective"]


def _module_forward(module, x):
    """The default features of :class:`UEMObjective`: the module's own forward."""
    return module(x)


class UEMObjective(RowObjective):
    """IDSE (stage 1) and CDSM (stage 2) losses with memory banks and prototypes.

    Parameters
    ----------
    X : Tensor
        The training rows on the CPU (images already shaped ``(n, C, H, W)``).
    codes : ndarray of shape (n,)
        Domain code of every row.
    params : Mapping
        The hyper-parameters of :class:`skucdr.UniversalCDRRetriever` (its
        ``get_params()``); the objective reads ``batch_size``, ``tau``,
        ``n_prototypes``, ``merge_prototypes``, ``merge_rule``, ``semantic_enhanced``,
        ``alignment`` and ``matching`` from it.
    generator : torch.Generator
        Seeds the batches and the augmentation.
    augment : callable
        ``augment(batch, generator)``: the training views.
    stage1_epochs : int
        Epochs of IDSE; the rest of the fit is CDSM.
    max_prototypes : int
        Largest k of the elbow rule.
    seed : int
        Seeds the prototype k-means.
    embed : callable, default=None
        ``embed(module, x)`` gives the L2-normalised features the objective trains
        (default: ``module(x)``; TextPhaseRetriever's warm-up passes its stage-1 image
        features).
    min_steps : int, default=0
        Fewest optimiser steps of an epoch (:class:`~skucdr.nn.training.DomainBalancedBatches`).
    """

    #: memory-bank momentum ``beta`` of Eq. 5 (NPID's 0.5; docs/methods.md)
    BANK_MOMENTUM = 0.5
    #: temperature of the two-view instance term (MoCo v2's and UCDIR's)
    VIEW_TAU = 0.2
    #: the elbow estimate of k is redone every this many prototype refreshes
    ELBOW_EVERY = 5
    STATE = ("banks", "prototypes", "assignment", "alpha", "stage", "_k_cache", "_refreshes")

    #: UniversalCDRRetriever's defaults of the hyper-parameters the objective reads
    #: (``tests/test_retriever_uem.py`` checks that they agree): what another method
    #: that runs UEM's stage 1 (TPSNet's warm-up) starts from
    DEFAULTS = {"tau": 0.07, "n_prototypes": "elbow", "merge_prototypes": True,
                "merge_rule": "eq9", "semantic_enhanced": True, "alignment": None,
                "matching": None}

    def __init__(self, X, codes, *, params, generator, augment, stage1_epochs,
                 max_prototypes, seed, embed=None, min_steps=0):
        self.hp = SimpleNamespace(**params)
        self._init_rows(X, codes, self.hp.batch_size, generator, min_steps)
        self.augment = augment
        self.stage1_epochs = stage1_epochs
        self.max_prototypes = max_prototypes
        self.seed = seed
        # features trained by the objective: the module's forward unless told otherwise
        self.embed = embed if embed is not None else _module_forward
        self._k_cache = None
        self._refreshes = 0
        self.banks = None
        self.prototypes = None  # list (per domain) of (C~, D) tensors, shared rows
        self.assignment = None  # LongTensor (n,) of shared prototype ids
        self.frozen = None
        self.alpha = 0.0
        self.stage = 1

    def state_dict(self):
        state = super().state_dict()
        state["frozen"] = None if self.frozen is None else self.frozen.state_dict()
        return state

    def load_state_dict(self, state, net):
        super().load_state_dict(state, net)
        self.frozen = None
        if state["frozen"] is not None:  # the embedder as it was when stage 2 began
            self.frozen = copy.deepcopy(net.module_.embedder).eval()
            self.frozen.load_state_dict(state["frozen"])
            for p in self.frozen.parameters():
                p.requires_grad_(False)

    # -------------------------------------------------------------- epoch state
    def _embed_all(self, net):
        """The trained features of every row (eval mode, chunked)."""
        module = net.module_
        return self.embed_rows(net, lambda x, codes: self.embed(module, x))

    def on_epoch_begin(self, net, epoch):
        if self.banks is None:  # Eq. 5: banks start from the initial network's features
            feats = self._embed_all(net)
            self.banks = [feats[torch.from_numpy(self.codes == d)].clone()
                          for d in range(self.n_domains)]
        self.stage = 1 if epoch < self.stage1_epochs else 2
        if self.stage == 2 and self.frozen is None and self.hp.alignment == "spda":
            # only the semantic-preserving regulariser (Eq. 14) reads the frozen copy
            self.frozen = copy.deepcopy(net.module_.embedder).eval()
            for p in self.frozen.parameters():
                p.requires_grad_(False)
        self.alpha = ipm_weight(epoch, self.stage1_epochs) if self.stage == 1 else 1.0
        needs_prototypes = self.alpha > 1e-2 or self.stage == 2
        if needs_prototypes and self.n_domains >= 1:
            self._refresh_prototypes(net, epoch)
        net.history.record("alpha", self.alpha)
        net.history.record("stage", self.stage)
        if self.prototypes is not None:
            net.history.record("n_prototypes", int(self.prototypes[0].shape[0]))

    def _prototype_counts(self, banks, epoch):
        """k per domain: the elbow rule, re-estimated every ``ELBOW_EVERY`` refreshes."""
        from ..cluster import choose_n_prototypes_elbow

        if self.hp.n_prototypes != "elbow":
            return {d: int(self.hp.n_prototypes) for d in range(self.n_domains)}
        if self._k_cache is None or self._refreshes % self.ELBOW_EVERY == 0:
            self._k_cache = {
                d: choose_n_prototypes_elbow(
                    bank, k_max=max(2, min(self.max_prototypes, len(bank) // 10)),
                    n_redo=1, random_state=self.seed + epoch, n_threads=self.CLUSTER_THREADS,
                )
                for d, bank in enumerate(banks)
            }
        return self._k_cache

    def _refresh_prototypes(self, net, epoch):
        banks = [b.cpu().numpy() for b in self.banks]
        feats = np.concatenate(banks)
        domains = np.concatenate([np.full(len(b), d) for d, b in enumerate(banks)])
        self.prototypes, labels = domain_prototypes(
            feats, domains, self._prototype_counts(banks, epoch),
            merge=self.hp.merge_prototypes, merge_rule=self.hp.merge_rule,
            max_prototypes=self.max_prototypes,
            random_state=self.seed + epoch, n_jobs=self.CLUSTER_THREADS, device=net.device,
        )
        self._refreshes += 1
        # labels follow the order of `feats` (bank order); map back to row order.
        bank_order = np.concatenate([np.flatnonzero(self.codes == d)
                                     for d in range(self.n_domains)])
        assignment = np.empty(len(self.codes), dtype=np.int64)
        assignment[bank_order] = labels
        self.assignment = torch.from_numpy(assignment).to(net.device)

    # ------------------------------------------------------------------- losses
    def _forward(self, net, images):
        """An augmented view of a batch's ``images`` and its features (inside
        :func:`~skucdr.nn.domain_norm.domain_codes` for the batch)."""
        x = self.augment(images, self.generator)
        return x, self.embed(net.module_, x)

    def _update_banks(self, z_parts, batch):
        for d, (z_d, rows) in enumerate(zip(z_parts, batch)):
            local = self.local_index[rows].to(z_d.device)
            momentum_update_bank(self.banks[d], local, z_d, self.BANK_MOMENTUM)

    def losses(self, net, batch):
        rows = torch.cat(batch)
        images = self.X[rows].to(net.device)  # read once (decoded, if lazy)
        codes = self.codes_t[rows].to(net.device)
        sizes = [len(b) for b in batch]
        with domain_codes(net.module_, codes):  # once for both views
            x, z = self._forward(net, images)
            if self.stage == 1:
                _, z2 = self._forward(net, images)  # the second view of the instance term
        z_parts = list(torch.split(z, sizes))
        if self.stage == 1:
            views = list(torch.split(z2, sizes))
            out = self._stage1_losses(z_parts, batch, views)
            # the bank entry of an image: the mean of its two views
            bank_parts = [F.normalize(a.detach() + b.detach(), dim=1)
                          for a, b in zip(z_parts, views)]
        else:
            out = self._stage2_losses(net, x, codes, z, z_parts, batch, sizes)
            bank_parts = [z_d.detach() for z_d in z_parts]
        self._pending_bank_update = (bank_parts, batch)
        return out

    def after_backward(self, net):
        """Apply the memory-bank update of Eq. 5 (the banks are in the autograd graph)."""
        self._update_banks(*self._pending_bank_update)
        self._pending_bank_update = None

    def _stage1_losses(self, z_parts, batch, views=None):
        """IDSE losses: the two-view instance term between ``z_parts`` and ``views``, and
        the prototype NCE and semantic-enhanced loss weighted by the ramp ``alpha``.

        Without ``views``: no instance term, the prototype terms alone at the current
        ``alpha`` (1 in stage 2).
        """
        pnce, sel = [], []
        for d, (z_d, rows) in enumerate(zip(z_parts, batch)):
            if self.prototypes is not None and self.alpha > 1e-2:
                assign = self.assignment[rows.to(self.assignment.device)]
                both = [z_d] if views is None else [z_d, views[d]]
                pnce.extend(prototype_nce(v, self.prototypes[d], assign, self.hp.tau) / len(both)
                            for v in both)
                if self.hp.semantic_enhanced:
                    sel.extend(semantic_enhanced_loss(v, self.prototypes[d], self.hp.tau) / len(both)
                               for v in both)
        out = {}
        total = z_parts[0].new_zeros(())
        if views is not None:
            out["loss_ince"] = torch.stack([two_view_nce(z_d, v_d, self.VIEW_TAU)
                                            for z_d, v_d in zip(z_parts, views)]).sum()
            total = total + out["loss_ince"]
        if pnce:
            out["loss_pnce"] = torch.stack(pnce).sum()
            total = total + self.alpha * out["loss_pnce"]
        if sel:
            out["loss_sel"] = torch.stack(sel).sum()
            total = total + self.alpha * out["loss_sel"]
        out["loss"] = total
        return out

    def _stage2_losses(self, net, x, codes, z, z_parts, batch, sizes):
        out = {}
        total = z.new_zeros(())
        if self.n_domains > 1 and self.hp.alignment is not None:
            out["loss_dal"] = domain_adversarial_loss(net.module_.discriminator(z), codes)
            total = total + out["loss_dal"]
        if self.hp.alignment == "spda":
            with torch.no_grad(), domain_codes(self.frozen, codes):
                z_frozen = self.frozen(x)
            spr = [semantic_preserving_loss(z_d, f_d)
                   for z_d, f_d in zip(z_parts, torch.split(z_frozen, sizes))]
            out["loss_spr"] = torch.stack(spr).sum()
            total = total + out["loss_spr"]
        if self.n_domains > 1 and self.hp.matching is not None:
            terms, convincing = [], []
            for a, z_a in enumerate(z_parts):
                for b in range(self.n_domains):
                    if b == a:
                        continue
                    loss, conv = switchable_nn_loss(
                        z_a, self.prototypes[a], self.prototypes[b], self.banks[b], self.hp.tau,
                        switchable=self.hp.matching == "sn2m",
                    )
                    terms.append(loss)
                    convincing.append(conv.float().mean())
            # average over the other domains, summed over query domains (Eq. 18 for 2)
            out["loss_sn2m"] = torch.stack(terms).sum() / max(1, self.n_domains - 1)
            out["stat_convincing_rate"] = torch.stack(convincing).mean().detach()
            total = total + out["loss_sn2m"]
        if not out:  # nothing to align or match: keep IDSE's semantic terms
            return self._stage1_losses(z_parts, batch)
        out["loss"] = total
        return out

    def release(self):
        """Drop the training data, banks and frozen copy (not needed after fit)."""
        self._release_rows()
        self.banks = None
        self.frozen = None
        self.assignment = None
        self.prototypes = None
