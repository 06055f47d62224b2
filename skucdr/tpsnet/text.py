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
from typing import Protocol

import torch
from torch import Tensor, nn

from ..nn.clip_loading import import_open_clip, load_local_open_clip

__all__ = [
    "TextTower",
    "BuiltinTextTower",
    "OpenCLIPTextTower",
    "check_text_tower",
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


def check_text_tower(tower, name="tower"):
    """``tower`` when it has every member of :class:`TextTower`; else a ``TypeError``
    naming what it lacks (the one check of a text tower, for parameters and modules).

    Members are looked up as ordinary attributes, so those an ``nn.Module`` holds as
    submodules (an ``nn.Embedding`` as ``token_embedding``) count."""
    missing = [m for m in _TOWER_ATTRIBUTES if not hasattr(tower, m)] + [
        m for m in _TOWER_METHODS if not callable(getattr(tower, m, None))]
    if missing:
        raise TypeError(f"{name} must be a text tower (see skucdr.tpsnet.text.TextTower); "
                        f"{type(tower).__name__} lacks {missing}.")
    return tower


class TextTower(Protocol):
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
    :func:`check_text_tower` checks that an object has these members.
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


def module_device(module):
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
        token_ids = token_ids.to(module_device(tower))
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
