"""The text prior of TPSNet: frozen text towers and learnable domain prompts.

TPSNet's *domain prompts* are CoOp/CLIP-ReID-style prompts ``"an image of a [X]_1 ...
[X]_M."``: the word embeddings of the template come from a frozen text encoder, the M
``[X]`` vectors are learned, one set per (domain, pseudo-class). Passing the full embedding
sequence through the frozen encoder gives one text feature per (domain, class).

A text encoder is anything that follows the :class:`TextTower` protocol. Two are provided:

- :class:`BuiltinTextTower`, a small frozen transformer with a fixed random
  initialisation and a word-level tokenizer. It needs no download and carries no language
  knowledge: it is a fixed non-linear map from prompt vectors to text features, so the
  prompt machinery runs anywhere (tests, CPU demos).
- :class:`OpenCLIPTextTower`, an adapter over the text tower of an ``open_clip`` CLIP
  model (optional dependency ``pip install skucdr[clip]``), e.g. loaded from a local
  checkpoint with :meth:`OpenCLIPTextTower.from_pretrained`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from ..nn.clip_loading import import_open_clip, load_local_open_clip

__all__ = [
    "TextTower",
    "BuiltinTextTower",
    "OpenCLIPTextTower",
    "PromptLearner",
    "encode_text",
    "DEFAULT_VOCAB",
]

#: Words known to :class:`BuiltinTextTower` by default (besides ``"x"`` and ``"."``).
DEFAULT_VOCAB = tuple(
    "a an the image photo picture drawing painting sketch clipart art product digit "
    "handwritten of in style".split()
)

#: The word that stands for one learnable context vector in a prompt.
PLACEHOLDER = "X"


_TOWER_ATTRIBUTES = ("embed_dim", "output_dim", "context_length")
_TOWER_METHODS = ("tokenize", "token_embedding", "encode_prompts")


class _DynamicProtocolMeta(type(Protocol)):
    """``isinstance`` by ordinary attribute lookup, as ``typing`` did before Python 3.12.

    From Python 3.12 a runtime-checkable protocol looks members up with
    ``inspect.getattr_static``, which does not see what an ``nn.Module`` keeps in its
    ``_modules`` / ``_parameters`` dicts: a tower whose ``token_embedding`` is an
    ``nn.Embedding`` submodule would fail ``isinstance(tower, TextTower)``.
    """

    def __instancecheck__(cls, instance):
        return all(hasattr(instance, name) for name in _TOWER_ATTRIBUTES) and all(
            callable(getattr(instance, name, None)) for name in _TOWER_METHODS
        )


@runtime_checkable
class TextTower(Protocol, metaclass=_DynamicProtocolMeta):
    """What :class:`PromptLearner` needs from a frozen text encoder.

    A text tower maps token ids to token embeddings, and a sequence of token embeddings
    (some of which may be learnable vectors standing in for placeholder tokens) to one
    sentence feature, pooled at the end-of-text token as in CLIP. Its weights are frozen:
    gradients flow through it to the prompt embeddings, never into it.
    :class:`PromptLearner` locates its ``[X]`` slots by tokenizing the word ``"X"``, so
    the tokenizer must map that word to exactly one token.

    Attributes
    ----------
    embed_dim : int
        Width of a token embedding (the size of a learnable ``[X]`` vector).
    output_dim : int
        Size of a sentence feature.
    context_length : int
        Length ``L`` of every token sequence that :meth:`tokenize` returns.

    Notes
    -----
    ``isinstance(obj, TextTower)`` checks that these members exist by ordinary attribute
    lookup on every Python version, so members that an ``nn.Module`` holds as submodules
    (e.g. an ``nn.Embedding`` as ``token_embedding``) count.
    """

    embed_dim: int
    output_dim: int
    context_length: int

    def tokenize(self, texts: Sequence[str]) -> Tensor:
        """Token ids of shape ``(n_texts, context_length)`` (int64, on the CPU)."""
        ...

    def token_embedding(self, token_ids: Tensor) -> Tensor:
        """Embeddings ``(..., embed_dim)`` of token ids (on the tower's device)."""
        ...

    def encode_prompts(self, prompt_embeddings: Tensor, token_ids: Tensor) -> Tensor:
        """Sentence features ``(n, output_dim)`` of embedding sequences ``(n, L, embed_dim)``.

        ``token_ids`` ``(n, L)`` are the ids the sequences were built from; they locate
        the end-of-text token whose final feature is the sentence feature. The tower's
        weights get no gradient; ``prompt_embeddings`` do.
        """
        ...


def _module_device(module):
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return torch.device("cpu")


def encode_text(tower: TextTower, texts: Sequence[str]) -> Tensor:
    """Sentence features of plain texts with a text tower.

    Parameters
    ----------
    tower : TextTower
        The text encoder.
    texts : sequence of str
        The texts.

    Returns
    -------
    features : Tensor of shape (n_texts, output_dim)
        Not normalised.

    Examples
    --------
    >>> from skucdr.tpsnet.text import BuiltinTextTower, encode_text
    >>> tuple(encode_text(BuiltinTextTower(), ["a photo of a digit."]).shape)
    (1, 128)
    """
    token_ids = tower.tokenize(list(texts))
    if isinstance(tower, nn.Module):
        token_ids = token_ids.to(_module_device(tower))
    return tower.encode_prompts(tower.token_embedding(token_ids), token_ids)


class _FrozenTower(nn.Module):
    """Base of the provided towers: frozen weights, always in eval mode."""

    def _freeze(self):
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True):
        """Stay in eval mode: a frozen prior must not change with the training mode."""
        return super().train(False)


