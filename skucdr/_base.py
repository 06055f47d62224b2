"""Machinery shared by every torch retriever: fit/transform/kneighbors/score plumbing.

A concrete retriever implements these hooks:

* ``_fit_network(data, codes, generator, checkpoint)`` trains the method's network on
  the validated :class:`~skucdr._domains.DomainInput` and returns a :class:`NetworkFit`
  (the skorch net, and what else the fit found: the fitted rows' embeddings when it
  computed them, fitted attributes of its own); it trains with :meth:`BaseRetriever._train`,
  handing on ``checkpoint``;
* ``_embed_batch(x, codes)`` maps a batch tensor (already on the device, images
  reshaped to ``(n, C, H, W)``) and its domain codes to L2-normalised embeddings;
* ``_domain_norm_parts(module)`` names the submodules whose batch-norm layers keep
  per-domain statistics with ``domain_norm=True`` (the domain codes of every batch
  reach them through :func:`~skucdr.nn.domain_norm.domain_codes`);
* ``_rebuild_module(architecture)`` builds the fitted module's architecture with
  untrained weights, for :func:`skucdr.persistence.load_retriever`, from the plain
  values ``_architecture()`` returns (none by default).

A retriever may also override ``_standardizes_inputs(image_shape)`` (standardise every
input feature per domain: fitted ``input_mean_`` and ``input_scale_``),
``_freezes_encoder()`` (train a head on a frozen backbone's features),
``_open_set_options()`` (appendix B.1's clustering options) and ``_auto_epochs`` (the
epochs of ``max_epochs="auto"``). A retriever whose fit sets attributes of its own
declares them in ``_fitted_state``, which persistence, pickling and the atomic swap of
a fit's state loop over.

Everything else — validation, the domain model, seeding, batched inference, scoring,
metadata requests — lives here; the gallery in :mod:`skucdr._gallery`, open-set
detection in :mod:`skucdr.open_set`, devices and GPU-safe pickling in
:mod:`skucdr.nn.devices`.
"""

from __future__ import annotations

import numbers
import os
import warnings
from abc import ABCMeta, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    TransformerMixin,
)
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from ._domains import check_domain_input, unpack_domains
from ._gallery import Gallery, check_index_setting
from ._inputs import check_pixel_range, domain_statistics, standardize, training_inputs
from ._search import SearchMixin
from ._sklearn_compat import Interval, StrOptions, _fit_context, check_tabular_output
from ._validation import check_same_kind
from .nn.devices import move_net, net_on_cpu, resolve_device
from .nn.domain_norm import convert_domain_batchnorm, domain_codes
from .nn.encoders import (
    ENCODER_NAMES,
)
from .nn.training import train_objective

__all__ = ["BaseRetriever"]

# Adam's weight decay in every fit (docs/methods.md, "Training").
WEIGHT_DECAY = 1e-5
# Fewest optimiser steps of an epoch with max_epochs="auto": a folder of a few hundred or
# thousand images per domain revisits its rows within an epoch instead of getting a
# fraction of a large data set's steps (docs/methods.md, "Training schedule"). The
# digit pairs' epochs are longer (79 steps), so their fits are unchanged.
AUTO_MIN_STEPS_PER_EPOCH = 50


