"""UniversalCDRRetriever: UEM (Wang, Du & Zhu, NeurIPS 2024)."""

from __future__ import annotations

import numbers

import numpy as np

from .._sklearn_compat import Interval, StrOptions, _fit_context
from ..cluster import MERGE_RULES
from ..nn.augment import build_augment
from ..nn.encoders import EmbeddingNet
from ..nn.uem_objective import UEMModule, UEMObjective
from ._base import BaseRetriever

__all__ = ["UniversalCDRRetriever"]

# What ``augment="auto"`` changes in ImageAugment's defaults for UEM: random convolutions
# (RandConv) on half the images; measured in docs/methods.md. TextPhaseRetriever keeps
# ImageAugment's defaults (RandConv measured there too, not adopted).
AUTO_IMAGE_AUGMENT = {"random_conv_p": 0.5}


class UniversalCDRRetriever(BaseRetriever):
    """Universal unsupervised cross-domain retrieval with UEM.

    UEM ("Unified, Enhanced and Matched" semantic feature learning; Wang, Du & Zhu,
    NeurIPS 2024) learns, from unlabeled domains whose category sets may differ
    (closed-set, partial, open-set), an embedding in which a query of one domain finds
    items of its category in another.

    **Stage 1, IDSE** (first ``max_epochs - round(stage2_fraction * max_epochs)`` epochs):
    per-domain memory banks (Eq. 5) and instance discrimination (Eq. 6); per-domain
    spherical k-means prototypes (k by the elbow rule, or fixed), the other domains'
    prototypes translated by the difference of bank means (Eq. 8), Hungarian matching
    and merging (Eq. 9) into one unified prototype set (:class:`~skucdr.PrototypeClusterer`),
    prototype NCE on it (Eq. 7) mixed in by the ramp ``alpha = 1/(1+exp(0.5E - e))``
    (Eq. 10) together with the semantic-enhanced loss (Eq. 11, Eq. 12).

    **Stage 2, CDSM** (``alignment="spda"``, ``matching="sn2m"``): a two-layer domain
    classifier trained adversarially (Eq. 13), a semantic-preserving regulariser against a
    frozen copy of the stage-1 network (Eq. 14), and switchable nearest-neighbour matching
    with the product distance ``(1 - cos) * L2`` (Eqs. 15-17), summed with weight 1
    (Eq. 18). By default neither is on, and stage 2 trains the merged-prototype NCE and
    the semantic-enhanced loss alone (see ``alignment`` and ``matching``).

    **Open set**: :meth:`detect_private` implements appendix B.1.

    Reconstructed choices (the paper is silent; each is measured in
    ``benchmarks/quality.py``; the figures below compare settings with one another and
    were measured before the default augmentation gained its Fourier amplitude mix,
    :class:`~skucdr.nn.augment.ImageAugment`; the current defaults' figures are in
    ``benchmarks/results/quality_uem.md``):

    - The instance term of stage 1 is by default *two-view* instance discrimination
      (``instance_negatives="views"``: NT-Xent between two augmented views, SimCLR /
      UCDIR style, temperature 0.2) rather than Eq. 6's single view against a memory
      bank. With a randomly initialised network and a few dozen epochs, Eq. 6 learned
      little on MNIST-M (cross-domain mAP@All 0.18 / 0.19 against 0.51 / 0.50 with two
      views, same 30-epoch schedule and seed; MNIST<->optdigits 0.47 / 0.46 against
      0.71 / 0.71). The banks are still kept (Eq. 5, mean of the two views): prototypes
      are clustered from them. ``"bank"`` (the paper's text, UCDIR) and ``"batch"`` (the
      printed in-batch denominator) give Eq. 6.
    - ``matching=None`` by default: SN2M (Eqs. 15-17) as reconstructed here pulls every
      embedding onto a prototype of the other domain and collapses the ranking inside
      clusters. In every run on the digit pairs it lowered mAP@All after stage 1:
      MNIST<->MNIST-M 0.54 -> 0.31 (SN2M alone 0.19, with fixed k=10 0.36, with the
      instance term kept in stage 2 0.44), MNIST<->optdigits 0.64 -> 0.57; the adversarial
      alignment with the semantic-preserving regulariser alone kept 0.54 / 0.53.
      ``matching="sn2m"`` turns the paper's matching on (benchmarked as an ablation row).
    - ``alignment=None`` by default: stage 2 keeps the prototype terms of stage 1 and
      drops the instance term; this beat the paper's adversarial alignment on both digit
      pairs (measurements under ``alignment``).
    - The domain classifier is ``Linear(n_components, 256) - ReLU - Linear(256, n_domains)``
      on the retrieval embedding, trained *with a gradient-reversal layer* (DANN, lambda=1),
      so one optimizer step serves the bi-level game; for more than two domains the
      binary cross-entropy of Eq. 13 becomes a multi-class cross-entropy.
    - Prototypes are refreshed at the start of every epoch once ``alpha > 0.01`` (and
      every stage-2 epoch) by re-running spherical k-means on the banks. The elbow
      estimate of k (per domain) is redone every ``elbow_every`` refreshes, not every
      epoch: the scan over k costs far more than one k-means. Assignments ``c_i`` are
      the nearest unified prototype in the row's own frame.
    - The SN2M bank negatives are the other domain's memory bank (not a second forward).
    - Small-data training: Adam instead of SGD (no pretrained backbone here), a
      cosine schedule, and a memory-bank momentum ``bank_momentum`` (paper: 0.99; see the
      parameter) with re-normalisation (NPID).
    - Losses are batch means, not sums.

    Parameters
    ----------
    n_components : int, default=128
        Width of the embedding.
    max_epochs : int, default=90
        Total epochs of both stages (60 + 30 by default). With the two-view instance
        term, stage 1 keeps improving to about its 35th epoch: traced on
        MNIST<->MNIST-M (seed 0, one thread), cross-domain mAP@All 0.50 at epoch 20 and
        0.64 at epoch 36, 0.64 / 0.63 after stage 2, against 0.55 / 0.54 with 30 epochs
        (20 + 10); on MNIST<->optdigits 0.67 / 0.68 against 0.64 / 0.65. Spending the
        same time on a twice as wide CNN for 30 epochs gave 0.61 / 0.60 on
        MNIST<->MNIST-M. 60 -> 90 epochs (benchmark digit domains, closed set, 2 seeds,
        with the amplitude-mix augmentation, before ``domain_norm``): MNIST<->optdigits
        0.815 / 0.814 instead of 0.774 / 0.782, MNIST<->MNIST-M 0.646 / 0.692 instead of
        0.646 / 0.671; no direction and seed lost more than 0.001 (partial and open set:
        10 of 16 figures rose, five fell by 0.02-0.04; docs/methods.md). A default fit
        costs 1.5x the 60-epoch one (354-421 s against 229-252 s in those runs, one
        thread each, two side by side); on two idle CPU cores a default fit on
        MNIST<->MNIST-M (5,000 images) took 234 s (163 s at 60 epochs, an earlier run),
        and 175 s with ``domain_norm`` on another machine (where a 15-epoch fit took
        1.06x as long with ``domain_norm`` as without, in the same run).
    batch_size : int, default=32
        Rows *per domain* in every step (the paper: 64). Smaller batches give more
        optimiser steps in the same epochs. Measured on the digit domains
        (``benchmarks/quality.py``, closed set, cross-domain mAP@All, seeds 0 / 1):
        MNIST<->MNIST-M 0.804 / 0.749 and 0.802 / 0.746 with 32 rows, against
        0.769 / 0.711 and 0.756 / 0.702 with 64 and 0.622 / 0.579 with 256 (seed 0);
        MNIST<->optdigits 0.892 / 0.893 and 0.856 / 0.829 against 0.862 / 0.856 and
        0.869 / 0.881 (partial and open set, and the held-out pair: docs/methods.md).
        Cost: 1.06x the 64-row fit on two idle cores (229 s against 215 s on
        MNIST<->MNIST-M, ``benchmarks/fit_time.py``, same run), 1.4x at one thread
        each with two fits side by side (317 s against 225 s, mean of the quality
        runs); 32 rows for 70 epochs gave 0.790 / 0.738 on MNIST<->MNIST-M (seed 0) at
        about 1.15x.
    lr : float, default=1e-3
        Adam learning rate, cosine-annealed to 0. Measured (closed set, 2 seeds): 1.5e-3
        and 2e-3 gain 0.03 mAP@All on MNIST<->MNIST-M and lose 0.03-0.06 on
        MNIST<->optdigits (``docs/methods.md``).
    weight_decay : float, default=1e-5
        Adam weight decay.
    tau : float, default=0.07
        Temperature of every contrastive term (the paper: 0.07).
    bank_momentum : float, default=0.5
        Memory-bank momentum ``beta`` of Eq. 5. The paper uses 0.99 over 100+ epochs;
        with a few dozen epochs such a bank barely moves from its random initial
        features, so the default is NPID's 0.5 (measured in the benchmark).
    instance_negatives : {"bank", "batch", "views"}, default="views"
        Instance term of stage 1. ``"bank"``: Eq. 6 against the whole same-domain bank
        (the paper's text, UCDIR); ``"batch"``: the batch's own bank entries (the printed
        denominator); ``"views"``: two augmented views of every image, each the other's
        positive, the batch's other views the negatives (NT-Xent as in SimCLR, at
        temperature ``view_tau``; the bank then stores the mean of the two views, and the
        prototype terms average over both). Measured closed-set, seed 0, 30 epochs
        (``benchmarks/results/archive/quality_uem_30_epochs.md``): "views" 0.71 / 0.71 on
        MNIST<->optdigits and 0.51 / 0.50 on MNIST<->MNIST-M, "bank" 0.47 / 0.46 and
        0.18 / 0.19; with the earlier 15-epoch schedule (2 seeds) "batch" gave
        0.53 / 0.53 and 0.16 / 0.19.
    view_tau : float, default=0.2
        Temperature of the two-view term (``instance_negatives="views"`` only; MoCo v2's
        and UCDIR's 0.2).
    stage2_instance : bool, default=False
        Keep the stage-1 instance term during stage 2 (not in the paper; measured on
        MNIST<->MNIST-M: 0.50 with it, 0.54 without, alignment "spda" and no matching).
        Also applies when stage 2 has nothing to align or match (see ``alignment``).
    sn2m_instance_negatives : bool, default=False
        Whether all instances of the other domain are negatives of SN2M (Eq. 17 as
        printed), or only its prototypes (default). As printed, every same-category
        instance of the other domain is pushed away from the query with weight growing
        with its similarity, which undoes the alignment: on MNIST->optdigits (15 epochs)
        mAP@All fell from 0.58 to 0.45 (see ``benchmarks/results``).
    n_prototypes : "elbow" or int, default="elbow"
        Prototypes per domain: chosen by the elbow rule (UEM) or fixed.
    max_prototypes : int, default=50
        Largest k scanned by the elbow rule.
    elbow_every : int, default=5
        Re-estimate k by the elbow rule every this many prototype refreshes (k-means
        itself runs at every refresh).
    merge_prototypes : bool, default=True
        Merge matched prototypes across domains (Eq. 9); False keeps every domain's
        prototypes separate (the "w/o merging" ablation).
    merge_rule : {"eq9", "mutual"}, default="eq9"
        When a Hungarian-matched pair of prototypes merges, at every prototype refresh and
        in :meth:`detect_private`: Eq. 9's threshold (the paper), or Eq. 9 and mutual
        nearest neighbours (see :func:`skucdr.cluster.merge_prototypes`). When the gallery
        lacks some of the query's categories, its clusters split and Eq. 9 merges the
        spare halves with private query clusters; training then pulls gallery items into
        those. Measured on the digit domains (mean of 2 seeds), "mutual" raised open-set
        private-query detection accuracy in all six directions (+0.01 to +0.07),
        moved partial-set mAP@All by -0.046 to +0.035 and closed-set by -0.007 to
        +0.008, and lost closed-set mAP on the held-out pair (-0.013 / -0.021;
        ``docs/methods.md``): worth trying when queries may have no match in the
        gallery; the default stays the paper's.
    semantic_enhanced : bool, default=True
        Use the semantic-enhanced loss (Eq. 11).
    alignment : {"spda", "dann"} or None, default=None
        Stage-2 alignment: adversarial loss plus the semantic-preserving regulariser
        ("spda", the paper), adversarial loss alone ("dann", the ablation), or none. With
        none (and no ``matching``) stage 2 keeps IDSE's semantic terms, the
        merged-prototype NCE and the semantic-enhanced loss at full weight, and drops the
        instance term (kept with ``stage2_instance=True``): the instance term spreads a
        category apart, the prototype terms pull it together, and mAP@All rewards the
        latter. Measured closed-set on the benchmark's digit domains (mean of 2 seeds):
        MNIST<->optdigits 0.78 / 0.79 against 0.67 / 0.68 with "spda",
        MNIST<->MNIST-M 0.57 / 0.60 against 0.52 / 0.51 (partial: 0.63 / 0.67 against
        0.49 / 0.46 and 0.45 / 0.60 against 0.33 / 0.46); on a scratch copy of the
        domains 0.75 / 0.78 and 0.73 / 0.74 against 0.67 / 0.68 and 0.64 / 0.63. Open-set
        MNIST<->optdigits, 2 seeds: "spda" 0.63 / 0.69; none with the instance term
        0.62 / 0.67; "dann" (seed 0) 0.57 / 0.69. Hence the default: the paper's
        adversarial alignment, as reconstructed, did not beat its own stage 1 here.
    matching : {"sn2m", "nn"} or None, default=None
        Stage-2 matching: switchable NN matching (the paper), plain nearest-neighbour
        positives (UCDIR-style ablation), or none (default; see above for why).
    stage2_fraction : float, default=1/3
        Fraction of ``max_epochs`` spent in stage 2 (the paper: 50 of 150).
    encoder : {"auto", "cnn", "mlp", "resnet18", "resnet50"} or torch.nn.Module, default="auto"
        Backbone: a small CNN for images, an MLP for feature vectors, a torchvision
        ResNet (needs torchvision; weights from ``encoder_weights``), or your own module.
    encoder_weights : str or path, default=None
        Local state-dict file for the torchvision ResNets (nothing is downloaded). The
        ResNets see ImageNet-normalised pixels; grey images are repeated into RGB, other
        channel counts get the first convolution's RGB filters repeated cyclically
        (:func:`~skucdr.nn.encoders.adapt_first_conv_weight`).
    domain_norm : bool, default=True
        Domain-specific batch normalisation: every batch-norm layer of the encoder keeps
        running statistics per domain and normalises each domain's rows with its own,
        with shared scale and shift
        (:class:`~skucdr.nn.domain_norm.DomainBatchNorm`; DSBN, Chang et al., CVPR
        2019). Each layer then sees every domain centred and scaled alike, instead of
        passing the domains' offsets in colour, background and sharpness on to the next
        layer. Embeddings depend on the domain: pass ``sample_domain`` to
        :meth:`transform`, :meth:`kneighbors`, :meth:`detect_private` and
        :meth:`score`; rows of a domain not seen in fit (or without ``sample_domain``)
        are normalised with the pooled statistics of the fitted domains. Ignored for a
        single domain. Measured on the digit domains (``benchmarks/quality.py``, closed
        set, seed 0, cross-domain mAP@All): MNIST<->MNIST-M 0.751 / 0.713 against
        0.665 / 0.704 without, MNIST<->optdigits 0.854 / 0.826 against 0.816 / 0.813,
        and on the held-out optdigits<->MNIST-M 0.644 / 0.608 against 0.551 / 0.539
        (2-seed means in all settings: docs/methods.md). Per-domain statistics in the
        projection head as well gave 0.764 / 0.723 on MNIST<->MNIST-M but
        0.793 / 0.811 on MNIST<->optdigits, so the head keeps one set of statistics
        (its features carry the categories, whose proportions may differ between
        domains). With feature vectors (the MLP encoder;
        ``benchmarks/feature_vectors.py``, mean of 2 seeds): HOG features
        0.701 / 0.708 on MNIST<->optdigits and 0.404 / 0.457 on MNIST<->MNIST-M,
        against 0.685 / 0.693 and 0.371 / 0.440 without.
    standardize_features : bool, default=True
        With feature vectors and the built-in MLP encoder (``encoder="auto"`` or
        ``"mlp"`` on 2-D input without ``image_shape``): standardise every input feature
        per domain (its mean and standard deviation over the domain's fitted rows,
        ``input_mean_`` and ``input_scale_``) before augmentation and before every
        embedding, so that each domain reaches the encoder centred and scaled alike
        (the feature-space counterpart of ``domain_norm``; with one domain, plain
        standardisation). Rows of a domain not seen in fit, or given without
        ``sample_domain``, use the pooled statistics of the fitted domains. Ignored
        for images and for your own ``encoder`` module, whose inputs are passed as
        they are. Measured (``benchmarks/feature_vectors.py``, closed set,
        cross-domain mAP@All, mean of 2 seeds; without it in brackets): pooled
        features of a CNN trained with labels on MNIST alone 0.850 / 0.870
        (0.806 / 0.797) on MNIST<->optdigits and 0.284 / 0.384 (0.273 / 0.265) on
        MNIST<->MNIST-M; of one trained on optdigits alone 0.683 / 0.647
        (0.572 / 0.555) and 0.233 / 0.290 (0.200 / 0.236); HOG features
        0.500 / 0.537 (0.396 / 0.464) on MNIST<->MNIST-M, but 0.704 / 0.714
        (0.723 / 0.735) on MNIST<->optdigits, where
        hand-made features lose a little with it (10 of 12 directions gain). At
        ``batch_size=64`` (mean of 2 seeds) 9 of 12 gained, and HOG MNIST<->optdigits
        lost more: 0.586 / 0.600 (0.700 / 0.708); centring each domain alone,
        without per-feature scaling, lost as much there (0.595 / 0.627, seed 0).
    augment : "auto", callable or None, default="auto"
        Training augmentation; a callable ``f(batch, generator) -> batch``. ``"auto"``
        is, for images, :class:`~skucdr.nn.augment.ImageAugment` with random
        convolutions on half the images (``ImageAugment(random_conv_p=0.5)``: crop,
        rotation, colour jitter, grey-scale, inversion, a random filter bank blended
        into the image (RandConv, Xu et al., ICLR 2021: local texture and colour
        randomised, shapes kept), and the Fourier amplitude of another image of the
        batch mixed in, up to a complete exchange: a style exchange across domains),
        which needs pixels in ``[0, 1]`` (other ranges raise a ``ValueError``; ``None``
        or a callable accept any), and :class:`~skucdr.nn.augment.FeatureAugment` for
        feature vectors. RandConv measured (``benchmarks/quality.py``, closed set,
        cross-domain mAP@All, mean of 2 seeds; without it in brackets):
        MNIST<->MNIST-M 0.856 / 0.821 (0.803 / 0.747), MNIST<->optdigits
        0.874 / 0.883 (0.874 / 0.861), the held-out optdigits<->MNIST-M
        0.728 / 0.679 (0.654 / 0.633). It pays where domains differ in colour and
        texture; where they differ in stroke shape and resolution it can cost: partial
        and open-set MNIST<->optdigits lose 0.02-0.06, and the outline domain of
        ``benchmarks/outline_domain.py`` 0.018-0.059 (``docs/methods.md``). Pass
        ``augment=ImageAugment()`` for the augmentation without it (the default until
        2026-12-06).
    image_shape : tuple (C, H, W), default=None
        Shape of one image when ``X`` holds flattened images.
    index : str, default="Flat"
        faiss index of the gallery: exact ``"Flat"`` or a factory string such as
        ``"IVF256,Flat"``, ``"HNSW32"``, ``"IVF1024,PQ16"``.
    index_params : dict, default=None
        Search knobs of the index (``nprobe``, ``ef_search``).
    device : str, default="auto"
        ``"cpu"``, ``"cuda"`` (or ``"cuda:N"``), or ``"auto"``: the GPU when torch sees
        one. A model fitted on a GPU loads with joblib on a machine without one, on the
        CPU (with a ``UserWarning``).
    random_state : int, RandomState instance or None, default=None
        Seeds weights, batches, augmentation and k-means; results are reproducible on CPU.
    verbose : int, default=0
        When > 0: a progress bar and the per-epoch losses during fit, and a progress bar
        while embedding more than one inference batch (transform, index_gallery).

    Attributes
    ----------
    net_ : skorch.NeuralNet
        The trained net (``net_.module_`` holds the encoder and domain classifier).
    history_ : skorch.History
        Per-epoch losses (``loss_ince``, ``loss_pnce``, ``loss_sel``, ``loss_dal``,
        ``loss_spr``, ``loss_sn2m``), ``alpha``, ``stage`` and ``n_prototypes``.
    domains_ : ndarray
        Domain labels seen in fit, in order of first appearance.
    gallery_embedding_ : ndarray of shape (n_gallery, n_components)
        Embeddings searched by :meth:`kneighbors`.
    gallery_domain_ : ndarray of shape (n_gallery,)
        Domain of every gallery row.
    image_shape_ : tuple or None
        Shape of one image, None for feature vectors.
    n_features_in_ : int
        Width of a flat input row.
    input_mean_ : ndarray of shape (n_domains + 1, n_features_in_)
        Per-domain mean of every input feature (row ``k``: ``domains_[k]``; last row:
        the pooled statistics used for unseen domains). Only when
        ``standardize_features`` applies (feature vectors, built-in MLP encoder).
    input_scale_ : ndarray of shape (n_domains + 1, n_features_in_)
        Per-domain standard deviation of every input feature (1 where a feature is
        constant), laid out as ``input_mean_``.

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

    _parameter_constraints: dict = {
        **BaseRetriever._shared_parameter_constraints,
        "tau": [Interval(numbers.Real, 0, None, closed="neither")],
        "bank_momentum": [Interval(numbers.Real, 0, 1, closed="left")],
        "instance_negatives": [StrOptions({"bank", "batch", "views"})],
        "stage2_instance": ["boolean"],
        "view_tau": [Interval(numbers.Real, 0, None, closed="neither")],
        "sn2m_instance_negatives": ["boolean"],
        "n_prototypes": [StrOptions({"elbow"}), Interval(numbers.Integral, 1, None, closed="left")],
        "max_prototypes": [Interval(numbers.Integral, 2, None, closed="left")],
        "elbow_every": [Interval(numbers.Integral, 1, None, closed="left")],
        "merge_prototypes": ["boolean"],
        "merge_rule": [StrOptions(set(MERGE_RULES))],
        "semantic_enhanced": ["boolean"],
        "alignment": [StrOptions({"spda", "dann"}), None],
        "matching": [StrOptions({"sn2m", "nn"}), None],
        "stage2_fraction": [Interval(numbers.Real, 0, 1, closed="left")],
        "standardize_features": ["boolean"],
    }

    def __init__(
        self,
        n_components=128,
        *,
        max_epochs=90,
        batch_size=32,
        lr=1e-3,
        weight_decay=1e-5,
        tau=0.07,
        bank_momentum=0.5,
        instance_negatives="views",
        view_tau=0.2,
        stage2_instance=False,
        sn2m_instance_negatives=False,
        n_prototypes="elbow",
        max_prototypes=50,
        elbow_every=5,
        merge_prototypes=True,
        merge_rule="eq9",
        semantic_enhanced=True,
        alignment=None,
        matching=None,
        stage2_fraction=1 / 3,
        encoder="auto",
        encoder_weights=None,
        domain_norm=True,
        standardize_features=True,
        augment="auto",
        image_shape=None,
        index="Flat",
        index_params=None,
        device="auto",
        random_state=None,
        verbose=0,
    ):
        self.n_components = n_components
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.tau = tau
        self.bank_momentum = bank_momentum
        self.instance_negatives = instance_negatives
        self.view_tau = view_tau
        self.stage2_instance = stage2_instance
        self.sn2m_instance_negatives = sn2m_instance_negatives
        self.n_prototypes = n_prototypes
        self.max_prototypes = max_prototypes
        self.elbow_every = elbow_every
        self.merge_prototypes = merge_prototypes
        self.merge_rule = merge_rule
        self.semantic_enhanced = semantic_enhanced
        self.alignment = alignment
        self.matching = matching
        self.stage2_fraction = stage2_fraction
        self.encoder = encoder
        self.encoder_weights = encoder_weights
        self.domain_norm = domain_norm
        self.standardize_features = standardize_features
        self.augment = augment
        self.image_shape = image_shape
        self.index = index
        self.index_params = index_params
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None, *, sample_domain=None):
        """Learn the embedding from unlabeled domains (see :meth:`BaseRetriever.fit`).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, C, H, W), or Mapping
            Rows of every domain, or a mapping ``{domain: X_domain}``.
        y : None
            Ignored; labels never influence training.
        sample_domain : array-like of shape (n_samples,), default=None
            Domain (name or int) of every row; None means one domain.

        Returns
        -------
        self : object
            The fitted retriever.
        """
        self._fit(X, sample_domain)
        return self

    def _fit_network(self, data, codes, generator):
        X, encoder = self._training_inputs(data, codes)
        embedder = EmbeddingNet(encoder, self.n_components)
        module = UEMModule(embedder, self.n_components, len(self.domains_))
        stage2_epochs = int(round(self.stage2_fraction * self.max_epochs))
        objective = UEMObjective(
            X,
            codes,
            batch_size=self.batch_size,
            generator=generator,
            augment=build_augment(data.image_shape, self.augment, **AUTO_IMAGE_AUGMENT),
            tau=self.tau,
            bank_momentum=self.bank_momentum,
            instance_negatives=self.instance_negatives,
            stage1_epochs=self.max_epochs - stage2_epochs,
            n_prototypes=self.n_prototypes,
            max_prototypes=min(self.max_prototypes, max(2, np.bincount(codes).min() // 2)),
            merge_prototypes=self.merge_prototypes,
            merge_rule=self.merge_rule,
            semantic_enhanced=self.semantic_enhanced,
            alignment=self.alignment,
            matching=self.matching,
            seed=int(generator.initial_seed() % (2**31 - 1)),
            elbow_every=self.elbow_every,
            sn2m_instance_negatives=self.sn2m_instance_negatives,
            view_tau=self.view_tau,
            stage2_instance=self.stage2_instance,
        )
        return self._train(module, objective, n_samples=len(codes))

    def _domain_norm_parts(self, module):
        return [module.embedder.encoder]

    def _standardizes_inputs(self, image_shape):
        return (self.standardize_features and image_shape is None
                and isinstance(self.encoder, str) and self.encoder in ("auto", "mlp"))

    def _embed_batch(self, x, codes):
        return self.net_.module_.embedder(x)

    def _open_set_options(self):
        return {"n_prototypes": self.n_prototypes, "merge_rule": self.merge_rule}
