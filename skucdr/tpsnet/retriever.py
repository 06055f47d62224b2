"""TextPhaseRetriever: TPSNet (Yang, Xue, Zhu & Fang, CVPR 2026), reconstructed."""

from __future__ import annotations

import copy
import numbers

import numpy as np

from .._base import BaseRetriever, NetworkFit
from .._sklearn_compat import Interval, StrOptions
from ..nn.augment import build_augment
from ..nn.encoders import build_encoder
from .network import TPSNetModule
from .objective import TPSNetObjective
from .text import BuiltinTextTower, check_text_tower

__all__ = ["TextPhaseRetriever"]

# scikit-learn's common checks that fit on plain feature vectors of arbitrary width.
_CHECKS_FITTING_FEATURE_VECTORS = (
    "check_dict_unchanged",
    "check_dont_overwrite_parameters",
    "check_dtype_object",
    "check_estimators_dtypes",
    "check_estimators_fit_returns_self",
    "check_estimators_nan_inf",
    "check_estimators_overwrite_params",
    "check_estimators_pickle",
    "check_f_contiguous_array_estimator",
    "check_fit2d_1feature",
    "check_fit2d_1sample",
    "check_fit2d_predict1d",
    "check_fit_check_is_fitted",
    "check_fit_idempotent",
    "check_fit_score_takes_y",
    "check_methods_sample_order_invariance",
    "check_methods_subset_invariance",
    "check_n_features_in",
    "check_n_features_in_after_fitting",
    "check_pipeline_consistency",
    "check_positive_only_tag_during_fit",
    "check_readonly_memmap_input",
    "check_transformer_data_not_an_array",
    "check_transformer_general",
    "check_transformer_preserve_dtypes",
)

#: Share of ``max_epochs`` spent in stage 1 (warm-up and prompts), rounded to whole
#: epochs; at least one epoch is left to stage 2 (docs/methods.md, "TPSNet's schedule").
STAGE1_FRACTION = 0.6