class BaseRetriever(SearchMixin, ClassNamePrefixFeaturesOutMixin, TransformerMixin,
                    BaseEstimator, metaclass=ABCMeta):
    """Base class of the torch retrievers (not for direct use).

    Subclasses declare their own ``__init__`` with the shared parameters listed in
    ``_shared_parameter_constraints`` plus their method's hyper-parameters.
    """

    # sample_domain travels through Pipeline / GridSearchCV / cross_validate without
    # any set_*_request call by the user (routing itself stays the user's choice).
    __metadata_request__fit = {"sample_domain": True}
    __metadata_request__transform = {"sample_domain": True}
    __metadata_request__score = {"sample_domain": True}

    _requires_images = False

    #: Every attribute a fit sets, and its kind (see :func:`fitted_state_of`). The
    #: atomic swap of a fit, pickling and :mod:`skucdr.persistence` loop over it; a
    #: retriever whose fit sets more extends it.
    _fitted_state = {
        "domains_": "labels",
        "train_domain_": "labels",
        "train_embedding_": "array",
        "gallery_": "gallery",
        "feature_names_in_": "labels",
        "input_mean_": "array",
        "input_scale_": "array",
        "n_features_in_": "value",
        "image_shape_": "value",
        "device_": "value",
        "_n_features_out": "value",
        "history_": "history",
        "net_": "net",
    }

    _shared_parameter_constraints: dict = {
        "n_components": [Interval(numbers.Integral, 1, None, closed="left")],
        "max_epochs": [StrOptions({"auto"}), Interval(numbers.Integral, 1, None, closed="left")],
        "batch_size": [Interval(numbers.Integral, 2, None, closed="left")],
        "lr": [Interval(numbers.Real, 0, None, closed="neither")],
        "encoder": [StrOptions(set(ENCODER_NAMES)), torch.nn.Module],
        "encoder_weights": [str, os.PathLike, None],
        "domain_norm": ["boolean"],
        "augment": [StrOptions({"auto"}), callable, None],
        "image_shape": [tuple, list, None],
        "index": [str],
        "index_params": [dict, None],
        "device": [str],
        "random_state": ["random_state"],
        "checkpoint_dir": [str, os.PathLike, None],
        "verbose": ["verbose"],
    }

    # ------------------------------------------------------------------ fitting
    def _validate(self, X, sample_domain, *, reset):
        image_shape = self.image_shape if reset else getattr(self, "image_shape_", None)
        data = check_domain_input(
            self,
            X,
            sample_domain,
            image_shape=image_shape,
            reset=reset,
            require_images=self._requires_images,
            allow_datasets=True,
        )
        if not reset and image_shape is not None and data.image_shape != image_shape:
            raise ValueError(
                f"X holds images of shape {data.image_shape}, but the retriever was fitted on "
                f"images of shape {image_shape}."
            )
        if data.image_shape is not None and isinstance(self.augment, str) \
                and isinstance(data.X, np.ndarray):  # a dataset's images are not all read
            check_pixel_range(data.X, type(self).__name__)
        return data

    def _domain_codes(self, sample_domain):
        """Codes 0..n_domains-1 of the fitted domains; -1 for a domain not seen in fit."""
        lookup = {d: i for i, d in enumerate(self.domains_.tolist())}
        return np.array([lookup.get(d, -1) for d in sample_domain.tolist()], dtype=np.int64)

    def _inference_codes(self, data):
        """Domain codes of validated inference input, with its labels checked against
        the fitted domains: a label of another type (``"0"`` for a model fitted with int
        domains) raises a ``TypeError``; a domain not seen in fit gets a warning, as its
        rows are embedded with the pooled statistics of the fitted domains."""
        if not data.domains_given:
            return self._domain_codes(data.sample_domain)
        check_same_kind(data.sample_domain, self.domains_, "sample_domain")
        codes = self._domain_codes(data.sample_domain)
        if (codes < 0).any():
            unseen = sorted(set(data.sample_domain[codes < 0].tolist()), key=str)
            warnings.warn(
                f"sample_domain holds domains not seen in fit: {unseen} (fitted: "
                f"{self.domains_.tolist()}). Their rows are embedded with the pooled "
                "statistics of the fitted domains, and kneighbors searches every gallery "
                "domain for them. Check for a typo.", UserWarning, stacklevel=3)
        return codes

    def _fit(self, X, sample_domain):
        """Fit a fresh copy of the estimator and swap its fitted state in on success.

        A fit that raises or is interrupted (Ctrl+C) leaves the estimator exactly as it
        was: fitted on the former data, or not fitted.
        """
        params = self.get_params(deep=False)
        trainee = type(self)(**params)
        data = trainee._fit_state(X, sample_domain)
        # the former fit's state and caches go, the new fit's state comes in
        for name in (*self._fitted_state, *_CACHES):
            self.__dict__.pop(name, None)
        self.__dict__.update({k: v for k, v in vars(trainee).items()
                              if k in self._fitted_state})
        return data

    def _fit_state(self, X, sample_domain):
        """The fit itself, on ``self`` (a fresh copy made by :meth:`_fit`)."""
        # the gallery's faiss index and its knobs, checked before any training
        check_index_setting(self.index, self.index_params, self.n_components)
        data = self._validate(X, sample_domain, reset=True)
        if data.X.shape[0] < 2:
            raise ValueError(
                f"{type(self).__name__} needs at least 2 samples to fit, got 1 sample."
            )
        self.domains_ = np.asarray(data.domain_order)
        self.image_shape_ = data.image_shape
        self.device_ = resolve_device(self.device)
        codes = self._domain_codes(data.sample_domain)
        self._fit_input_standardization(data, codes)
        checkpoint = self._checkpoint_file(data, codes)
        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        devices = [torch.cuda.current_device()] if self.device_.startswith("cuda") else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            generator = torch.Generator().manual_seed(seed)
            fitted = self._fit_network(data, codes, generator, checkpoint)
        self.net_ = fitted.net
        self.__dict__.update(fitted.attributes)
        self.history_ = self.net_.history
        self._n_features_out = self.n_components
        self.train_embedding_ = (fitted.train_embedding if fitted.train_embedding is not None
                                 else self._embed(data.X, codes))
        self.train_domain_ = data.sample_domain
        self.gallery_ = Gallery(self.train_embedding_, data.sample_domain)
        return data

    def _checkpoint_file(self, data, codes):
        """``(path, fingerprint)`` of this fit's checkpoint, or None without
        ``checkpoint_dir`` (see :mod:`skucdr.nn.checkpoint`)."""
        from .nn.checkpoint import checkpoint_path, fit_fingerprint

        if self.checkpoint_dir is None:
            return None
        params = {k: v for k, v in self.get_params(deep=False).items()
                  if k not in ("checkpoint_dir", "verbose")}
        fingerprint = fit_fingerprint(type(self).__qualname__, params, data.X, codes,
                                      self.domains_.tolist(), data.image_shape, self.device_)
        return checkpoint_path(self.checkpoint_dir, type(self).__name__, fingerprint), fingerprint

    def _standardizes_inputs(self, image_shape):
        """Whether inputs of this shape are standardised per domain (none by default)."""
        return False

    def _fit_input_standardization(self, data, codes):
        """``input_mean_`` and ``input_scale_`` (:func:`~skucdr._inputs.domain_statistics`)
        when :meth:`_standardizes_inputs` says so; else neither attribute exists."""
        for name in ("input_mean_", "input_scale_"):  # a refit starts afresh
            self.__dict__.pop(name, None)
        if self._standardizes_inputs(data.image_shape):
            self.input_mean_, self.input_scale_ = domain_statistics(
                data.X, codes, len(self.domains_))

    def _standardized(self, X, codes):
        """``X`` standardised with the statistics of each row's domain (as is without)."""
        mean = getattr(self, "input_mean_", None)
        return X if mean is None else standardize(X, codes, mean, self.input_scale_)

    def _freezes_encoder(self):
        """Whether the backbone stays as it is and only the head trains (the
        retrievers that offer it say so with a ``freeze_encoder`` parameter)."""
        return False

    def _training_inputs(self, data, codes):
        """The rows to train on, the encoder to train and the frozen backbone or None
        (:func:`~skucdr._inputs.training_inputs`)."""
        # images (lazy ones included) are never standardised: _standardized keeps them
        return training_inputs(
            self._standardized(data.X, codes), data.image_shape, encoder=self.encoder, encoder_weights=self.encoder_weights,
            freeze=self._freezes_encoder(), device=self.device_,
            batch_size=self._inference_batch_size())

    def _convert_domain_norm(self, module):
        """With ``domain_norm`` and several domains, turn the batch-norm layers of
        :meth:`_domain_norm_parts` into per-domain
        :class:`~skucdr.nn.domain_norm.DomainBatchNorm` layers."""
        if self.domain_norm and len(self.domains_) > 1:
            for part in self._domain_norm_parts(module):
                convert_domain_batchnorm(part, len(self.domains_))

    def _architecture(self):
        """Plain values, besides the parameters and fitted attributes, that
        :meth:`_rebuild_module` needs (none by default)."""
        return {}

    @abstractmethod
    def _rebuild_module(self, architecture):
        """The fitted module's architecture with untrained weights, from the parameters,
        the fitted attributes and :meth:`_architecture` (used by
        :func:`skucdr.persistence.load_retriever`)."""

    @abstractmethod
    def _fit_network(self, data, codes, generator, checkpoint):
        """Train the method's network on the validated ``data`` (with ``checkpoint``,
        see :meth:`_train`); return a :class:`NetworkFit`."""

    @abstractmethod
    def _domain_norm_parts(self, module):
        """The submodules of ``module`` whose batch norm ``domain_norm`` makes per-domain."""

    @abstractmethod
    def _embed_batch(self, x, codes):
        """L2-normalised embeddings of a batch tensor ``x`` of domain ``codes``."""

    #: epochs of ``max_epochs="auto"`` (each retriever sets its own)
    _auto_epochs = 90

    def _n_epochs(self):
        """The number of epochs ``max_epochs`` stands for."""
        return self._auto_epochs if self.max_epochs == "auto" else self.max_epochs

    def _min_steps_per_epoch(self):
        """Fewest optimiser steps of an epoch: ``AUTO_MIN_STEPS_PER_EPOCH`` with
        ``max_epochs="auto"``; an int ``max_epochs`` counts plain passes over the data."""
        return AUTO_MIN_STEPS_PER_EPOCH if self.max_epochs == "auto" else 0

    def _train(self, module, objective, n_samples, checkpoint):
        """Train ``module`` on ``objective`` with the estimator's schedule, then drop the
        objective's per-row state; returns the net.

        With ``domain_norm`` and several domains, the batch-norm layers of the
        encoders (:meth:`_domain_norm_parts`) first become
        :class:`~skucdr.nn.domain_norm.DomainBatchNorm` layers."""
        self._convert_domain_norm(module)
        net = train_objective(
            module,
            objective,
            n_samples=n_samples,
            max_epochs=self._n_epochs(),
            lr=self.lr,
            device=self.device_,
            verbose=self.verbose,
            weight_decay=WEIGHT_DECAY,
            checkpoint=checkpoint,
        )
        objective.release()
        return net

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None, *, sample_domain=None):
        """Learn the embedding from unlabeled domains.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, C, H, W), or Mapping
            Rows of every domain: feature vectors, images, or flattened images with
            ``image_shape``; or a mapping ``{domain: X_domain}``.
        y : None
            Ignored; present for API consistency. Labels never influence training.
        sample_domain : array-like of shape (n_samples,), default=None
            Domain (name or int) of every row; None means one domain.

        Returns
        -------
        self : object
            The fitted retriever. The fitted rows become the retrieval gallery.
        """
        self._fit(X, sample_domain)
        return self

    @_fit_context(prefer_skip_nested_validation=True)
    def fit_transform(self, X, y=None, *, sample_domain=None):
        """Fit, then return the embeddings of the fitted rows.

        Validates and fits exactly as :meth:`fit` does.

        Parameters
        ----------
        X : array-like or Mapping
            As for :meth:`fit`.
        y : None
            Ignored.
        sample_domain : array-like of shape (n_samples,), default=None
            As for :meth:`fit`.

        Returns
        -------
        Z : ndarray of shape (n_samples, n_components), or Mapping
            L2-normalised embeddings of the fitted rows; a mapping for a mapping.
        """
        data = self._fit(X, sample_domain)
        Z = self.gallery_embedding_.copy()
        if data.from_mapping:
            return unpack_domains(Z, data.sample_domain)
        return Z

    # ---------------------------------------------------------------- inference
    def _model_for_inference(self):
        module = self.net_.module_
        module.eval()
        return module

    def _inference_batch_size(self):
        return max(256, 4 * self.batch_size)

    def _embed(self, X_flat, codes):
        """Embed flat rows in batches (memory does not grow with ``n``)."""
        self._model_for_inference()  # eval mode
        device = self.net_.device
        out = np.empty((X_flat.shape[0], self.n_components), dtype=np.float32)
        step = self._inference_batch_size()
        starts = range(0, X_flat.shape[0], step)
        if self.verbose and len(starts) > 1:  # e.g. embedding a large catalogue
            from tqdm.auto import tqdm  # installed with skorch

            starts = tqdm(starts, desc="embedding", unit="batch", leave=False)
        with torch.no_grad():
            for start in starts:
                xb = self._standardized(X_flat[start : start + step], codes[start : start + step])
                # one copy, into torch's own memory on the device (no warning for
                # read-only input, no aliasing): on the CPU 64-byte aligned wherever
                # numpy put the rows, as the training batches (gathered rows) are
                xb = torch.tensor(xb, device=device)
                if self.image_shape_ is not None:
                    xb = xb.view(-1, *self.image_shape_)
                cb = torch.as_tensor(np.asarray(codes[start : start + step])).to(device)
                with domain_codes(self.net_.module_, cb):
                    z = self._embed_batch(xb, cb)
                out[start : start + step] = torch.nn.functional.normalize(z, dim=1).cpu().numpy()
        return out

    def transform(self, X, *, sample_domain=None):
        """Embed rows into the retrieval space.

        Parameters
        ----------
        X : array-like or Mapping
            As in :meth:`fit`.
        sample_domain : array-like of shape (n_samples,), default=None
            Domain of every row (needed by methods whose embedding depends on the domain).

        Returns
        -------
        Z : ndarray of shape (n_samples, n_components), float32, or dict
            L2-normalised embeddings; a mapping ``{domain: Z_domain}`` when ``X`` was a
            mapping.
        """
        check_is_fitted(self, "net_")
        check_tabular_output(self, from_mapping=isinstance(X, Mapping), ndim=2)
        data = self._validate(X, sample_domain, reset=False)
        Z = self._embed(data.X, self._inference_codes(data))
        if data.from_mapping:
            return unpack_domains(Z, data.sample_domain)
        return Z

    # ------------------------------------------------------------------- sklearn
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = False
        tags.transformer_tags.preserves_dtype = ["float32"]  # embeddings are always float32
        tags.input_tags.two_d_array = True
        # images with the built-in augmentation must hold pixels in [0, 1]
        tags.input_tags.positive_only = isinstance(self.augment, str) and (
            self.image_shape is not None or self._requires_images)
        # GPU kernels are not run-to-run reproducible; "auto" picks the GPU when there is one
        device = str(self.device)
        tags.non_deterministic = device != "cpu" and (device != "auto"
                                                      or torch.cuda.is_available())
        return tags

    def __getstate__(self):
        # the parameters and the declared fitted state; caches (the open-set clusters)
        # are rebuilt when needed; the gallery's faiss indexes travel in faiss's format
        state = {k: v for k, v in self.__dict__.items() if k not in _CACHES}
        if state.get("device_", "cpu") != "cpu":
            # Plain pickling stores GPU tensors that only a machine with that GPU can
            # unpickle. A copy of the net with every tensor on the CPU is stored instead;
            # __setstate__ moves it back to the GPU when that GPU is there.
            for name, kind in self._fitted_state.items():
                if kind == "net" and name in state:
                    net = state[name] = net_on_cpu(state[name])
                    state.update({h: net.history for h, k in self._fitted_state.items()
                                  if k == "history" and h in state})
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        if self.__dict__.get("device_", "cpu") != "cpu":
            for name, kind in self._fitted_state.items():
                if kind == "net" and name in self.__dict__:
                    self.device_ = move_net(self.__dict__[name], self.device_)


# what a fitted retriever keeps that is no fitted state: rebuilt when needed
_CACHES = ("_detection",)


@dataclass
class NetworkFit:
    """What a retriever's ``_fit_network`` hands back to :class:`BaseRetriever`.

    Attributes
    ----------
    net : skorch.NeuralNet
        The fitted net (``net_``).
    train_embedding : ndarray of shape (n_samples, n_components) or None
        The fitted rows' embeddings when the fit computed them (a frozen backbone's
        cached features through the trained head); None: they are embedded after.
    attributes : dict
        Fitted attributes of the method's own (declared in its ``_fitted_state``).
    """

    net: object
    train_embedding: np.ndarray | None = None
    attributes: dict = field(default_factory=dict)


def fitted_state_of(retriever):
    """``{attribute: kind}`` of everything a fit of ``retriever`` sets: ``"labels"``,
    ``"value"`` and ``"history"`` (plain values), ``"array"`` (float arrays), ``"net"``
    and ``"gallery"``. Persistence stores each kind in its place."""
    return dict(type(retriever)._fitted_state)
