"""Network pieces of TPSNet's Text-Phase Dual Priors (TPDP) stage.

The data flow for a batch of images of one or several domains::

    rgb feature map --TokenProjector-----------\\
                                                 DualPriorFusion --> fused tokens (n, T, D)
    phase image --PhaseCNN (tokens)-------------/        |
                                                         v
    domain prompt text features (C, D_text) --> TextQueryCrossAttention --> embedding (n, D)

The modules are plain ``torch.nn.Module`` s; losses live in
:mod:`skucdr.nn.tpsnet_losses`. Architectural choices that the TPSNet paper does not
publish (layer counts, widths, pooling) are documented on each class.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["PhaseCNN", "TokenProjector", "DualPriorFusion", "TextQueryCrossAttention"]


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
    >>> from skucdr.nn.tpsnet_modules import PhaseCNN
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
    >>> from skucdr.nn.tpsnet_modules import TokenProjector
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
    >>> from skucdr.nn.tpsnet_modules import DualPriorFusion
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
    >>> from skucdr.nn.tpsnet_modules import TextQueryCrossAttention
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
        embeddings, e.g. for :func:`~skucdr.nn.tpsnet_losses.label_smoothed_i2t_ce`.

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
