"""Network pieces of TPSNet's Text-Phase Dual Priors (TPDP) stage.

The data flow for a batch of images of one or several domains::

    rgb feature map --TokenProjector-----------\\
                                                 DualPriorFusion --> fused tokens (n, T, D)
    phase image --PhaseCNN (tokens)-------------/        |
                                                         v
    domain prompt text features (C, D_text) --> TextQueryCrossAttention --> embedding (n, D)

The modules are plain ``torch.nn.Module`` s; losses live in
:mod:`skucdr.tpsnet.losses`. Architectural choices that the TPSNet paper does not
publish (layer counts, widths, pooling) are documented on each class.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..nn.phase import phase_only
from .prompts import PromptLearner

__all__ = [
    "DualPriorFusion",
    "PhaseCNN",
    "TPSNetModule",
    "TextQueryCrossAttention",
    "TokenProjector",
]


def _check_positive_int(name, value):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}.")


def _check_heads(dim, n_heads):
    _check_positive_int("n_heads", n_heads)
    if dim % n_heads:
        raise ValueError(f"n_heads={n_heads} must divide the width dim={dim}.")


class PhaseCNN(nn.Module):
    """Lightweight CNN that turns phase-only images into a token sequence.

    ``len(channels)`` stages of ``conv 3x3 (stride 2) -> BatchNorm -> ReLU``, then a
    ``1x1`` convolution to width ``dim``; the ``h x w`` output positions become ``h*w``
    tokens. For a 28x28 digit and the default four stages that is 2x2 = 4 tokens; for a
    224x224 image, 14x14 = 196.

    Parameters
    ----------
    dim : int
        Width of the output tokens.
    in_channels : int, default=1
        Channels of the phase image (1 for the grayscale phase prior).
    channels : sequence of int, default=(32, 64, 128, 256)
        Output channels of the stride-2 stages.

    Examples
    --------
    >>> import torch
    >>> from skucdr.tpsnet.network import PhaseCNN
    >>> tuple(PhaseCNN(dim=64)(torch.rand(8, 1, 28, 28)).shape)
    (8, 4, 64)
    """

    def __init__(self, dim, in_channels=1, channels=(32, 64, 128, 256)):
        super().__init__()
        _check_positive_int("dim", dim)
        _check_positive_int("in_channels", in_channels)
        channels = tuple(channels)
        if not channels:
            raise ValueError("channels must hold at least one stage.")
        for c in channels:
            _check_positive_int("every entry of channels", c)
        layers = []
        previous = in_channels
        for c in channels:
            layers += [
                nn.Conv2d(previous, c, kernel_size=3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(c),
                nn.ReLU(inplace=True),
            ]
            previous = c
        layers.append(nn.Conv2d(previous, dim, kernel_size=1))
        self.body = nn.Sequential(*layers)
        self.in_channels = in_channels
        self.dim = dim

    def forward(self, phase_images: Tensor) -> Tensor:
        """Tokens of shape ``(n, h*w, dim)`` from phase images ``(n, in_channels, H, W)``."""
        if phase_images.ndim != 4 or phase_images.shape[1] != self.in_channels:
            raise ValueError(
                f"PhaseCNN expects phase images of shape (n, {self.in_channels}, H, W), got "
                f"{tuple(phase_images.shape)}."
            )
        return self.body(phase_images).flatten(2).transpose(1, 2)


class TokenProjector(nn.Module):
    """Turn the output of an image encoder into tokens of width ``dim``.

    Accepts a convolutional feature map ``(n, C, h, w)`` (each position becomes a
    token), a token sequence ``(n, T, C)`` (e.g. ViT patch tokens) or a pooled feature
    ``(n, C)`` (one token), and applies one linear map ``C -> dim`` to every token.

    Parameters
    ----------
    in_dim : int
        Channels ``C`` of the encoder output.
    dim : int
        Width of the tokens.

    Examples
    --------
    >>> import torch
    >>> from skucdr.tpsnet.network import TokenProjector
    >>> tuple(TokenProjector(256, 64)(torch.rand(8, 256, 7, 7)).shape)
    (8, 49, 64)
    """

    def __init__(self, in_dim, dim):
        super().__init__()
        _check_positive_int("in_dim", in_dim)
        _check_positive_int("dim", dim)
        self.proj = nn.Linear(in_dim, dim)
        self.in_dim = in_dim

    def forward(self, features: Tensor) -> Tensor:
        """Tokens ``(n, T, dim)`` from features ``(n, C, h, w)``, ``(n, T, C)`` or ``(n, C)``."""
        if features.ndim == 4:
            channels = features.shape[1]
            features = features.flatten(2).transpose(1, 2)
        elif features.ndim == 2:
            channels = features.shape[1]
            features = features.unsqueeze(1)
        elif features.ndim == 3:
            channels = features.shape[2]
        else:
            channels = None
        if channels != self.in_dim:
            raise ValueError(
                f"TokenProjector expects (n, {self.in_dim}, h, w), (n, T, {self.in_dim}) or "
                f"(n, {self.in_dim}) features, got shape {tuple(features.shape)}."
            )
        return self.proj(features)


class DualPriorFusion(nn.Module):
    """Fuse RGB tokens and phase tokens (TPSNet's LayerNorm + self-attention fusion).

    ``mode="attention"`` (TPSNet): a learned source embedding (RGB or phase) is added to
    each token, the two sequences are concatenated, and one pre-norm multi-head
    self-attention block with a residual connection mixes them:
    ``x = x + MHA(LN(x))``; the output keeps all ``T_rgb + T_phase`` tokens.

    ``mode="concat"`` (ablation): the mean RGB token and the mean phase token are
    concatenated and mapped by ``LayerNorm -> Linear(2 dim, dim)`` to a single token, so
    the phase prior enters without attention.

    Without phase tokens (ablation "no phase prior") only the RGB tokens are used: attended
    in ``"attention"`` mode, mean-pooled in ``"concat"`` mode.

    Parameters
    ----------
    dim : int
        Width of the tokens.
    n_heads : int, default=8
        Attention heads (must divide ``dim``).
    mode : {"attention", "concat"}, default="attention"
        Fusion path.
    dropout : float, default=0.0
        Dropout on the attention weights.

    Examples
    --------
    >>> import torch
    >>> from skucdr.tpsnet.network import DualPriorFusion
    >>> fusion = DualPriorFusion(64, n_heads=4)
    >>> tuple(fusion(torch.rand(8, 49, 64), torch.rand(8, 4, 64)).shape)
    (8, 53, 64)
    """

    def __init__(self, dim, n_heads=8, mode="attention", dropout=0.0):
        super().__init__()
        _check_positive_int("dim", dim)
        if mode not in ("attention", "concat"):
            raise ValueError(f"mode must be 'attention' or 'concat', got {mode!r}.")
        self.dim = dim
        self.mode = mode
        if mode == "attention":
            _check_heads(dim, n_heads)
            self.source_embedding = nn.Parameter(torch.zeros(2, dim))
            nn.init.normal_(self.source_embedding, std=0.02)
            self.norm = nn.LayerNorm(dim)
            self.attention = nn.MultiheadAttention(dim, n_heads, dropout=dropout, batch_first=True)
        else:
            self.norm = nn.LayerNorm(2 * dim)
            self.proj = nn.Linear(2 * dim, dim)

    def forward(self, rgb_tokens: Tensor, phase_tokens: Tensor | None = None) -> Tensor:
        """Fused tokens.

        Parameters
        ----------
        rgb_tokens : Tensor of shape (n, T_rgb, dim)
        phase_tokens : Tensor of shape (n, T_phase, dim), default=None

        Returns
        -------
        tokens : Tensor of shape (n, T_rgb + T_phase, dim), or (n, 1, dim) for "concat"
        """
        for name, tokens in (("rgb_tokens", rgb_tokens), ("phase_tokens", phase_tokens)):
            if tokens is not None and (tokens.ndim != 3 or tokens.shape[-1] != self.dim):
                raise ValueError(
                    f"{name} must have shape (n, T, {self.dim}), got {tuple(tokens.shape)}."
                )
        if phase_tokens is not None and phase_tokens.shape[0] != rgb_tokens.shape[0]:
            raise ValueError("rgb_tokens and phase_tokens must hold the same number of images.")
        if self.mode == "concat":
            rgb = rgb_tokens.mean(dim=1)
            if phase_tokens is None:
                return rgb.unsqueeze(1)
            pooled = torch.cat([rgb, phase_tokens.mean(dim=1)], dim=-1)
            return self.proj(self.norm(pooled)).unsqueeze(1)
        x = rgb_tokens + self.source_embedding[0]
        if phase_tokens is not None:
            x = torch.cat([x, phase_tokens + self.source_embedding[1]], dim=1)
        h = self.norm(x)
        return x + self.attention(h, h, h, need_weights=False)[0]


class TextQueryCrossAttention(nn.Module):
    """Text-phase synergy: domain-prompt text features query the fused image tokens.

    ``I' = normalize(mean_c CrossAttention(q_c = W t_c; k = v = LN(I^f)))``: each of the
    C text features of the image's domain is projected to width ``dim`` and used as a
    query over the fused tokens; the C attended outputs are averaged (over the valid
    classes only) and L2-normalised. The mean over queries equals one attention pooling
    of the tokens with text-guided weights. There is deliberately no residual from the
    queries: it would add the domain's prompt features, identical for every image of a
    domain, and pull embeddings towards their domain identity.

    Parameters
    ----------
    dim : int
        Width of the fused tokens and of the output embedding.
    text_dim : int
        Size of the text features.
    n_heads : int, default=8
        Attention heads (must divide ``dim``).
    dropout : float, default=0.0
        Dropout on the attention weights.

    Examples
    --------
    >>> import torch
    >>> from skucdr.tpsnet.network import TextQueryCrossAttention
    >>> head = TextQueryCrossAttention(64, text_dim=128, n_heads=4)
    >>> z = head(torch.rand(8, 53, 64), torch.rand(10, 128))
    >>> tuple(z.shape), bool(torch.allclose(z.norm(dim=1), torch.ones(8)))
    ((8, 64), True)
    """

    def __init__(self, dim, text_dim, n_heads=8, dropout=0.0):
        super().__init__()
        _check_positive_int("dim", dim)
        _check_positive_int("text_dim", text_dim)
        _check_heads(dim, n_heads)
        self.dim = dim
        self.text_dim = text_dim
        self.query_proj = nn.Linear(text_dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.attention = nn.MultiheadAttention(dim, n_heads, dropout=dropout, batch_first=True)

    def project_text(self, text_features: Tensor) -> Tensor:
        """Text features mapped into the embedding space: ``normalize(W t)``.

        The query projection, L2-normalised: class anchors ``t_c`` comparable with the
        embeddings, e.g. for :func:`~skucdr.tpsnet.losses.label_smoothed_i2t_ce`.

        Parameters
        ----------
        text_features : Tensor of shape (..., text_dim)

        Returns
        -------
        projected : Tensor of shape (..., dim)
        """
        return F.normalize(self.query_proj(text_features), dim=-1)

    def forward(
        self,
        tokens: Tensor,
        text_features: Tensor,
        class_mask: Tensor | None = None,
        text_index: Tensor | None = None,
    ) -> Tensor:
        """L2-normalised embeddings of the images.

        Parameters
        ----------
        tokens : Tensor of shape (n, T, dim)
            Fused image tokens.
        text_features : Tensor of shape (C, text_dim) or (n, C, text_dim)
            The prompt text features of the images' domain: shared by the batch, or one
            set per image (mixed-domain batches gather their domain's set).
        class_mask : BoolTensor of shape (C,) or (n, C), default=None
            False for padded classes (domains with fewer classes), which are left out
            of the mean.
        text_index : LongTensor of shape (n,), default=None
            With ``text_features`` of shape ``(G, C, text_dim)`` (e.g. one set per
            domain): the set of every image. The ``G`` sets are projected once and then
            gathered, instead of projecting a copy per image; the result is the same as
            passing ``text_features[text_index]``.

        Returns
        -------
        embeddings : Tensor of shape (n, dim)
        """
        if tokens.ndim != 3 or tokens.shape[-1] != self.dim:
            raise ValueError(
                f"tokens must have shape (n, T, {self.dim}), got {tuple(tokens.shape)}."
            )
        n = tokens.shape[0]
        if text_index is not None:
            if text_features.ndim != 3 or text_features.shape[-1] != self.text_dim:
                raise ValueError(
                    f"With text_index, text_features must have shape (G, C, {self.text_dim}), "
                    f"got {tuple(text_features.shape)}."
                )
            if tuple(text_index.shape) != (n,):
                raise ValueError(
                    f"text_index must have shape ({n},), got {tuple(text_index.shape)}."
                )
            queries = self.query_proj(text_features)[text_index]
        else:
            if text_features.ndim == 2:
                text_features = text_features.unsqueeze(0).expand(n, -1, -1)
            if text_features.ndim != 3 or text_features.shape[::2] != (n, self.text_dim):
                raise ValueError(
                    f"text_features must have shape (C, {self.text_dim}) or "
                    f"(n, C, {self.text_dim}) with n={n}, got {tuple(text_features.shape)}."
                )
            queries = self.query_proj(text_features)
        keys = self.norm(tokens)
        attended = self.attention(queries, keys, keys, need_weights=False)[0]
        if class_mask is None:
            pooled = attended.mean(dim=1)
        else:
            weights = class_mask.to(attended.dtype).expand(n, -1).unsqueeze(-1)
            if weights.shape[1] != attended.shape[1]:
                raise ValueError(
                    f"class_mask has {weights.shape[1]} classes, text_features {attended.shape[1]}."
                )
            pooled = (attended * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)
        return F.normalize(pooled, dim=-1)


class TPSNetModule(nn.Module):
    """The trainable parts of TPSNet in one module (one optimizer, one device move).

    The retrieval embedding is ``I' = normalize(W v + g * CrossAttention(T'; I^f))``:
    the stage-1 image features ``v`` plus the dual-prior output scaled by a learned gate
    ``g`` that starts at 0 (docs/methods.md, "TPSNet's stage 2").

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
        Add the phase-only image branch (:class:`PhaseCNN`).
    phase_channels : int
        Channels of the phase-only images (1 for the grey-scale phase of 1- or 3-channel
        images).
    fusion : {"attention", "concat"}
        :class:`DualPriorFusion` mode.
    n_heads : int
        Attention heads (must divide ``n_components``).
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
        # I' = normalize(W v + g * CrossAttention(T'; I^f)): the stage-1 image features
        # v (W the identity when text_dim == n_components, else an orthogonally
        # initialised linear map) plus the dual-prior output scaled by a learned gate g
        # that starts at 0, so that stage 2 starts from the warm-up's features
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
        self.max_classes = max_classes
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
        base = self.residual_proj(self._project_image(pooled))
        return F.normalize(base + self.prior_gate * attended, dim=1)

    def forward(self, x, codes=None):
        if codes is None:
            codes = torch.full((x.shape[0],), -1, dtype=torch.long, device=x.device)
        return self.embed(x, codes)
