"""UEM's two-stage training objective (IDSE then CDSM), driven by the skorch engine.

See :class:`skucdr.UniversalCDRRetriever` for the method and the reconstructed choices.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .domain_norm import domain_codes
from .training import RowObjective
from .uem_losses import (
    GradientReversal,
    domain_adversarial_loss,
    instance_nce,
    ipm_weight,
    prototype_nce,
    semantic_enhanced_loss,
    semantic_preserving_loss,
    switchable_nn_loss,
    two_view_nce,
)

__all__ = ["UEMModule", "UEMObjective"]


@torch.no_grad()
def momentum_update_bank(bank, index, features, momentum):
    """Move memory-bank rows ``index`` towards ``features`` and re-normalise them (NPID):
    ``bank[index] <- normalize(momentum * bank[index] + (1 - momentum) * features)``."""
    mixed = momentum * bank[index] + (1 - momentum) * features
    bank[index] = F.normalize(mixed, dim=1)


def domain_prototypes(features, domains, n_prototypes, *, merge, max_prototypes,
                      random_state, n_jobs, device, merge_rule="eq9"):
    """Per-domain prototypes of ``features`` (rows of domains ``0 .. n_domains - 1``).

    Per-domain spherical k-means, translated, matched and (with ``merge``) merged across
    domains by :class:`~skucdr.cluster.PrototypeClusterer`; shared by UEM's objective and
    TPSNet's stage 2.

    Returns
    -------
    prototypes : list of Tensor of shape (k_d, dim)
        Prototypes of every domain (merged pairs share a row), float32 on ``device``.
    labels : ndarray of shape (n,), int
        Shared prototype id of every row, in the order of ``features``.
    """
    from ..cluster import PrototypeClusterer

    clusterer = PrototypeClusterer(
        n_prototypes=n_prototypes,
        merge=merge,
        merge_rule=merge_rule,
        max_prototypes=max_prototypes,
        random_state=random_state,
        n_jobs=n_jobs,
    ).fit(features, sample_domain=domains)
    prototypes = [
        torch.as_tensor(clusterer.domain_centers_[d], dtype=torch.float32, device=device)
        for d in range(int(domains.max()) + 1)
    ]
    return prototypes, clusterer.labels_


def _module_forward(module, x):
    """The default features of :class:`UEMObjective`: the module's own forward."""
    return module(x)


class UEMModule(nn.Module):
    """The trainable parts of UEM: the embedding network and the domain classifier.

    Parameters
    ----------
    embedder : torch.nn.Module
        Maps a batch to L2-normalised embeddings of width ``n_components``.
    n_components : int
        Embedding width.
    n_domains : int
        Number of domains the classifier tells apart.
    hidden : int, default=256
        Width of the classifier's hidden layer (the paper: "two fully-connected layers").
    """

    def __init__(self, embedder, n_components, n_domains, hidden=256):
        super().__init__()
        self.embedder = embedder
        self.discriminator = nn.Sequential(
            GradientReversal(1.0),
            nn.Linear(n_components, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, max(2, n_domains)),
        )

    def forward(self, x):
        return self.embedder(x)