class BuiltinTextTower(_FrozenTower):
    """A small frozen CLIP-like text transformer with a fixed random initialisation.

    Token embedding plus learned-style positional embedding, ``layers`` pre-norm
    transformer blocks with a causal mask, a final LayerNorm, the feature at the
    end-of-text position and a linear projection -- CLIP's text tower in miniature. The
    weights are drawn from ``torch.manual_seed(seed)`` (without touching the global random
    state) and frozen, so two towers with the same arguments are identical on every
    machine with the same PyTorch version. It encodes no language knowledge.

    Parameters
    ----------
    width : int, default=128
        Width of the token embeddings and of the transformer (``embed_dim``).
    layers : int, default=2
        Number of transformer blocks.
    heads : int, default=4
        Number of attention heads (must divide ``width``).
    context_length : int, default=16
        Length of every token sequence (start and end tokens included).
    vocab : sequence of str, default=DEFAULT_VOCAB
        Known lowercase words. The placeholder ``"x"`` and ``"."`` are always added;
        other words map to an unknown-word token.
    output_dim : int, default=128
        Size of the sentence features.
    seed : int, default=0
        Seed of the weights.

    Attributes
    ----------
    embed_dim : int
        Equal to ``width``.
    vocabulary : dict of str to int
        Token ids: ``"<pad>"`` 0, ``"<unk>"`` 1, ``"<sot>"`` 2, ``"<eot>"`` 3, then words.

    Examples
    --------
    >>> from skucdr.tpsnet.text import BuiltinTextTower
    >>> tower = BuiltinTextTower()
    >>> tower.tokenize(["an image of a X X."])[0, :9].tolist()
    [2, 5, 7, 18, 4, 21, 21, 22, 3]
    """

    PAD, UNK, SOT, EOT = 0, 1, 2, 3
    _WORD = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")

    def __init__(
        self,
        width=128,
        layers=2,
        heads=4,
        context_length=16,
        vocab=DEFAULT_VOCAB,
        output_dim=128,
        seed=0,
    ):
        super().__init__()
        for name, value, low in (
            ("width", width, 1),
            ("layers", layers, 1),
            ("heads", heads, 1),
            ("context_length", context_length, 3),
            ("output_dim", output_dim, 1),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}.")
        if width % heads:
            raise ValueError(f"heads={heads} must divide width={width}.")
        if isinstance(vocab, str) or not all(isinstance(w, str) for w in vocab):
            raise TypeError("vocab must be a sequence of words (str).")
        words = ["<pad>", "<unk>", "<sot>", "<eot>"]
        words += list(
            dict.fromkeys(w.lower() for w in (*vocab, "x", ".") if w.lower() not in words)
        )
        self.vocabulary = {word: i for i, word in enumerate(words)}
        self.embed_dim = width
        self.output_dim = output_dim
        self.context_length = context_length

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.token_embedding = nn.Embedding(len(words), width)
            nn.init.normal_(self.token_embedding.weight, std=0.02)
            self.positional_embedding = nn.Parameter(torch.randn(context_length, width) * 0.01)
            block = nn.TransformerEncoderLayer(
                width,
                heads,
                dim_feedforward=4 * width,
                dropout=0.0,
                activation="gelu",
                batch_first=True,
                norm_first=True,
            )
            self.transformer = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
            self.ln_final = nn.LayerNorm(width)
            self.text_projection = nn.Parameter(torch.randn(width, output_dim) * width**-0.5)
        mask = nn.Transformer.generate_square_subsequent_mask(context_length)
        self.register_buffer("attn_mask", mask, persistent=False)
        self._freeze()

    def tokenize(self, texts):
        """Token ids ``<sot> words <eot> <pad>...`` of shape ``(n_texts, context_length)``.

        Parameters
        ----------
        texts : sequence of str
            Texts; words are lowercased, punctuation marks are tokens of their own.

        Returns
        -------
        token_ids : LongTensor of shape (n_texts, context_length)

        Raises
        ------
        ValueError
            If a text has more than ``context_length - 2`` tokens.
        """
        if isinstance(texts, str):
            texts = [texts]
        rows = torch.full((len(texts), self.context_length), self.PAD, dtype=torch.long)
        for i, text in enumerate(texts):
            ids = [self.vocabulary.get(w, self.UNK) for w in self._WORD.findall(text.lower())]
            if len(ids) > self.context_length - 2:
                raise ValueError(
                    f"Text {text!r} has {len(ids)} tokens; at most context_length - 2 = "
                    f"{self.context_length - 2} fit."
                )
            rows[i, : len(ids) + 2] = torch.tensor([self.SOT, *ids, self.EOT])
        return rows

    def encode_prompts(self, prompt_embeddings, token_ids):
        """Sentence features of token-embedding sequences (see :class:`TextTower`).

        Parameters
        ----------
        prompt_embeddings : Tensor of shape (n, context_length, embed_dim)
            Token embeddings, possibly with learnable vectors in place of some tokens.
        token_ids : LongTensor of shape (n, context_length)
            The ids the sequences come from; the ``<eot>`` position is pooled.

        Returns
        -------
        features : Tensor of shape (n, output_dim)
        """
        _check_prompt_shapes(self, prompt_embeddings, token_ids)
        x = prompt_embeddings + self.positional_embedding
        x = self.transformer(x, mask=self.attn_mask, is_causal=True)
        x = self.ln_final(x)
        eot = (token_ids == self.EOT).int().argmax(dim=-1)
        pooled = x[torch.arange(x.shape[0], device=x.device), eot]
        return pooled @ self.text_projection