class TextPhaseRetriever(BaseRetriever):
    """Unsupervised cross-domain image retrieval with TPSNet's text and phase priors.

    TPSNet (Text-Phase Synergy Network; Yang, Xue, Zhu & Fang, CVPR 2026) learns, from
    unlabeled image domains, an embedding in which a query of one domain finds images of
    its category in another, guided by two priors: *domain prompts* (learned text
    features, one per domain and pseudo-class) and the *phase-only image* (Fourier phase
    with a constant amplitude, which keeps the structure and drops much of the style).
    No code or full text of the paper is public: this is a reconstruction, and every
    choice the paper does not pin down is in :doc:`/methods` (``docs/methods.md``) with
    what it measured.

    **Stage 1, DPG** (the first 60% of ``max_epochs``):

    1. *Warm-up.* TPSNet starts from frozen CLIP image features; none are available
       offline, so the RGB encoder first learns image features ``v`` (a projection head
       into the text feature space) with UEM's stage 1: two augmented views per image,
       the merged-prototype NCE and the semantic-enhanced loss.
    2. *Pseudo-labels.* Per-domain spherical k-means on the frozen ``v`` (``n_prototypes``
       clusters, or the elbow rule), with cluster ids aligned across domains
       (:func:`~skucdr.tpsnet.objective.align_domain_clusters`), so class ``c`` is the
       same category in every domain.
    3. *Domain prompts.* Per domain and class, a prompt ``"an image of a [X]_1 ...
       [X]_M."`` (``M = n_ctx``) through the frozen ``text_tower``; only the ``[X]``
       vectors learn, with ``L_i2t + L_t2i`` against ``v``, during the last
       ``prompt_epochs`` epochs of stage 1. Images are re-paired with the most similar
       prompt of their domain between prompt epochs.

    **Stage 2, TPDP**: RGB tokens and phase tokens (:class:`~skucdr.tpsnet.network.PhaseCNN`
    on the phase-only image of the same augmented view) are fused and queried by the
    frozen prompt features of the image's domain (cross-attention). The retrieval
    embedding is ``I' = normalize(W v + g * CrossAttention(T'; I^f))``: the stage-1
    features plus the dual-prior output scaled by a learned gate that starts at 0. Loss
    ``alpha * L_pce + beta * L_i2tce + gamma * (L_pnce + L_sel)``: prototype
    cross-entropy, label-smoothed image-to-text cross-entropy, and UEM's merged-prototype
    NCE and semantic-enhanced loss on ``I'``.

    The embedding of an image depends on its domain: its domain's prompts are the
    queries. Images of a domain not seen in fit are queried with the mean over the
    fitted domains of each class's prompt feature.

    Parameters
    ----------
    n_components : int, default=128
        Width of the embedding (and of the fused tokens).
    max_epochs : "auto" or int, default="auto"
        Total epochs: 60% stage 1 (warm-up, then ``prompt_epochs`` of prompts), 40%
        stage 2. ``"auto"``: 66 epochs of at least 50 optimiser steps, so that a small
        data set revisits its rows within an epoch; an int: that many passes over the
        data (over the largest domain). Raise it, with ``augment``, when fit time allows. See
        :ref:`tpsnet-schedule`.
    batch_size : int, default=32
        Rows *per domain* in every step. See :ref:`tpsnet-schedule`.
    lr : float, default=1e-3
        Adam learning rate, cosine-annealed to 0 over the fit.
    n_prototypes : "elbow" or int, default="elbow"
        Pseudo-classes per domain: the elbow of the k-means inertia, or a fixed k (the
        number of categories, when it is known).
    max_prototypes : int, default=50
        Largest k the elbow rule scans. Raise it for data sets with more categories.
    n_ctx : int, default=4
        Learnable ``[X]`` vectors per prompt (``M``; CLIP-ReID: 4).
    text_tower : "builtin" or TextTower, default="builtin"
        Frozen text encoder of the prompts (copied at fit): a small built-in one that
        works offline, or :class:`~skucdr.tpsnet.text.OpenCLIPTextTower` with CLIP
        weights on disk. See :ref:`tpsnet-text-tower`.
    text_prior : bool, default=True
        Use the domain prompts (prompt learning, text queries, ``L_i2tce``); False is the
        paper's "w/o text prior" ablation.
    phase_prior : bool, default=True
        Use the phase-only image branch; False is the "w/o phase prior" ablation.
    fusion : {"attention", "concat"}, default="attention"
        Fusion of RGB and phase tokens: self-attention (the paper) or concatenation of
        their means (the ablation).
    alpha : float, default=1.0
        Weight of ``L_pce`` (the paper: 1); 0 for the ablation.
    beta : float, default=1.0
        Weight of ``L_i2tce`` (the paper: 1); 0 for the ablation.
    gamma : float, default=1.0
        Weight of UEM's prototype terms on ``I'`` in stage 2 (not in the paper; 0 leaves
        them out). See :ref:`tpsnet-stage2`.
    tau : float, default=0.05
        Temperature of ``L_pce``.
    prompt_epochs : int, default=10
        Epochs at the end of stage 1 that learn the prompts; the earlier ones warm up
        the encoder.
    encoder : {"auto", "cnn", "resnet18", "resnet50", "efficientnet_lite0"} or \
torch.nn.Module, default="auto"
        RGB backbone, fine-tuned: a small CNN (``"auto"``), a torchvision ResNet (weights
        from ``encoder_weights``), EfficientNet-Lite0 with its ImageNet weights (extra
        ``pretrained``), or your own module returning a feature map ``(n, C, h, w)`` (or
        a vector, used as a single token).
    encoder_weights : str or path, default=None
        Local state-dict file for the torchvision ResNets (nothing is downloaded).
    domain_norm : bool, default=True
        Batch-norm layers of the RGB encoder and of the phase CNN keep running
        statistics per domain (DSBN). See :ref:`domain-norm`.
    augment : "auto", callable or None, default="auto"
        Training augmentation ``f(batch, generator) -> batch`` of images in ``[0, 1]``;
        ``"auto"`` is :class:`~skucdr.nn.augment.ImageAugment` with its defaults. The
        phase image is computed from the augmented view. See :ref:`augmentation`.
    image_shape : tuple (C, H, W), default=None
        Shape of one image when ``X`` holds flattened images.
    index : str, default="Flat"
        faiss index of the gallery (``"Flat"``, ``"auto"``, ``"IVF256,Flat"``,
        ``"HNSW32"``...). See :ref:`scale`.
    index_params : dict, default=None
        Search knobs of the index (``nprobe``, ``ef_search``).
    device : str, default="auto"
        ``"cpu"``, ``"cuda"`` (or ``"cuda:N"``), or ``"auto"``: the GPU when torch sees
        one. A model fitted on a GPU loads with joblib on a machine without one.
    random_state : int, RandomState instance or None, default=None
        Seeds weights, prompts, batches, augmentation and k-means; CPU fits are
        reproducible.
    checkpoint_dir : str, path or None, default=None
        A directory where the fit saves its full training state after every epoch; a
        fit with the same configuration and data resumes from it. See :ref:`checkpoints`.
    verbose : int, default=0
        When > 0: a progress bar and the per-epoch losses during fit, and a progress bar
        while embedding more than one inference batch.

    Attributes
    ----------
    net_ : skorch.NeuralNet
        The trained net; ``net_.module_`` is a
        :class:`~skucdr.tpsnet.network.TPSNetModule` (``class_text`` holds the frozen
        prompt features).
    history_ : skorch.History
        Per-epoch losses: ``loss_ince``, ``loss_pnce``, ``loss_sel`` (warm-up),
        ``loss_i2t``, ``loss_t2i`` (prompts), ``loss_pce``, ``loss_i2tce``,
        ``loss_pnce``, ``loss_sel`` (stage 2); ``stage``, ``n_classes`` and
        ``stat_repaired`` (share of pseudo-labels changed by a re-pairing).
    n_classes_ : int
        Number ``C`` of aligned pseudo-classes (prompts per domain).
    domains_ : ndarray
        Domain labels seen in fit, in order of first appearance.
    gallery_ : skucdr._gallery.Gallery
        The gallery :meth:`kneighbors` searches: its rows, their domains and the faiss
        indexes built on them (set by :meth:`fit` and :meth:`index_gallery`).
    gallery_embedding_ : ndarray of shape (n_gallery, n_components)
        Embeddings searched by :meth:`kneighbors` (``gallery_.embedding``).
    gallery_domain_ : ndarray of shape (n_gallery,)
        Domain of every gallery row (``gallery_.domain``).
    image_shape_ : tuple
        Shape of one image.
    n_features_in_ : int
        Width of a flat input row.

    See Also
    --------
    UniversalCDRRetriever : UEM, which needs no text tower and also handles feature
        vectors.

    Examples
    --------
    >>> from skucdr import TextPhaseRetriever
    >>> from skucdr.datasets import load_digit_domains
    >>> data = load_digit_domains(("mnist", "mnist_m"))             # doctest: +SKIP
    >>> retriever = TextPhaseRetriever(random_state=0)               # doctest: +SKIP
    >>> retriever.fit({name: X for name, (X, y) in data.items()})    # doctest: +SKIP
    >>> dist, idx = retriever.kneighbors(data["mnist_m"][0][:5],
    ...                                  sample_domain=["mnist_m"] * 5)  # doctest: +SKIP
    """

    _requires_images = True
    _auto_epochs = 66
    # the number of pseudo-classes its fit found, stored before _n_features_out (the
    # order of a model file's entries)
    _fitted_state = {**{k: v for k, v in BaseRetriever._fitted_state.items()
                        if k not in ("_n_features_out", "history_", "net_")},
                     "n_classes_": "value", "_n_features_out": "value",
                     "history_": "history", "net_": "net"}

    _parameter_constraints: dict = {
        **BaseRetriever._shared_parameter_constraints,
        "n_prototypes": [StrOptions({"elbow"}), Interval(numbers.Integral, 1, None, closed="left")],
        "max_prototypes": [Interval(numbers.Integral, 2, None, closed="left")],
        "n_ctx": [Interval(numbers.Integral, 1, None, closed="left")],
        # "builtin" or a text tower: checked at fit by check_text_tower (one check of
        # the members a tower needs, for this parameter and PromptLearner alike)
        "text_tower": "no_validation",
        "text_prior": ["boolean"],
        "phase_prior": ["boolean"],
        "fusion": [StrOptions({"attention", "concat"})],
        "alpha": [Interval(numbers.Real, 0, None, closed="left")],
        "beta": [Interval(numbers.Real, 0, None, closed="left")],
        "gamma": [Interval(numbers.Real, 0, None, closed="left")],
        "tau": [Interval(numbers.Real, 0, None, closed="neither")],
        "prompt_epochs": [Interval(numbers.Integral, 0, None, closed="left")],
    }

    def __init__(
        self,
        n_components=128,
        *,
        max_epochs="auto",
        batch_size=32,
        lr=1e-3,
        n_prototypes="elbow",
        max_prototypes=50,
        n_ctx=4,
        text_tower="builtin",
        text_prior=True,
        phase_prior=True,
        fusion="attention",
        alpha=1.0,
        beta=1.0,
        gamma=1.0,
        tau=0.05,
        prompt_epochs=10,
        encoder="auto",
        encoder_weights=None,
        domain_norm=True,
        augment="auto",
        image_shape=None,
        index="Flat",
        index_params=None,
        device="auto",
        random_state=None,
        checkpoint_dir=None,
        verbose=0,
    ):
        self.n_components = n_components
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.n_prototypes = n_prototypes
        self.max_prototypes = max_prototypes
        self.n_ctx = n_ctx
        self.text_tower = text_tower
        self.text_prior = text_prior
        self.phase_prior = phase_prior
        self.fusion = fusion
        self.alpha = alpha
        self.beta = beta
        self.gamma = gamma
        self.tau = tau
        self.prompt_epochs = prompt_epochs
        self.encoder = encoder
        self.encoder_weights = encoder_weights
        self.domain_norm = domain_norm
        self.augment = augment
        self.image_shape = image_shape
        self.index = index
        self.index_params = index_params
        self.device = device
        self.random_state = random_state
        self.checkpoint_dir = checkpoint_dir
        self.verbose = verbose

    def _network(self, encoder, max_classes, generator=None):
        tower = None
        if self.text_prior:
            tower = BuiltinTextTower() if _is_builtin(self.text_tower) \
                else copy.deepcopy(self.text_tower)
        n_channels = self.image_shape_[0]
        return TPSNetModule(
            encoder,
            n_components=self.n_components,
            n_domains=len(self.domains_),
            tower=tower,
            text_dim=tower.output_dim if tower is not None else self.n_components,
            max_classes=max_classes,
            n_ctx=self.n_ctx,
            phase_prior=self.phase_prior,
            phase_channels=1 if n_channels in (1, 3) else n_channels,
            fusion=self.fusion,
            # the largest divisor of n_components not above 4
            n_heads=max(h for h in (4, 3, 2, 1) if self.n_components % h == 0),
            generator=generator,
        )

    def _architecture(self):
        return {"max_classes": self.net_.module_.max_classes}

    def _rebuild_module(self, architecture):
        encoder = build_encoder(self.encoder, image_shape=self.image_shape_,
                                n_features=self.n_features_in_)
        module = self._network(encoder, architecture["max_classes"])
        self._convert_domain_norm(module)
        return module

    def _schedule(self):
        """(warm-up epochs, stage-1 epochs) of the ``max_epochs``."""
        n_epochs = self._n_epochs()
        stage1 = min(round(STAGE1_FRACTION * n_epochs), n_epochs - 1)
        prompt = min(self.prompt_epochs, stage1) if self.text_prior else 0
        return stage1 - prompt, stage1

    def _fit_network(self, data, codes, generator, checkpoint):
        if not _is_builtin(self.text_tower):
            check_text_tower(self.text_tower, "text_tower")
        if isinstance(self.encoder, str) and self.encoder == "mlp":
            raise ValueError("TextPhaseRetriever needs an image encoder, not encoder='mlp'.")
        X, encoder, _ = self._training_inputs(data, codes)
        counts = np.bincount(codes, minlength=len(self.domains_))
        k_max = self.max_prototypes if self.n_prototypes == "elbow" else self.n_prototypes
        module = self._network(encoder, int(len(self.domains_) * min(k_max, counts.max())),
                               generator)
        warmup_epochs, stage1_epochs = self._schedule()
        objective = TPSNetObjective(
            X,
            codes,
            params=self.get_params(deep=False),
            generator=generator,
            augment=build_augment(data.image_shape, self.augment),
            warmup_epochs=warmup_epochs,
            stage1_epochs=stage1_epochs,
            seed=int(generator.initial_seed() % (2**31 - 1)),
            min_steps=self._min_steps_per_epoch(),
        )
        net = self._train(module, objective, n_samples=len(codes), checkpoint=checkpoint)
        return NetworkFit(net, attributes={"n_classes_": objective.n_classes})

    def _domain_norm_parts(self, module):
        return [part for part in (module.encoder, module.phase_cnn) if part is not None]

    def _embed_batch(self, x, codes):
        return self.net_.module_.embed(x, codes)

    def _open_set_options(self):
        return {"n_prototypes": self.n_prototypes, "merge_rule": "eq9"}

    def _expected_failed_checks(self):
        """scikit-learn checks that cannot pass: they fit on plain feature vectors.

        TPSNet needs images (the phase prior is a 2-D Fourier transform, the encoder a
        CNN), and the checks feed 2-D arrays of arbitrary width with no ``image_shape``,
        which :meth:`fit` rejects with a clear error. The properties these checks test
        (pickling, idempotent and reproducible fits, float64 and read-only input, NaN
        rejection, ``n_features_in_``, order and batch invariance of ``transform``) are
        tested on images in ``tests/test_retriever_tpsnet.py``.
        """
        if self.image_shape is not None:
            return {}
        reason = "needs images; the check fits plain feature vectors without image_shape"
        return dict.fromkeys(_CHECKS_FITTING_FEATURE_VECTORS, reason)


def _is_builtin(text_tower):
    """Whether ``text_tower`` names the built-in tower; another string is an error."""
    if isinstance(text_tower, str):
        if text_tower != "builtin":
            raise ValueError(f"The 'text_tower' parameter must be 'builtin' or a text tower "
                             f"object; got {text_tower!r}.")
        return True
    return False
