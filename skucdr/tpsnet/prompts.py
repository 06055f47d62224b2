"""Learnable prompts: CoOp-style context vectors per (domain, class), encoded by a
frozen text tower (:mod:`skucdr.tpsnet.text`)."""

from __future__ import annotations

import torch
from torch import nn

from .text import PLACEHOLDER, check_text_tower, module_device

__all__ = ["PromptLearner"]


def _placeholder_run(tower, token_ids, n_ctx):
    """Start of the run of ``n_ctx`` placeholder tokens in ``token_ids`` (1-D)."""
    empty, single = tower.tokenize([""])[0], tower.tokenize([PLACEHOLDER])[0]
    differ = torch.nonzero(empty != single)
    if len(differ) == 0:
        raise ValueError("The tower's tokenizer ignores the placeholder word 'X'.")
    x_id = single[differ[0, 0]]
    where = torch.nonzero(token_ids == x_id).flatten()
    if len(where) != n_ctx or (len(where) > 1 and not bool((where.diff() == 1).all())):
        raise ValueError(
            f"Expected the prompt to hold the placeholder 'X' as {n_ctx} consecutive tokens, "
            f"found {len(where)} at positions {where.tolist()}: the template must not "
            "contain the word 'X', and the tokenizer must map each 'X' to one token."
        )
    return int(where[0])