def _check_prompt_shapes(tower, prompt_embeddings, token_ids):
    n, length = token_ids.shape[0], tower.context_length
    if prompt_embeddings.shape != (n, length, tower.embed_dim) or token_ids.shape != (n, length):
        raise ValueError(
            "Expected prompt_embeddings of shape (n, context_length, embed_dim) = "
            f"(n, {length}, {tower.embed_dim}) and token_ids of shape (n, {length}); got "
            f"{tuple(prompt_embeddings.shape)} and {tuple(token_ids.shape)}."
        )


class OpenCLIPTextTower(_FrozenTower):
    """Adapter that exposes the text tower of an ``open_clip`` model as a :class:`TextTower`.

    It holds the text modules of the model (token and positional embeddings,
    transformer, final LayerNorm, projection, attention mask), not the image tower, and
    freezes them. It reproduces ``model.encode_text`` with the token embeddings supplied
    by the caller.

    Parameters
    ----------
    model : open_clip.CLIP or open_clip.CustomTextCLIP
        A CLIP model (or its ``.text`` tower). Text towers with a class token
        (CoCa) and Hugging Face text towers are not supported.
    tokenizer : callable, default=None
        ``tokenizer(list_of_texts) -> LongTensor (n, context_length)``. By default
        ``open_clip``'s CLIP BPE tokenizer with the model's context length.

    Attributes
    ----------
    embed_dim, output_dim, context_length : int
        See :class:`TextTower`.

    Notes
    -----
    The end-of-text feature is located as the model does: at the highest token id for
    CLIP (``pool_type="argmax"``), at ``eos_id`` for ``pool_type="eos"``, or the first or
    last position. Old ``open_clip`` transformers without a ``batch_first`` attribute
    take sequences first (``(L, n, D)``); the adapter permutes for them.
    """

    def __init__(self, model, tokenizer=None):
        super().__init__()
        text = getattr(model, "text", model)
        missing = [
            name
            for name in ("token_embedding", "positional_embedding", "transformer", "ln_final")
            if not hasattr(text, name)
        ]
        if missing:
            raise TypeError(
                f"{type(model).__name__} is not an open_clip CLIP model with a transformer "
                f"text tower (missing {', '.join(missing)})."
            )
        if getattr(text, "cls_emb", None) is not None:
            raise ValueError("Text towers with a class token (CoCa) are not supported.")
        self.token_embedding = text.token_embedding
        self.positional_embedding = text.positional_embedding
        self.transformer = text.transformer
        self.ln_final = text.ln_final
        self.text_projection = getattr(text, "text_projection", None)
        self.register_buffer("attn_mask", getattr(text, "attn_mask", None), persistent=False)
        self.pool_type = getattr(text, "text_pool_type", getattr(text, "pool_type", "argmax"))
        self.eos_id = getattr(text, "text_eos_id", getattr(text, "eos_id", None))
        if self.pool_type not in ("argmax", "eos", "first", "last"):
            raise ValueError(f"Unsupported text pooling {self.pool_type!r}.")
        self.embed_dim = int(self.token_embedding.weight.shape[1])
        self.context_length = int(self.positional_embedding.shape[0])
        projection = self.text_projection
        if projection is None:
            self.output_dim = self.embed_dim
        elif isinstance(projection, nn.Linear):
            self.output_dim = int(projection.out_features)
        else:
            self.output_dim = int(projection.shape[1])
        if tokenizer is None:
            open_clip = import_open_clip()
            tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=self.context_length)
        self._tokenizer = tokenizer
        self._freeze()

    @classmethod
    def from_pretrained(cls, model_name, checkpoint_path, *, device="cpu"):
        """Build the tower from a LOCAL ``open_clip`` checkpoint (nothing is downloaded).

        Parameters
        ----------
        model_name : str
            An ``open_clip`` architecture name, e.g. ``"ViT-B-16"``.
        checkpoint_path : str or os.PathLike
            Path of the checkpoint file on disk.
        device : str or torch.device, default="cpu"
            Where to load the weights.

        Returns
        -------
        tower : OpenCLIPTextTower
        """
        model = load_local_open_clip(model_name, checkpoint_path, device=device)
        return cls(model, tokenizer=import_open_clip().get_tokenizer(model_name))

    def tokenize(self, texts):
        """Token ids of shape ``(n_texts, context_length)`` from the model's tokenizer."""
        if isinstance(texts, str):
            texts = [texts]
        token_ids = self._tokenizer(list(texts))
        return torch.as_tensor(token_ids, dtype=torch.long)

    def encode_prompts(self, prompt_embeddings, token_ids):
        """Sentence features of token-embedding sequences (see :class:`TextTower`).

        Parameters
        ----------
        prompt_embeddings : Tensor of shape (n, context_length, embed_dim)
        token_ids : LongTensor of shape (n, context_length)

        Returns
        -------
        features : Tensor of shape (n, output_dim)
        """
        _check_prompt_shapes(self, prompt_embeddings, token_ids)
        get_cast_dtype = getattr(self.transformer, "get_cast_dtype", None)
        dtype = get_cast_dtype() if get_cast_dtype is not None else prompt_embeddings.dtype
        x = prompt_embeddings.to(dtype) + self.positional_embedding.to(dtype)
        legacy = getattr(self.transformer, "batch_first", None) is None
        if legacy:  # open_clip < 2.24 transformers take (L, n, D)
            x = x.permute(1, 0, 2)
        x = self.transformer(x, attn_mask=self.attn_mask)
        if legacy:
            x = x.permute(1, 0, 2)
        x = self.ln_final(x)
        rows = torch.arange(x.shape[0], device=x.device)
        if self.pool_type == "argmax":
            pooled = x[rows, token_ids.argmax(dim=-1)]
        elif self.pool_type == "eos":
            pooled = x[rows, (token_ids == self.eos_id).int().argmax(dim=-1)]
        else:
            pooled = x[:, 0] if self.pool_type == "first" else x[:, -1]
        if self.text_projection is None:
            return pooled
        if isinstance(self.text_projection, nn.Linear):
            return self.text_projection(pooled)
        return pooled @ self.text_projection


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
    >>> from skucdr.tpsnet.text import BuiltinTextTower, PromptLearner
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
        if not isinstance(tower, TextTower):
            raise TypeError(
                f"tower must follow the TextTower protocol, got {type(tower).__name__}."
            )
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
        device = _module_device(tower) if isinstance(tower, nn.Module) else torch.device("cpu")
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
