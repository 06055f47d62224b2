"""TPSNet's two-stage training objective (DPG then TPDP), driven by the skorch engine.

See :class:`skucdr.TextPhaseRetriever` for the method and the reconstructed choices.
Epochs run in three phases (``epoch`` counts from 0)::

    [0, warmup_epochs)                      warm-up: instance NCE of the RGB encoder
    [warmup_epochs, stage1_epochs)          DPG: pseudo-labels, then domain prompts
    [stage1_epochs, max_epochs)             TPDP: dual-prior network, L_pce + L_i2tce

The first two phases are TPSNet's stage 1 (DPG), the last is stage 2.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..cluster import choose_n_prototypes_elbow, merge_prototypes, spherical_kmeans
from .domain_norm import domain_codes
from .phase import phase_only
from .text import PromptLearner
from .tpsnet_losses import (
    image_to_text_contrastive,
    label_smoothed_i2t_ce,
    momentum_update_prototypes,
    prototype_ce,
    text_to_image_contrastive,
)
from .tpsnet_modules import (
    DualPriorFusion,
    PhaseCNN,
    TextQueryCrossAttention,
    TokenProjector,
)
from .training import RowObjective
from .uem_losses import instance_nce, prototype_nce, semantic_enhanced_loss, two_view_nce
from .uem_objective import UEMObjective, domain_prototypes, momentum_update_bank

__all__ = ["TPSNetModule", "TPSNetObjective", "align_domain_clusters", "two_view_nce"]


def _image_features(module, x):
    """Stage-1 image features of a :class:`TPSNetModule` (the IDSE warm-up trains them)."""
    return module.image_features(x)


class TPSNetModule(nn.Module):
    """The trainable parts of TPSNet in one module (one optimizer, one device move).

    Parameters
    ----------
    encoder : torch.nn.Module
        RGB image encoder with ``feature_dim`` and ``map_channels`` attributes; its
        ``forward_map`` feature map (or, when ``map_channels`` is None, its pooled
        feature as a single token) feeds the dual-prior fusion. With a map, the pooled
        feature must be the map's spatial mean (as for every encoder of
        :mod:`skucdr.nn.encoders`): one ``forward_map`` serves both.
    n_components : int
        Width of the tokens and of the retrieval embedding.
    n_domains : int
        Number of fitted domains.
    tower : TextTower or None
        Frozen text encoder of the domain prompts; None disables the text prior (a
        learned query replaces the prompt features).
    text_dim : int
        Width of the image features of stage 1 (``tower.output_dim`` with a tower).
    max_classes : int
        Prompt capacity per domain; the first ``n_classes`` (set after clustering) are used.
    n_ctx : int
        Learnable ``[X]`` vectors per prompt.
    phase_prior : bool
        Add the phase-only image branch (:class:`~skucdr.nn.tpsnet_modules.PhaseCNN`).
    phase_channels : int
        Channels of the phase-only images (1 for the grey-scale phase of 1- or 3-channel
        images).
    fusion : {"attention", "concat"}
        :class:`~skucdr.nn.tpsnet_modules.DualPriorFusion` mode.
    n_heads : int
        Attention heads (must divide ``n_components``).
    image_residual : bool, default=False
        Embed ``I' = normalize(W v + g * CrossAttention(T'; I^f))``: the stage-1 image
        features ``v`` (``W`` the identity when ``text_dim == n_components``, else an
        orthogonally initialised linear map) plus the dual-prior output scaled by a
        learned gate ``g`` that starts at 0, so stage 2 starts from the warm-up's
        features. False: ``I' = CrossAttention(T'; I^f)`` alone.
    generator : torch.Generator, default=None
        Random source of the prompt initialisation.
    """

    def __init__(
        self,
        encoder,
        *,
        n_components,
        n_domains,
        tower,
        text_dim,
        max_classes,
        n_ctx,
        phase_prior,
        phase_channels,
        fusion,
        n_heads,
        image_residual=False,
        generator=None,
    ):
        super().__init__()
        self.encoder = encoder
        width = encoder.feature_dim
        # Stage-1 image features v (the stand-in for CLIP's image features): a MoCo-v2
        # style head on the pooled encoder feature, into the text feature space.
        self.image_head = nn.Sequential(
            nn.Linear(width, width),
            nn.BatchNorm1d(width),
            nn.ReLU(inplace=True),
            nn.Linear(width, text_dim),
        )
        self.prompts = (
            PromptLearner(tower, n_domains, max_classes, n_ctx=n_ctx, generator=generator)
            if tower is not None
            else None
        )
        self.rgb_tokens = TokenProjector(encoder.map_channels or width, n_components)
        self.phase_cnn = (
            PhaseCNN(n_components, in_channels=phase_channels, channels=(16, 32, 64, 128))
            if phase_prior
            else None
        )
        self.fusion = DualPriorFusion(n_components, n_heads=n_heads, mode=fusion)
        query_dim = text_dim if tower is not None else n_components
        self.head = TextQueryCrossAttention(n_components, query_dim, n_heads=n_heads)
        if tower is None:  # "no text prior": one learned query = attention pooling
            self.query = nn.Parameter(torch.randn(1, query_dim, generator=generator) * 0.02)
        else:
            self.query = None
        self.residual_proj = None
        self.prior_gate = None
        if image_residual:
            if text_dim == n_components:
                self.residual_proj = nn.Identity()
            else:
                self.residual_proj = nn.Linear(text_dim, n_components, bias=False)
                with torch.no_grad():  # orthogonal: keeps the cosines of v when it can
                    q = torch.linalg.qr(torch.randn(max(text_dim, n_components),
                                                    min(text_dim, n_components),
                                                    generator=generator))[0]
                    self.residual_proj.weight.copy_(q if n_components > text_dim else q.T)
            self.prior_gate = nn.Parameter(torch.zeros(()))
        self.n_domains = n_domains
        # Prompt text features (n_domains, C, text_dim), frozen after DPG; empty before.
        self.register_buffer("class_text", torch.zeros(n_domains, 0, text_dim))

    # ---------------------------------------------------------------- stage 1
    def image_features(self, x):
        """Stage-1 image features ``v`` (L2-normalised), used by the warm-up and DPG."""
        return self._project_image(self.encoder(x))

    def _project_image(self, pooled):
        return F.normalize(self.image_head(pooled), dim=1)

    def _encode(self, x):
        """One encoder pass: the map (or vector) the tokens are made of, and the pooled
        feature. Every encoder of :mod:`skucdr.nn.encoders` pools by the spatial mean of
        its ``forward_map``, so ``pooled == encoder(x)`` without a second pass."""
        if self.encoder.map_channels:
            fmap = self.encoder.forward_map(x)
            return fmap, fmap.mean(dim=(2, 3))
        features = self.encoder(x)
        return features, features

    def prompt_features(self, n_classes):
        """Text features ``(n_domains, n_classes, text_dim)`` of the first ``n_classes``
        prompts of every domain (differentiable w.r.t. the prompt vectors)."""
        domains = torch.arange(self.n_domains, device=self.prompts.ctx.device)
        classes = torch.arange(n_classes, device=domains.device)
        d, c = torch.meshgrid(domains, classes, indexing="ij")
        return self.prompts(d.reshape(-1), c.reshape(-1)).view(self.n_domains, n_classes, -1)

    # ---------------------------------------------------------------- stage 2
    def tokens(self, x):
        """Fused RGB (+ phase) tokens ``(n, T, n_components)`` of images ``x``."""
        return self._fuse(x, self._encode(x)[0])

    def _fuse(self, x, fmap):
        rgb = self.rgb_tokens(fmap)
        phase = None
        if self.phase_cnn is not None:
            grey = x.shape[1] in (1, 3)
            phase = self.phase_cnn(phase_only(x, grayscale=grey))
        return self.fusion(rgb, phase)

    def queries(self, codes):
        """Cross-attention queries of images of domains ``codes``.

        The frozen prompt text features of each image's domain ``(n, C, text_dim)``; a
        domain code ``-1`` (a domain not seen in fit) gets the mean over the fitted
        domains of each class's prompt feature. Without text prior: the learned query.
        """
        features, index = self._query_table(codes)
        return features if index is None else features[index]

    def _query_table(self, codes):
        """The head's query features and the row of every image in them.

        With the text prior: the prompt features of every fitted domain and of an unseen
        one ``(n_domains + 1, C, text_dim)`` and each image's row; without: the learned
        query and None (one query for every image).
        """
        if self.query is not None:
            return self.query, None
        if self.class_text.shape[1] == 0:
            raise RuntimeError("The prompt features are set at the start of stage 2.")
        table = torch.cat([self.class_text, self.class_text.mean(dim=0, keepdim=True)])
        return table, torch.where(codes < 0, self.n_domains, codes)

    def embed(self, x, codes):
        """L2-normalised retrieval embeddings ``I'`` of images ``x`` of domains ``codes``."""
        fmap, pooled = self._encode(x)
        # the prompts are projected once per domain, then gathered per image
        features, index = self._query_table(codes)
        attended = self.head(self._fuse(x, fmap), features, text_index=index)
        if self.prior_gate is None:
            return attended
        base = self.residual_proj(self._project_image(pooled))
        return F.normalize(base + self.prior_gate * attended, dim=1)

    def forward(self, x, codes=None):
        if codes is None:
            codes = torch.full((x.shape[0],), -1, dtype=torch.long, device=x.device)
        return self.embed(x, codes)


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
    """Warm-up, DPG and TPDP losses with memory banks, pseudo-labels and prototypes.

    Parameters mirror :class:`skucdr.TextPhaseRetriever`; ``X`` is the training data as
    a CPU tensor of images ``(n, C, H, W)``, ``codes`` the domain code of every row.
    """

    BANK_TAU = 0.07  # memory-bank instance NCE temperature (UEM / InstDisc)
    BANK_MOMENTUM = 0.5  # memory-bank momentum (NPID)
    TWO_VIEW_TAU = 0.2  # two-view NT-Xent temperature (MoCo v2 / UCDIR)

    def __init__(
        self,
        X,
        codes,
        *,
        batch_size,
        generator,
        augment,
        warmup_augment=None,
        warmup_epochs,
        stage1_epochs,
        n_prototypes,
        max_prototypes,
        text_prior,
        alpha,
        beta,
        gamma,
        epsilon,
        tau,
        prototype_momentum,
        logit_scale,
        text_anchors,
        warmup,
        seed,
        prototype_tau=0.07,
        prototype_refresh="full_pass",
    ):
        self._init_rows(X, codes, batch_size, generator)
        self.augment = augment
        # the warm-up's views (UEM's stage 1); None: the same augmentation as stage 2
        self.warmup_augment = augment if warmup_augment is None else warmup_augment
        self.warmup_epochs = warmup_epochs
        self.stage1_epochs = stage1_epochs
        self.n_prototypes = n_prototypes
        self.max_prototypes = max_prototypes
        self.text_prior = text_prior
        self.alpha = alpha
        self.beta = beta
        self.gamma = gamma
        self.epsilon = epsilon
        self.tau = tau
        self.prototype_momentum = prototype_momentum
        self.logit_scale = logit_scale
        self.text_anchors = text_anchors
        self.warmup = warmup
        self.seed = seed
        self.prototype_tau = prototype_tau
        if prototype_refresh not in ("bank", "full_pass"):
            raise ValueError("prototype_refresh must be 'bank' or 'full_pass', got "
                             f"{prototype_refresh!r}.")
        self.prototype_refresh = prototype_refresh
        self.phase = None
        self.banks = None
        self.features = None  # frozen stage-1 image features (DPG)
        self.labels = None  # LongTensor (n,): shared pseudo-label of every row
        self.n_classes = None
        self.prototypes = None  # (n_domains, C, n_components)
        self.domain_k = None  # k of every domain's DPG k-means
        self.semantic = None  # (merged prototypes per domain, shared id per row): gamma
        # I' of every row for the next stage-2 refresh: the pass that starts stage 2,
        # then ("bank") moved by every step or ("full_pass") None until the next pass
        self.embeddings = None
        self._pending = None
        self.idse = None
        if warmup == "idse":  # UEM's stage 1 on the stage-1 image features
            self.idse = UEMObjective(
                X, codes, batch_size=batch_size, generator=generator,
                augment=self.warmup_augment, tau=prototype_tau, bank_momentum=self.BANK_MOMENTUM,
                instance_negatives="views", view_tau=self.TWO_VIEW_TAU,
                stage1_epochs=warmup_epochs, n_prototypes=n_prototypes,
                max_prototypes=max_prototypes, merge_prototypes=True, semantic_enhanced=True,
                alignment=None, matching=None, seed=seed,
                embed=_image_features,
            )

    # -------------------------------------------------------------- epoch state
    def on_epoch_begin(self, net, epoch):
        module = net.module_
        if epoch < self.warmup_epochs:
            self.phase = "warmup"
            if self.idse is not None:
                self.idse.on_epoch_begin(net, epoch)
            elif self.banks is None and self.warmup == "bank":
                # Eq. 5 of UEM: the banks start from the initial network's features
                feats = self.embed_rows(net, lambda x, c: _image_features(module, x))
                self.banks = [feats[torch.from_numpy(self.codes == d)].clone()
                              for d in range(self.n_domains)]
        elif epoch < self.stage1_epochs:
            if self.phase != "dpg":
                self.phase = "dpg"
                self.banks = None
                self._release_idse()
                self._cluster(net)
            elif self.text_prior:
                self._repair_by_text(net)
        else:
            if self.phase != "tpdp":
                if self.labels is None:  # no DPG epochs: cluster right before stage 2
                    self._cluster(net)
                elif self.text_prior:  # final re-pairing with the trained prompts
                    self._repair_by_text(net)
                self.phase = "tpdp"
                self.banks = None
                self._release_idse()
                self.features = None
                self._start_stage2(net)
            if self.gamma > 0:
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
            if self.n_prototypes == "elbow":
                k = choose_n_prototypes_elbow(
                    X_d, k_min=2, k_max=max(2, min(self.max_prototypes, len(X_d) // 10)),
                    random_state=seed, n_threads=self.CLUSTER_THREADS,
                )
            else:
                k = min(int(self.n_prototypes), len(X_d))
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
        if module.prior_gate is None:  # v is not part of I' any more
            module.image_head.requires_grad_(False)
        z = self.embed_rows(net, module.embed)
        if self.gamma > 0:  # the gamma terms' prototypes are refreshed from I'
            self.embeddings = z  # the first refresh's: nothing trained since
        C, dim = self.n_classes, z.shape[1]
        protos = torch.zeros(self.n_domains, C, dim, device=z.device)
        index = self.codes_t.to(z.device) * C + self.labels
        protos.view(-1, dim).index_add_(0, index, z)
        self.prototypes = F.normalize(protos, dim=-1)

    def _refresh_semantic_prototypes(self, net, epoch):
        """UEM's merged prototypes of the current embeddings ``I'`` (one per stage-2 epoch).

        Per-domain spherical k-means with the DPG's ``k``, translated, matched and merged
        across domains (:func:`~skucdr.nn.uem_objective.domain_prototypes`), as UEM's
        stage 1 refreshes them on its memory banks: on a memory bank of ``I'`` (every
        row's training-view embeddings, momentum ``BANK_MOMENTUM``, started from a full
        embedding pass) with ``prototype_refresh="bank"``, or on a fresh eval-mode pass
        over all rows with ``"full_pass"``.
        """
        if self.embeddings is None:
            self.embeddings = self.embed_rows(net, net.module_.embed)
        z = self.embeddings.cpu().numpy()
        if self.prototype_refresh == "full_pass":
            self.embeddings = None  # a fresh pass at the next refresh
        protos, labels = domain_prototypes(
            z, self.codes, self.domain_k, merge=True, max_prototypes=self.max_prototypes,
            random_state=self.seed + epoch, n_jobs=self.CLUSTER_THREADS, device=net.device,
        )
        self.semantic = (protos, torch.from_numpy(labels).to(net.device))

    # ------------------------------------------------------------------ losses
    def losses(self, net, batch):
        rows = torch.cat(batch)
        if self.phase == "warmup":
            if self.idse is not None:
                return self.idse.losses(net, batch)
            return self._warmup_losses(net, rows, batch)
        if self.phase == "dpg":
            return self._prompt_losses(net, rows)
        return self._tpdp_losses(net, rows)

    def after_backward(self, net=None):
        """Memory-bank (warm-up) or prototype (TPDP) momentum updates, after autograd."""
        if self.phase == "warmup" and self.idse is not None:
            self.idse.after_backward(net)
            return
        if self._pending is None:
            return
        kind, payload = self._pending
        self._pending = None
        if kind == "banks":
            for d, (v_d, rows) in enumerate(payload):
                local = self.local_index[rows].to(v_d.device)
                momentum_update_bank(self.banks[d], local, v_d, self.BANK_MOMENTUM)
        else:
            z, rows, codes, labels = payload
            if self.prototype_refresh == "bank" and self.embeddings is not None:
                momentum_update_bank(self.embeddings, rows, z, self.BANK_MOMENTUM)
            for d in range(self.n_domains):
                mask = codes == d
                if mask.any():
                    momentum_update_prototypes(self.prototypes[d], z[mask], labels[mask],
                                               momentum=self.prototype_momentum)

    def _warmup_losses(self, net, rows, batch):
        x = self.X[rows].to(net.device)
        sizes = [len(b) for b in batch]
        module = net.module_
        with domain_codes(module, self.codes_t[rows].to(net.device)):
            view = self.warmup_augment
            parts = torch.split(module.image_features(view(x, self.generator)), sizes)
            if self.warmup == "two_view":
                others = torch.split(module.image_features(view(x, self.generator)), sizes)
        ince = []
        if self.warmup == "two_view":
            for v_d, w_d in zip(parts, others):
                ince.append(two_view_nce(v_d, w_d, self.TWO_VIEW_TAU))
        else:
            for d, (v_d, rows_d) in enumerate(zip(parts, batch)):
                local = self.local_index[rows_d].to(v_d.device)
                ince.append(instance_nce(v_d, self.banks[d], local, self.BANK_TAU))
            self._pending = ("banks", [(v_d.detach(), r) for v_d, r in zip(parts, batch)])
        loss = torch.stack(ince).sum()
        return {"loss_ince": loss, "loss": loss}

    def _prompt_losses(self, net, rows):
        module = net.module_
        rows = rows.to(net.device)
        v = self.features[rows]
        codes = self.codes_t.to(net.device)[rows]
        y = self.labels[rows]
        text = F.normalize(module.prompt_features(self.n_classes), dim=-1)
        t = text[codes, y]
        pair = codes * self.n_classes + y  # a (domain, class) pair is one label
        i2t = image_to_text_contrastive(v, t, pair, logit_scale=self.logit_scale)
        t2i = text_to_image_contrastive(v, t, pair, logit_scale=self.logit_scale)
        return {"loss_i2t": i2t, "loss_t2i": t2i, "loss": i2t + t2i}

    def _anchors(self, module):
        """Class anchors of L_i2tce in the embedding space, per domain (n_domains, C, D)."""
        anchors = module.head.project_text(module.class_text)
        if self.text_anchors == "shared":
            anchors = F.normalize(anchors.mean(dim=0, keepdim=True), dim=-1)
            anchors = anchors.expand(self.n_domains, -1, -1)
        return anchors

    def _tpdp_losses(self, net, rows):
        module = net.module_
        device = net.device
        x = self.augment(self.X[rows].to(device), self.generator)
        rows_d = rows.to(device)
        codes = self.codes_t.to(device)[rows_d]
        y = self.labels[rows_d]
        with domain_codes(module, codes):
            z = module.embed(x, codes)
        out = {"loss_pce": prototype_ce(z, self.prototypes[codes], y, tau=self.tau)}
        total = self.alpha * out["loss_pce"]
        if module.prompts is not None:
            anchors = self._anchors(module)[codes]
            out["loss_i2tce"] = label_smoothed_i2t_ce(
                z, anchors, y, epsilon=self.epsilon, logit_scale=self.logit_scale
            )
            total = total + self.beta * out["loss_i2tce"]
        if self.gamma > 0:
            protos, assignment = self.semantic
            pnce, sel = [], []
            for d in range(self.n_domains):
                mask = codes == d
                if mask.any():
                    z_d, ids = z[mask], assignment[rows_d[mask]]
                    pnce.append(prototype_nce(z_d, protos[d], ids, self.prototype_tau))
                    sel.append(semantic_enhanced_loss(z_d, protos[d], self.prototype_tau))
            out["loss_pnce"] = torch.stack(pnce).sum()
            out["loss_sel"] = torch.stack(sel).sum()
            total = total + self.gamma * (out["loss_pnce"] + out["loss_sel"])
        self._pending = ("prototypes", (z.detach(), rows_d, codes, y))
        out["loss"] = total
        return out

    def release(self):
        """Drop the training data and per-row state (not needed after fit)."""
        self._release_rows()
        self.banks = None
        self.features = None
        self.labels = None
        self.prototypes = None
        self.semantic = None
        self.embeddings = None
        self._pending = None
        self._release_idse()
