"""UniversalCDRRetriever: UEM (Wang, Du & Zhu, NeurIPS 2024)."""

from __future__ import annotations

import numbers

import numpy as np

from .._base import BaseRetriever, NetworkFit
from .._sklearn_compat import Interval, StrOptions
from ..cluster import MERGE_RULES
from ..nn.augment import build_augment
from ..nn.encoders import EmbeddingNet, build_encoder
from .network import UEMModule
from .objective import UEMObjective

__all__ = ["UniversalCDRRetriever"]

#: What ``augment="auto"`` changes in ImageAugment's defaults for UEM: random
#: convolutions (RandConv) on half the images (docs/methods.md, "Augmentation").
AUTO_IMAGE_AUGMENT = {"random_conv_p": 0.5}
#: Share of ``max_epochs`` spent in stage 2 (the paper: 50 of 150).
STAGE2_FRACTION = 1 / 3


class UniversalCDRRetriever(BaseRetriever):
    """Universal unsupervised cross-domain retrieval with UEM.

    UEM ("Unified, Enhanced and Matched" semantic feature learning; Wang, Du & Zhu,
    NeurIPS 2024) learns, from unlabeled domains whose category sets may differ
    (closed-set, partial, open-set), an embedding in which a query of one domain finds
    items of its category in another.

    **Stage 1, IDSE** (the first two thirds of ``max_epochs``): per-domain memory banks
    (Eq. 5) and instance discrimination, here between two augmented views of every image
    (in place of Eq. 6's memory-bank form); per-domain spherical k-means prototypes (k by
    the elbow rule, or fixed), the other domains' prototypes translated by the
    difference of bank means (Eq. 8), Hungarian matching and merging (Eq. 9) into one
    unified prototype set (:class:`~skucdr.PrototypeClusterer`), prototype NCE on it
    (Eq. 7) mixed in by the ramp ``alpha = 1/(1+exp(0.5E - e))`` (Eq. 10) together with
    the semantic-enhanced loss (Eq. 11, Eq. 12).

    **Stage 2, CDSM** (the last third): with ``alignment="spda"``, a domain classifier
    trained adversarially (Eq. 13) and a semantic-preserving regulariser against a
    frozen copy of the stage-1 network (Eq. 14); with ``matching="sn2m"``, switchable
    nearest-neighbour matching with the product distance ``(1 - cos) * L2``
    (Eqs. 15-17); summed with weight 1 (Eq. 18). By default neither is on, and stage 2
    trains the merged-prototype NCE and the semantic-enhanced loss alone.

    **Open set**: :meth:`detect_private` implements appendix B.1.

    Every choice the paper leaves open, and the measurements behind each default, are
    in :doc:`/methods` (``docs/methods.md``); the equations map to code in its UEM table.

    Parameters
    ----------
    n_components : int, default=128
        Width of the embedding. Wider helps when there are many categories.
    max_epochs : "auto" or int, default="auto"
        Total epochs of both stages (two thirds stage 1). ``"auto"``: 90 epochs of at
        least 50 optimiser steps, so that a small data set revisits its rows within an
        epoch; an int: that many passes over the data (over the largest domain). Lower
        it for a quick look; raise it when the loss history still falls. See
        :ref:`uem-schedule`.
    batch_size : int, default=32
        Rows *per domain* in every step (the paper: 64). Smaller batches give more
        optimiser steps per epoch. See :ref:`uem-batch-size`.
    lr : float, default=1e-3
        Adam learning rate, cosine-annealed to 0 over the fit. See :ref:`uem-lr`.
    tau : float, default=0.07
        Temperature of the prototype terms and SN2M (the paper: 0.07).
    n_prototypes : "elbow" or int, default="elbow"
        Prototypes per domain: the elbow rule (the paper) or a fixed k. A fixed k near
        the number of categories, when known, spares the elbow scan.
    max_prototypes : int, default=50
        Largest k the elbow rule scans. Raise it for data sets with more categories.
    merge_prototypes : bool, default=True
        Merge matched prototypes across domains (Eq. 9); False is the paper's
        "w/o merging" ablation.
    merge_rule : {"eq9", "mutual"}, default="eq9"
        When a matched pair of prototypes merges, in training and in
        :meth:`detect_private`: Eq. 9's threshold, or Eq. 9 and mutual nearest
        neighbours. A trade-off: ``"mutual"`` detects queries without a match in the
        gallery better and can cost closed-set mAP. See :ref:`uem-merge-rule`.
    semantic_enhanced : bool, default=True
        Use the semantic-enhanced loss (Eq. 11); False is the paper's ablation.
    alignment : {"spda", "dann"} or None, default=None
        Stage-2 alignment: adversarial loss plus the semantic-preserving regulariser
        (``"spda"``, the paper), the adversarial loss alone (``"dann"``, its ablation),
        or none. See :ref:`uem-stage2`.
    matching : {"sn2m", "nn"} or None, default=None
        Stage-2 matching: switchable nearest-neighbour matching (``"sn2m"``, the paper),
        plain nearest-neighbour positives (``"nn"``, the UCDIR-style ablation), or none.
        See :ref:`uem-stage2`.
    encoder : {"auto", "cnn", "mlp", "resnet18", "resnet50", "efficientnet_lite0"}, \
torch.nn.Module, default="auto"
        Backbone: a small CNN for images and an MLP for feature vectors (``"auto"``), a
        torchvision ResNet (weights from ``encoder_weights``), EfficientNet-Lite0 with
        its ImageNet weights (extra ``pretrained``), or your own module. Feature vectors
        on the built-in MLP are standardised per domain (:ref:`feature-standardisation`).
    freeze_encoder : bool, default=False
        Keep a pretrained backbone as it is: it embeds every image once at ``fit``, its
        features are cached and only the projection head trains (``transform`` and
        ``kneighbors`` run backbone and head on images). The choice on a CPU; False
        fine-tunes the whole network, the choice on a GPU. See :doc:`/backbones`.
    encoder_weights : str or path, default=None
        Local state-dict file for the torchvision ResNets (nothing is downloaded).
    domain_norm : bool, default=True
        Batch-norm layers of the encoder keep running statistics per domain (DSBN).
        Embeddings then depend on the domain: pass ``sample_domain`` at inference. False
        when the domains differ little. See :ref:`domain-norm`.
    augment : "auto", callable or None, default="auto"
        Training augmentation ``f(batch, generator) -> batch``. ``"auto"``: for images,
        :class:`~skucdr.nn.augment.ImageAugment` with random convolutions on half the
        images (pixels must lie in ``[0, 1]``); for feature vectors,
        :class:`~skucdr.nn.augment.FeatureAugment`. ``augment=ImageAugment()`` drops the
        random convolutions, which can cost where domains differ in shape rather than
        texture. See :ref:`augmentation`.
    image_shape : tuple (C, H, W), default=None
        Shape of one image when ``X`` holds flattened images.
    index : str, default="Flat"
        faiss index of the gallery: exact ``"Flat"``, ``"auto"`` (exact below 100,000
        rows, inverted lists above) or a factory string such as ``"IVF256,Flat"``,
        ``"HNSW32"``, ``"IVF1024,PQ16"`` for large galleries. See :ref:`scale`.
    index_params : dict, default=None
        Search knobs of the index (``nprobe``, ``ef_search``).
    device : str, default="auto"
        ``"cpu"``, ``"cuda"`` (or ``"cuda:N"``), or ``"auto"``: the GPU when torch sees
        one. A model fitted on a GPU loads with joblib on a machine without one.
    random_state : int, RandomState instance or None, default=None
        Seeds weights, batches, augmentation and k-means; CPU fits are reproducible.
    checkpoint_dir : str, path or None, default=None
        A directory where the fit saves its full training state after every epoch; a
        fit with the same configuration and data resumes from it. See :ref:`checkpoints`.
    verbose : int, default=0
        When > 0: a progress bar and the per-epoch losses during fit, and a progress bar
        while embedding more than one inference batch.

    Attributes
    ----------
    net_ : skorch.NeuralNet
        The trained net (``net_.module_`` holds the encoder and domain classifier).
    history_ : skorch.History
        Per-epoch losses (``loss_ince``, ``loss_pnce``, ``loss_sel``, ``loss_dal``,
        ``loss_spr``, ``loss_sn2m``), ``alpha``, ``stage`` and ``n_prototypes``.
    domains_ : ndarray
        Domain labels seen in fit, in order of first appearance.
    gallery_ : skucdr._gallery.Gallery
        The gallery :meth:`kneighbors` searches: its rows, their domains and the faiss
        indexes built on them (set by :meth:`fit` and :meth:`index_gallery`).
    gallery_embedding_ : ndarray of shape (n_gallery, n_components)
        Embeddings searched by :meth:`kneighbors` (``gallery_.embedding``).
    gallery_domain_ : ndarray of shape (n_gallery,)
        Domain of every gallery row (``gallery_.domain``).
    image_shape_ : tuple or None
        Shape of one image, None for feature vectors.
    n_features_in_ : int
        Width of a flat input row.
    input_mean_ : ndarray of shape (n_domains + 1, n_features)
        Per-domain mean of every input feature (row ``k``: ``domains_[k]``; last row:
        the pooled statistics used for unseen domains). Only for feature vectors on the
        built-in MLP encoder.
    input_scale_ : ndarray of shape (n_domains + 1, n_features)
        Per-domain standard deviation of every input feature (1 where a feature is
        constant), laid out as ``input_mean_``.

    See Also
    --------
    TextPhaseRetriever : TPSNet, with text and phase priors (images only).

    Examples
    --------
    >>> from skucdr import UniversalCDRRetriever
    >>> from skucdr.datasets import load_digit_domains
    >>> data = load_digit_domains(("mnist", "optdigits"))          # doctest: +SKIP
    >>> retriever = UniversalCDRRetriever(random_state=0)           # doctest: +SKIP
    >>> retriever.fit({name: X for name, (X, y) in data.items()})   # doctest: +SKIP
    >>> dist, idx = retriever.kneighbors(data["optdigits"][0][:5],
    ...                                  sample_domain=["optdigits"] * 5)  # doctest: +SKIP
    """

    _auto_epochs = 90

    _parameter_constraints: dict = {
        **BaseRetriever._shared_parameter_constraints,
        "tau": [Interval(numbers.Real, 0, None, closed="neither")],
        "n_prototypes": [StrOptions({"elbow"}), Interval(numbers.Integral, 1, None, closed="left")],
        "max_prototypes": [Interval(numbers.Integral, 2, None, closed="left")],
        "merge_prototypes": ["boolean"],
        "merge_rule": [StrOptions(set(MERGE_RULES))],
        "semantic_enhanced": ["boolean"],
        "alignment": [StrOptions({"spda", "dann"}), None],
        "matching": [StrOptions({"sn2m", "nn"}), None],
        "freeze_encoder": ["boolean"],
    }

    def __init__(
        self,
        n_components=128,
        *,
        max_epochs="auto",
        batch_size=32,
        lr=1e-3,
        tau=0.07,
        n_prototypes="elbow",
        max_prototypes=50,
        merge_prototypes=True,
        merge_rule="eq9",
        semantic_enhanced=True,
        alignment=None,
        matching=None,
        encoder="auto",
        freeze_encoder=False,
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
        self.tau = tau
        self.n_prototypes = n_prototypes
        self.max_prototypes = max_prototypes
        self.merge_prototypes = merge_prototypes
        self.merge_rule = merge_rule
        self.semantic_enhanced = semantic_enhanced
        self.alignment = alignment
        self.matching = matching
        self.encoder = encoder
        self.freeze_encoder = freeze_encoder
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

    def _fit_network(self, data, codes, generator, checkpoint):
        X, encoder, backbone = self._training_inputs(data, codes)
        module = self._network(encoder)
        n_epochs = self._n_epochs()
        stage2_epochs = int(round(STAGE2_FRACTION * n_epochs))
        # a frozen backbone's cached features are augmented as feature vectors
        augment_shape = data.image_shape if backbone is None else None
        objective = UEMObjective(
            X,
            codes,
            params=self.get_params(deep=False),
            generator=generator,
            augment=build_augment(augment_shape, self.augment, **AUTO_IMAGE_AUGMENT),
            stage1_epochs=n_epochs - stage2_epochs,
            min_steps=self._min_steps_per_epoch(),
            max_prototypes=min(self.max_prototypes, max(2, np.bincount(codes).min() // 2)),
            seed=int(generator.initial_seed() % (2**31 - 1)),
        )
        net = self._train(module, objective, n_samples=len(codes), checkpoint=checkpoint)
        if backbone is None:
            return NetworkFit(net)
        # the fitted rows' embeddings from the cached features (no second backbone
        # pass), then the trained head embeds the backbone's features
        train_embedding = self._embed_cached(net.module_.embedder, X)
        net.module_.embedder.encoder = backbone.to(net.device)
        return NetworkFit(net, train_embedding=train_embedding)

    def _network(self, encoder):
        return UEMModule(EmbeddingNet(encoder, self.n_components), self.n_components,
                         len(self.domains_))

    def _freezes_encoder(self):
        return self.freeze_encoder

    def _rebuild_module(self, architecture):
        encoder = build_encoder(self.encoder, image_shape=self.image_shape_,
                                n_features=self.n_features_in_)
        module = self._network(encoder)
        # a frozen backbone joins after training, with its own batch norm
        if not self.freeze_encoder:
            self._convert_domain_norm(module)
        return module

    def _embed_cached(self, embedder, features):
        """Embeddings of cached backbone features through the trained head (eval mode)."""
        import torch

        embedder.eval()
        step = self._inference_batch_size()
        device = next(embedder.parameters()).device
        with torch.no_grad():
            return np.concatenate([
                embedder(features[start:start + step].to(device)).cpu().numpy()
                for start in range(0, len(features), step)])

    def _domain_norm_parts(self, module):
        return [module.embedder.encoder]

    def _standardizes_inputs(self, image_shape):
        return (image_shape is None and isinstance(self.encoder, str)
                and self.encoder in ("auto", "mlp"))

    def _embed_batch(self, x, codes):
        return self.net_.module_.embedder(x)

    def _open_set_options(self):
        return {"n_prototypes": self.n_prototypes, "merge_rule": self.merge_rule}
