"""TPSNet's two-stage training objective (DPG then TPDP), driven by the skorch engine.

See :class:`skucdr.TextPhaseRetriever` for the method and ``docs/methods.md`` for the
reconstructed choices.
Epochs run in three phases (``epoch`` counts from 0)::

    [0, warmup_epochs)                      warm-up: UEM's stage 1 on the image features
    [warmup_epochs, stage1_epochs)          DPG: pseudo-labels, then domain prompts
    [stage1_epochs, max_epochs)             TPDP: dual-prior network, L_pce + L_i2tce

The first two phases are TPSNet's stage 1 (DPG), the last is stage 2.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch
from torch.nn import functional as F

from ..cluster import (
    choose_n_prototypes_elbow,
    domain_prototypes,
    merge_prototypes,
    spherical_kmeans,
)
from ..nn.domain_norm import domain_codes
from ..nn.training import RowObjective
from ..uem.losses import prototype_nce, semantic_enhanced_loss
from ..uem.objective import UEMObjective
from .losses import (
    image_to_text_contrastive,
    label_smoothed_i2t_ce,
    momentum_update_prototypes,
    prototype_ce,
    text_to_image_contrastive,
)

__all__ = ["TPSNetObjective", "align_domain_clusters"]


def _image_features(module, x):
    """Stage-1 image features of a :class:`TPSNetModule` (the IDSE warm-up trains them)."""
    return module.image_features(x)


def align_domain_clusters(centers, means):
    """Give the clusters of every domain the id of the matching cluster of the others.

    Domains are taken in order; the running reference set starts as the first domain's
    centres. The centres of each next domain are translated into the reference frame by
    the difference of the domain means (UEM Eq. 8) and matched to the reference with the
    Hungarian algorithm (:func:`skucdr.cluster.merge_prototypes`); every matched cluster
    takes the reference id, whatever its distance (TPSNet needs class ``c`` to mean the
    same category in every domain), and unmatched clusters (a domain with more clusters)
    get new ids and join the reference set.

    Parameters
    ----------
    centers : list of ndarray of shape (k_d, dim)
        Cluster centres of every domain, in its own frame.
    means : list of ndarray of shape (dim,)
        Mean feature of every domain.

    Returns
    -------
    local_to_shared : list of ndarray of shape (k_d,), int
        Shared id of every local cluster.
    n_shared : int
        Number of shared ids.
    """
    reference = np.asarray(centers[0], dtype=np.float64)
    ref_mean = np.asarray(means[0], dtype=np.float64)
    maps = [np.arange(len(reference), dtype=np.int64)]
    for P, mean in zip(centers[1:], means[1:]):
        match = merge_prototypes(reference, P, ref_mean, mean).matching
        local = np.full(len(P), -1, dtype=np.int64)
        local[match[:, 1]] = match[:, 0]
        extra = np.flatnonzero(local < 0)
        local[extra] = len(reference) + np.arange(len(extra))
        moved = np.asarray(P, dtype=np.float64)[extra] + (ref_mean - mean)
        reference = np.concatenate([reference, moved])
        maps.append(local)
    return maps, len(reference)


class TPSNetObjective(RowObjective):
    """Warm-up, DPG and TPDP losses with pseudo-labels, prompts and prototypes.

    Parameters
    ----------
    X : Tensor
        The training images on the CPU, ``(n, C, H, W)``.
    codes : ndarray of shape (n,)
        Domain code of every row.
    params : Mapping
        The hyper-parameters of :class:`skucdr.TextPhaseRetriever` (its
        ``get_params()``); the objective reads ``batch_size``, ``n_prototypes``,
        ``max_prototypes``, ``text_prior``, ``alpha``, ``beta``, ``gamma`` and ``tau``.
    generator : torch.Generator
        Seeds the batches and the augmentation.
    augment : callable
        ``augment(batch, generator)``: the training views of every phase.
    warmup_epochs, stage1_epochs : int
        Where the warm-up and stage 1 (warm-up and prompts) end.
    seed : int
        Seeds the k-means.
    min_steps : int, default=0
        Fewest optimiser steps of an epoch (:class:`~skucdr.nn.training.DomainBalancedBatches`).
    """

    #: temperature of UEM's prototype terms (the warm-up's and stage 2's gamma terms)
    PROTOTYPE_TAU = 0.07
    #: momentum of the stage-2 class prototypes, ``P <- m P + (1 - m) I'``
    PROTOTYPE_MOMENTUM = 0.9
    #: scale of the cosine logits of the prompt losses and of L_i2tce (CLIP-ReID's)
    LOGIT_SCALE = 20.0
    #: label smoothing of L_i2tce
    EPSILON = 0.1

    STATE = ("phase", "features", "labels", "n_classes", "prototypes", "domain_k",
             "semantic", "embeddings")

    def __init__(self, X, codes, *, params, generator, augment, warmup_epochs,
                 stage1_epochs, seed, min_steps=0):
        self.hp = SimpleNamespace(**params)
        self._init_rows(X, codes, self.hp.batch_size, generator, min_steps)
        self.augment = augment
        self.warmup_epochs = warmup_epochs
        self.stage1_epochs = stage1_epochs
        self.seed = seed
        self.phase = None
        self.features = None  # frozen stage-1 image features (DPG)
        self.labels = None  # LongTensor (n,): shared pseudo-label of every row
        self.n_classes = None
        self.prototypes = None  # (n_domains, C, n_components)
        self.domain_k = None  # k of every domain's DPG k-means
        self.semantic = None  # (merged prototypes per domain, shared id per row): gamma
        # I' of every row for the next stage-2 refresh: the pass that starts stage 2,
        # then None until a fresh pass at the next refresh
        self.embeddings = None
        self._pending = None
        # the warm-up: UEM's stage 1, with UEM's defaults, on the stage-1 image features
        warmup = {**UEMObjective.DEFAULTS, "batch_size": self.hp.batch_size,
                  "tau": self.PROTOTYPE_TAU, "n_prototypes": self.hp.n_prototypes}
        self.idse = UEMObjective(
            X, codes, params=warmup, generator=generator,
            augment=augment, stage1_epochs=warmup_epochs,
            max_prototypes=self.hp.max_prototypes, seed=seed, embed=_image_features,
            min_steps=min_steps,
        )

    def state_dict(self):
        state = super().state_dict()
        state["idse"] = None if self.idse is None else self.idse.state_dict()
        return state

    def load_state_dict(self, state, net):
        super().load_state_dict(state, net)
        if state["idse"] is None:
            self._release_idse()
        else:
            self.idse.load_state_dict(state["idse"], net)

    # -------------------------------------------------------------- epoch state
    def on_epoch_begin(self, net, epoch):
        if epoch < self.warmup_epochs:
            self.phase = "warmup"
            self.idse.on_epoch_begin(net, epoch)
        elif epoch < self.stage1_epochs:
            if self.phase != "dpg":
                self.phase = "dpg"
                self._release_idse()
                self._cluster(net)
            elif self.hp.text_prior:
                self._repair_by_text(net)
        else:
            if self.phase != "tpdp":
                if self.labels is None:  # no DPG epochs: cluster right before stage 2
                    self._cluster(net)
                elif self.hp.text_prior:  # final re-pairing with the trained prompts
                    self._repair_by_text(net)
                self.phase = "tpdp"
                self._release_idse()
                self.features = None
                self._start_stage2(net)
            if self.hp.gamma > 0:
                self._refresh_semantic_prototypes(net, epoch)
        net.history.record("stage", 1 if self.phase in ("warmup", "dpg") else 2)
        if self.n_classes is not None:
            net.history.record("n_classes", self.n_classes)

    def _release_idse(self):
        if self.idse is not None:
            self.idse.release()
            self.idse = None

    def _cluster(self, net):
        """DPG pseudo-labels: per-domain spherical k-means, ids aligned across domains."""
        module = net.module_
        self.features = self.embed_rows(net, lambda x, c: _image_features(module, x))
        feats = self.features.cpu().numpy()
        centers, means, labels, ks = [], [], [], []
        for d in range(self.n_domains):
            X_d = feats[self.codes == d]
            seed = self.seed + d
            if self.hp.n_prototypes == "elbow":
                k = choose_n_prototypes_elbow(
                    X_d, k_min=2, k_max=max(2, min(self.hp.max_prototypes, len(X_d) // 10)),
                    random_state=seed, n_threads=self.CLUSTER_THREADS,
                )
            else:
                k = min(int(self.hp.n_prototypes), len(X_d))
            c, lab, _ = spherical_kmeans(X_d, k, random_state=seed,
                                         n_threads=self.CLUSTER_THREADS)
            centers.append(c)
            ks.append(k)
            means.append(X_d.mean(axis=0))
            labels.append(lab)
        maps, n_shared = align_domain_clusters(centers, means)
        assignment = np.empty(len(self.codes), dtype=np.int64)
        for d in range(self.n_domains):
            assignment[self.codes == d] = maps[d][labels[d]]
        self.n_classes = int(n_shared)
        self.domain_k = dict(enumerate(ks))
        self.labels = torch.from_numpy(assignment).to(net.device)

    @torch.no_grad()
    def _repair_by_text(self, net):
        """Re-pair every image with its most similar prompt of its domain (DPG)."""
        text = F.normalize(net.module_.prompt_features(self.n_classes), dim=-1)
        sims = torch.einsum("nd,ncd->nc", self.features, text[self.codes_t.to(net.device)])
        new = sims.argmax(dim=1)
        net.history.record("stat_repaired", float((new != self.labels).float().mean()))
        self.labels = new

    @torch.no_grad()
    def _start_stage2(self, net):
        """Freeze the prompts, store their features, initialise the class prototypes."""
        module = net.module_
        if module.prompts is not None:
            module.class_text = module.prompt_features(self.n_classes).detach()
            module.prompts.requires_grad_(False)
        z = self.embed_rows(net, module.embed)
        if self.hp.gamma > 0:  # the gamma terms' prototypes are refreshed from I'
            self.embeddings = z  # the first refresh's: nothing trained since
        C, dim = self.n_classes, z.shape[1]
        protos = torch.zeros(self.n_domains, C, dim, device=z.device)
        index = self.codes_t.to(z.device) * C + self.labels
        protos.view(-1, dim).index_add_(0, index, z)
        self.prototypes = F.normalize(protos, dim=-1)

    def _refresh_semantic_prototypes(self, net, epoch):
        """UEM's merged prototypes of the current embeddings ``I'`` (one per stage-2 epoch).

        Per-domain spherical k-means with the DPG's ``k``, translated, matched and merged
        across domains (:func:`~skucdr.cluster.domain_prototypes`), as UEM's
        stage 1 refreshes them on its memory banks, here on an eval-mode pass over all
        rows (the first refresh reuses the pass that started stage 2).
        """
        if self.embeddings is None:
            self.embeddings = self.embed_rows(net, net.module_.embed)
        z = self.embeddings.cpu().numpy()
        self.embeddings = None  # a fresh pass at the next refresh
        protos, labels = domain_prototypes(
            z, self.codes, self.domain_k, merge=True, max_prototypes=self.hp.max_prototypes,
            random_state=self.seed + epoch, n_jobs=self.CLUSTER_THREADS, device=net.device,
        )
        self.semantic = (protos, torch.from_numpy(labels).to(net.device))

    # ------------------------------------------------------------------ losses
    def losses(self, net, batch):
        rows = torch.cat(batch)
        if self.phase == "warmup":
            return self.idse.losses(net, batch)
        if self.phase == "dpg":
            return self._prompt_losses(net, rows)
        return self._tpdp_losses(net, rows)

    def after_backward(self, net):
        """Memory-bank (warm-up) or prototype (TPDP) momentum updates, after autograd."""
        if self.phase == "warmup":
            self.idse.after_backward(net)
            return
        if self._pending is None:
            return
        z, codes, labels = self._pending
        self._pending = None
        for d in range(self.n_domains):
            mask = codes == d
            if mask.any():
                momentum_update_prototypes(self.prototypes[d], z[mask], labels[mask],
                                           momentum=self.PROTOTYPE_MOMENTUM)

    def _prompt_losses(self, net, rows):
        module = net.module_
        rows = rows.to(net.device)
        v = self.features[rows]
        codes = self.codes_t.to(net.device)[rows]
        y = self.labels[rows]
        text = F.normalize(module.prompt_features(self.n_classes), dim=-1)
        t = text[codes, y]
        pair = codes * self.n_classes + y  # a (domain, class) pair is one label
        i2t = image_to_text_contrastive(v, t, pair, logit_scale=self.LOGIT_SCALE)
        t2i = text_to_image_contrastive(v, t, pair, logit_scale=self.LOGIT_SCALE)
        return {"loss_i2t": i2t, "loss_t2i": t2i, "loss": i2t + t2i}

    def _anchors(self, module):
        """Class anchors of L_i2tce in the embedding space, per domain (n_domains, C, D)."""
        return module.head.project_text(module.class_text)

    def _tpdp_losses(self, net, rows):
        module = net.module_
        device = net.device
        x = self.augment(self.X[rows].to(device), self.generator)
        rows_d = rows.to(device)
        codes = self.codes_t.to(device)[rows_d]
        y = self.labels[rows_d]
        with domain_codes(module, codes):
            z = module.embed(x, codes)
        out = {"loss_pce": prototype_ce(z, self.prototypes[codes], y, tau=self.hp.tau)}
        total = self.hp.alpha * out["loss_pce"]
        if module.prompts is not None:
            anchors = self._anchors(module)[codes]
            out["loss_i2tce"] = label_smoothed_i2t_ce(
                z, anchors, y, epsilon=self.EPSILON, logit_scale=self.LOGIT_SCALE
            )
            total = total + self.hp.beta * out["loss_i2tce"]
        if self.hp.gamma > 0:
            protos, assignment = self.semantic
            pnce, sel = [], []
            for d in range(self.n_domains):
                mask = codes == d
                if mask.any():
                    z_d, ids = z[mask], assignment[rows_d[mask]]
                    pnce.append(prototype_nce(z_d, protos[d], ids, self.PROTOTYPE_TAU))
                    sel.append(semantic_enhanced_loss(z_d, protos[d], self.PROTOTYPE_TAU))
            out["loss_pnce"] = torch.stack(pnce).sum()
            out["loss_sel"] = torch.stack(sel).sum()
            total = total + self.hp.gamma * (out["loss_pnce"] + out["loss_sel"])
        self._pending = (z.detach(), codes, y)
        out["loss"] = total
        return out

    def release(self):
        """Drop the training data and per-row state (not needed after fit)."""
        self._release_rows()
        self.features = None
        self.labels = None
        self.prototypes = None
        self.semantic = None
        self.embeddings = None
        self._pending = None
        self._release_idse()
