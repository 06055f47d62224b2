"""What the retrievers do to their input before training: the pixel-range check,
per-domain standardisation, and the frozen-backbone path."""

from __future__ import annotations

import numpy as np

__all__ = ["check_pixel_range", "domain_statistics", "standardize", "training_inputs"]

# Rounding slack of the [0, 1] pixel-range check (e.g. images resized with bicubic filters).
PIXEL_TOLERANCE = 1e-3


def check_pixel_range(X, owner):
    """The built-in augmentation assumes pixels in [0, 1]: a ``ValueError`` naming
    ``owner`` (the estimator's name) instead of clipping."""
    if X.size == 0:
        return
    low, high = float(X.min()), float(X.max())
    if low < -PIXEL_TOLERANCE or high > 1 + PIXEL_TOLERANCE:
        # scikit-learn's wording for input a positive_only estimator refuses
        negative = f"Negative values in data passed to {owner}: " \
            if low < -PIXEL_TOLERANCE else ""
        raise ValueError(
            f"{negative}{owner} with augment='auto' expects images with values in "
            f"[0, 1] (its colour jitter, grey-scale and inversion clip to that range); X "
            f"holds values in [{low:.4g}, {high:.4g}]. Divide 8-bit images by 255, or "
            "pass augment=None or your own callable for other ranges."
        )


def domain_statistics(X, codes, n_domains):
    """Per-domain mean and scale of every feature of ``X``, as float32.

    Row ``k`` holds domain ``k``'s statistics; the last row, used for rows of a domain
    not seen in fit (code -1), the pooled ones: the union of the domains with equal
    weights, as :class:`~skucdr.nn.domain_norm.DomainBatchNorm` pools its statistics.
    A feature constant within a domain keeps its scale (1, as in ``StandardScaler``).

    Returns
    -------
    mean, scale : ndarray of shape (n_domains + 1, n_features), float32
    """
    mean = np.empty((n_domains + 1, X.shape[1]), dtype=np.float64)
    var = np.empty_like(mean)
    for k in range(n_domains):
        rows = X[codes == k].astype(np.float64)
        mean[k], var[k] = rows.mean(axis=0), rows.var(axis=0)
    mean[-1] = mean[:-1].mean(axis=0)
    var[-1] = var[:-1].mean(axis=0) + ((mean[:-1] - mean[-1]) ** 2).mean(axis=0)
    scale = np.sqrt(var)
    scale[scale < 10 * np.finfo(np.float32).eps] = 1.0
    return mean.astype(np.float32), scale.astype(np.float32)


def standardize(X, codes, mean, scale):
    """``X`` standardised with the statistics of each row's domain code (float32)."""
    codes = np.asarray(codes)
    return ((X - mean[codes]) / scale[codes]).astype(np.float32, copy=False)


def training_inputs(X, image_shape, *, encoder, encoder_weights, freeze, device, batch_size):
    """The rows to train on as a CPU tensor, the encoder to train, and the frozen
    backbone or None.

    ``X`` (already standardised where the retriever standardises) becomes a tensor,
    reshaped to images when ``image_shape`` is given; lazily decoded images stay lazy.
    With ``freeze``, the backbone embeds every image once: the rows to train on are its
    features, the encoder to train the identity on them
    (:class:`~skucdr.nn.encoders.FeatureInput`), and the backbone is returned to be put
    in front of the trained head after the fit.
    """
    import torch

    from ._lazy import LazyImages, LazyImageTensor
    from .nn.encoders import FeatureInput, build_encoder, encode_frozen

    n_features = X.shape[1]
    if isinstance(X, LazyImages):  # images decoded when a batch asks for them
        X = LazyImageTensor(X)
    else:
        # torch warns on read-only arrays (e.g. a float32 DataFrame's values); training
        # never writes to X, but a copy keeps that promise out of torch's hands
        X = torch.from_numpy(X if X.flags.writeable else X.copy())
        if image_shape is not None:
            X = X.view(-1, *image_shape)
    encoder = build_encoder(encoder, image_shape=image_shape, n_features=n_features,
                            encoder_weights=encoder_weights, example=X[:2])
    if not freeze:
        return X, encoder, None
    for parameter in encoder.parameters():
        parameter.requires_grad_(False)
    features = encode_frozen(encoder, X, device=device, batch_size=batch_size)
    return features, FeatureInput(encoder.feature_dim), encoder.eval()