class UEMObjective(RowObjective):
    """IDSE (stage 1) and CDSM (stage 2) losses with memory banks and prototypes.

    Parameters mirror :class:`skucdr.UniversalCDRRetriever`; ``X`` is the training data
    as a CPU tensor (images already shaped ``(n, C, H, W)``), ``codes`` the domain code
    of every row; ``embed(module, x)`` gives the L2-normalised features the objective
    trains (default: ``module(x)``; TextPhaseRetriever's IDSE warm-up passes its
    stage-1 image features).
    """

    def __init__(
        self,
        X,
        codes,
        *,
        batch_size,
        generator,
        augment,
        tau,
        bank_momentum,
        instance_negatives,
        stage1_epochs,
        n_prototypes,
        max_prototypes,
        merge_prototypes,
        semantic_enhanced,
        alignment,
        matching,
        seed,
        elbow_every=5,
        sn2m_instance_negatives=True,
        view_tau=0.2,
        stage2_instance=False,
        embed=None,
        merge_rule="eq9",
    ):
        self._init_rows(X, codes, batch_size, generator)
        self.augment = augment
        self.tau = tau
        self.bank_momentum = bank_momentum
        self.instance_negatives = instance_negatives
        self.stage1_epochs = stage1_epochs
        self.n_prototypes = n_prototypes
        self.max_prototypes = max_prototypes
        self.merge_prototypes = merge_prototypes
        self.merge_rule = merge_rule
        self.semantic_enhanced = semantic_enhanced
        self.alignment = alignment
        self.matching = matching
        self.seed = seed
        self.elbow_every = elbow_every
        self.sn2m_instance_negatives = sn2m_instance_negatives
        self.view_tau = view_tau
        self.stage2_instance = stage2_instance
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
        if self.stage == 2 and self.frozen is None and self.alignment == "spda":
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
        """k per domain: the elbow rule, re-estimated every ``elbow_every`` refreshes."""
        from ..cluster import choose_n_prototypes_elbow

        if self.n_prototypes != "elbow":
            return {d: int(self.n_prototypes) for d in range(self.n_domains)}
        if self._k_cache is None or self._refreshes % self.elbow_every == 0:
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
            merge=self.merge_prototypes, merge_rule=self.merge_rule,
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
    def _forward(self, net, batch):
        """An augmented view of the batch's rows, their domain codes and their features."""
        rows = torch.cat(batch)
        x = self.augment(self.X[rows].to(net.device), self.generator)
        codes = self.codes_t[rows].to(net.device)
        with domain_codes(net.module_, codes):
            z = self.embed(net.module_, x)
        return x, codes, z, [len(b) for b in batch]

    def _update_banks(self, z_parts, batch):
        for d, (z_d, rows) in enumerate(zip(z_parts, batch)):
            local = self.local_index[rows].to(z_d.device)
            momentum_update_bank(self.banks[d], local, z_d, self.bank_momentum)

    def _instance_term(self, z_parts, batch, views=None):
        """Eq. 6 (bank or batch negatives) or, with ``views``, the two-view NT-Xent."""
        ince = []
        for d, (z_d, rows) in enumerate(zip(z_parts, batch)):
            if views is not None:
                ince.append(two_view_nce(z_d, views[d], self.view_tau))
            else:
                local = self.local_index[rows].to(z_d.device)
                ince.append(instance_nce(z_d, self.banks[d], local, self.tau,
                                         negatives=self.instance_negatives))
        return torch.stack(ince).sum()

    def losses(self, net, batch):
        x, codes, z, sizes = self._forward(net, batch)
        z_parts = list(torch.split(z, sizes))
        views = None
        instance_term = self.stage == 1 or self.stage2_instance
        if self.instance_negatives == "views" and instance_term:
            _, _, z2, _ = self._forward(net, batch)
            views = list(torch.split(z2, sizes))
        if self.stage == 1:
            out = self._stage1_losses(z_parts, batch, views)
        else:
            out = self._stage2_losses(net, x, codes, z, z_parts, batch, sizes, views)
        if views is not None:  # the bank entry of an image: the mean of its two views
            bank_parts = [F.normalize(a.detach() + b.detach(), dim=1)
                          for a, b in zip(z_parts, views)]
        else:
            bank_parts = [z_d.detach() for z_d in z_parts]
        self._pending_bank_update = (bank_parts, batch)
        return out

    def after_backward(self, net=None):
        """Apply the memory-bank update of Eq. 5 (the banks are in the autograd graph)."""
        self._update_banks(*self._pending_bank_update)
        self._pending_bank_update = None

    def _stage1_losses(self, z_parts, batch, views=None, instance_term=True):
        """IDSE losses; ``views`` holds the second augmented view with two-view NCE.

        ``instance_term=False`` leaves out the instance term (the prototype NCE and the
        semantic-enhanced loss only, at full weight).
        """
        pnce, sel = [], []
        for d, (z_d, rows) in enumerate(zip(z_parts, batch)):
            if self.prototypes is not None and self.alpha > 1e-2:
                assign = self.assignment[rows.to(self.assignment.device)]
                both = [z_d] if views is None else [z_d, views[d]]
                pnce.extend(prototype_nce(v, self.prototypes[d], assign, self.tau) / len(both)
                            for v in both)
                if self.semantic_enhanced:
                    sel.extend(semantic_enhanced_loss(v, self.prototypes[d], self.tau) / len(both)
                               for v in both)
        out = {}
        total = z_parts[0].new_zeros(())
        if instance_term:
            out["loss_ince"] = self._instance_term(z_parts, batch, views)
            total = total + out["loss_ince"]
        if pnce:
            out["loss_pnce"] = torch.stack(pnce).sum()
            total = total + self.alpha * out["loss_pnce"]
        if sel:
            out["loss_sel"] = torch.stack(sel).sum()
            total = total + self.alpha * out["loss_sel"]
        out["loss"] = total
        return out

    def _stage2_losses(self, net, x, codes, z, z_parts, batch, sizes, views=None):
        out = {}
        total = z.new_zeros(())
        if self.n_domains > 1 and self.alignment is not None:
            out["loss_dal"] = domain_adversarial_loss(net.module_.discriminator(z), codes)
            total = total + out["loss_dal"]
        if self.alignment == "spda":
            with torch.no_grad(), domain_codes(self.frozen, codes):
                z_frozen = self.frozen(x)
            spr = [semantic_preserving_loss(z_d, f_d)
                   for z_d, f_d in zip(z_parts, torch.split(z_frozen, sizes))]
            out["loss_spr"] = torch.stack(spr).sum()
            total = total + out["loss_spr"]
        if self.n_domains > 1 and self.matching is not None:
            terms, convincing = [], []
            for a, z_a in enumerate(z_parts):
                for b in range(self.n_domains):
                    if b == a:
                        continue
                    loss, conv = switchable_nn_loss(
                        z_a, self.prototypes[a], self.prototypes[b], self.banks[b], self.tau,
                        switchable=self.matching == "sn2m",
                        instance_negatives=self.sn2m_instance_negatives,
                    )
                    terms.append(loss)
                    convincing.append(conv.float().mean())
            # average over the other domains, summed over query domains (Eq. 18 for 2)
            out["loss_sn2m"] = torch.stack(terms).sum() / max(1, self.n_domains - 1)
            out["stat_convincing_rate"] = torch.stack(convincing).mean().detach()
            total = total + out["loss_sn2m"]
        if not out:  # nothing to align or match: keep IDSE's semantic terms
            return self._stage1_losses(z_parts, batch, views,
                                       instance_term=self.stage2_instance)
        if self.stage2_instance:
            out["loss_ince"] = self._instance_term(z_parts, batch, views)
            total = total + out["loss_ince"]
        out["loss"] = total
        return out

    def release(self):
        """Drop the training data, banks and frozen copy (not needed after fit)."""
        self._release_rows()
        self.banks = None
        self.frozen = None
        self.assignment = None
        self.prototypes = None