class PromptLearner(nn.Module):
    """Learnable prompts, a template and M context vectors, per (domain, class).

    Each prompt reads ``"<template> [X]_1 [X]_2 ... [X]_M"``. The template's token
    embeddings come from the frozen tower; the M context vectors of every (domain, class)
    are the only trainable parameters (initialised from ``N(0, init_std^2)`` as in
    CoOp/CLIP-ReID). Text features are the tower's features of the full prompt embedding
    sequences.

    Parameters
    ----------
    tower : TextTower
        The frozen text encoder. If it is an ``nn.Module`` it becomes a submodule (it
        moves with ``.to()``; its parameters do not require gradients).
    n_domains : int
        Number of domains.
    n_classes : int or sequence of int
        Number of (pseudo-)classes: one count for every domain, or one per domain.
    n_ctx : int, default=4
        Number M of learnable ``[X]`` vectors per prompt.
    template : str, default="an image of a"
        Words before the ``[X]`` vectors; the prompt ends with ``"."``. It must not
        contain the word ``X``.
    init_std : float, default=0.02
        Standard deviation of the initial context vectors.
    generator : torch.Generator, default=None
        Random generator for the initialisation (the global one if None).

    Attributes
    ----------
    ctx : Parameter of shape (n_total_classes, n_ctx, embed_dim)
        Context vectors; rows ``class_offsets[d]:class_offsets[d + 1]`` belong to domain
        ``d``. With a common class count C, ``ctx.view(n_domains, C, n_ctx, embed_dim)``.
    class_offsets : LongTensor of shape (n_domains + 1,)
        Cumulative class counts.
    class_mask : BoolTensor of shape (n_domains, max_classes)
        True where domain ``d`` has class ``c`` (all True for a common count).
    n_classes_per_domain : tuple of int

    Examples
    --------
    >>> import torch
    >>> from skucdr.tpsnet.prompts import PromptLearner
    >>> from skucdr.tpsnet.text import BuiltinTextTower
    >>> prompts = PromptLearner(BuiltinTextTower(), n_domains=2, n_classes=3)
    >>> tuple(prompts.all_features().shape)
    (2, 3, 128)
    >>> tuple(prompts(torch.tensor([0, 1]), torch.tensor([2, 0])).shape)
    (2, 128)
    """

    def __init__(
        self,
        tower,
        n_domains,
        n_classes,
        n_ctx=4,
        template="an image of a",
        init_std=0.02,
        *,
        generator=None,
    ):
        super().__init__()
        check_text_tower(tower)
        if not isinstance(n_domains, int) or n_domains < 1:
            raise ValueError(f"n_domains must be a positive int, got {n_domains!r}.")
        counts = (n_classes,) * n_domains if isinstance(n_classes, int) else tuple(n_classes)
        if len(counts) != n_domains or not all(isinstance(c, int) and c >= 1 for c in counts):
            raise ValueError(
                f"n_classes must be a positive int or {n_domains} positive ints (one per "
                f"domain), got {n_classes!r}."
            )
        if not isinstance(n_ctx, int) or n_ctx < 1:
            raise ValueError(f"n_ctx must be a positive int, got {n_ctx!r}.")
        if not init_std > 0:
            raise ValueError(f"init_std must be positive, got {init_std!r}.")
        self.tower = tower
        self.n_domains = n_domains
        self.n_classes_per_domain = counts
        self.n_ctx = n_ctx
        self.template = template

        prompt = f"{template} {' '.join([PLACEHOLDER] * n_ctx)}."
        token_ids = tower.tokenize([prompt])
        start = _placeholder_run(tower, token_ids[0], n_ctx)
        device = module_device(tower) if isinstance(tower, nn.Module) else torch.device("cpu")
        token_ids = token_ids.to(device)
        with torch.no_grad():
            embedding = tower.token_embedding(token_ids)
        self._ctx_start = start
        self.register_buffer("token_ids", token_ids, persistent=False)
        self.register_buffer("token_prefix", embedding[:, :start].clone(), persistent=False)
        self.register_buffer(
            "token_suffix", embedding[:, start + n_ctx :].clone(), persistent=False
        )
        offsets = torch.tensor((0, *counts)).cumsum(0)
        self.register_buffer("class_offsets", offsets, persistent=False)
        mask = torch.arange(max(counts)) < torch.tensor(counts)[:, None]
        self.register_buffer("class_mask", mask, persistent=False)
        ctx = torch.randn(int(offsets[-1]), n_ctx, tower.embed_dim, generator=generator) * init_std
        self.ctx = nn.Parameter(ctx.to(device=device, dtype=torch.float32))

    def _encode(self, rows):
        """Text features of the context rows ``rows`` (indices into ``ctx``)."""
        n = rows.shape[0]
        ctx = self.ctx[rows].to(self.token_prefix.dtype)
        embeddings = torch.cat(
            [self.token_prefix.expand(n, -1, -1), ctx, self.token_suffix.expand(n, -1, -1)],
            dim=1,
        )
        return self.tower.encode_prompts(embeddings, self.token_ids.expand(n, -1))

    def forward(self, domain_ids, class_ids):
        """Text features of chosen (domain, class) pairs.

        Parameters
        ----------
        domain_ids : LongTensor of shape (n,)
            Domain index of every pair.
        class_ids : LongTensor of shape (n,)
            Class index of every pair, within its domain.

        Returns
        -------
        features : Tensor of shape (n, output_dim)
            Not normalised; differentiable with respect to :attr:`ctx`.
        """
        domain_ids = torch.as_tensor(domain_ids, device=self.ctx.device).long()
        class_ids = torch.as_tensor(class_ids, device=self.ctx.device).long()
        if domain_ids.shape != class_ids.shape or domain_ids.ndim != 1:
            raise ValueError("domain_ids and class_ids must be 1-D and of the same length.")
        if len(domain_ids):
            if domain_ids.min() < 0 or domain_ids.max() >= self.n_domains:
                raise ValueError(f"domain_ids must lie in [0, {self.n_domains}).")
            counts = self.class_offsets[domain_ids + 1] - self.class_offsets[domain_ids]
            if class_ids.min() < 0 or bool((class_ids >= counts).any()):
                raise ValueError("class_ids must lie in [0, n_classes of their domain).")
        return self._encode(self.class_offsets[domain_ids] + class_ids)

    def domain_features(self, domain):
        """Text features ``(n_classes_d, output_dim)`` of every class of one domain."""
        if not 0 <= int(domain) < self.n_domains:
            raise ValueError(f"domain must lie in [0, {self.n_domains}), got {domain!r}.")
        start, stop = int(self.class_offsets[domain]), int(self.class_offsets[domain + 1])
        return self._encode(torch.arange(start, stop, device=self.ctx.device))

    def all_features(self):
        """Text features of every (domain, class), in one pass through the tower.

        Returns
        -------
        features : Tensor of shape (n_domains, max_classes, output_dim)
            Zero where :attr:`class_mask` is False (domains with fewer classes).
        """
        flat = self._encode(torch.arange(self.ctx.shape[0], device=self.ctx.device))
        out = flat.new_zeros((*self.class_mask.shape, flat.shape[-1]))
        out[self.class_mask] = flat
        return out

    def train(self, mode: bool = True):
        """Set the training mode of the prompt learner; a frozen tower stays in eval mode."""
        super().train(mode)
        if isinstance(self.tower, nn.Module):
            self.tower.eval()
        return self
