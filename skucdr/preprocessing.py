"""Image preprocessing: the phase prior of TPSNet.

The *phase-only image* of an image keeps the phase of its 2-D Fourier transform and
discards the amplitude spectrum (replaced by a constant), then transforms back. Edges and
object layout live mostly in the phase, while colour, contrast and texture statistics --
what changes most between domains such as photos, clip art and sketches -- live mostly in
the amplitude. TPSNet feeds this image to a small CNN as a domain-robust prior.

:func:`phase_only_images` is the NumPy function; :class:`PhasePriorExtractor` wraps it as a
scikit-learn transformer; :func:`skucdr.nn.phase.phase_only` is the PyTorch twin used on
augmented batches during training.
"""

from __future__ import annotations

from collections.abc import Mapping
from numbers import Real

import numpy as np
from scipy.sparse import issparse
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from ._domains import check_domain_input, unpack_domains
from ._sklearn_compat import Interval, StrOptions, _fit_context, check_tabular_output

__all__ = ["PhasePriorExtractor", "phase_only_images", "LUMA_WEIGHTS"]

#: ITU-R BT.601 luma weights for (R, G, B), as used by Pillow's ``convert("L")``.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)

# Fourier coefficients smaller than ``_ROUNDOFF * eps * ||x||_2`` (unitary DFT) are
# round-off noise: their phase is arbitrary, so they are given phase 0 instead.
_ROUNDOFF = 8.0
# Images are transformed in chunks of at most this many pixel values (64 MiB of complex128).
_CHUNK_VALUES = 1 << 22


def _to_grayscale(images):
    """(n, C, H, W) -> (n, 1, H, W): ITU-R 601 luma for C == 3, identity for C == 1."""
    n_channels = images.shape[1]
    if n_channels == 1:
        return images
    if n_channels == 3:
        weights = np.asarray(LUMA_WEIGHTS, dtype=images.dtype)
        return np.einsum("nchw,c->nhw", images, weights)[:, None]
    raise ValueError(
        f"grayscale=True needs images with 1 or 3 (RGB) channels, got {n_channels} channels; "
        "use grayscale=False to transform every channel separately."
    )


def _check_images(images):
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(
            f"Expected images of shape (n, C, H, W), got an array of shape {images.shape}."
        )
    if images.dtype.kind not in "biuf":
        raise TypeError(f"Expected a numeric image array, got dtype {images.dtype}.")
    if not np.isfinite(images).all():
        raise ValueError("Images contain NaN or infinity.")
    return images


def phase_only_images(images, *, amplitude=1.0, grayscale=True, rescale="minmax"):
    """Phase-only images: keep the Fourier phase, replace the amplitude by a constant.

    For every image (and channel) ``x`` of size ``H x W`` with unitary 2-D DFT
    ``F(u, v) = |F(u, v)| exp(i phi(u, v))``, the result is
    ``real(IDFT(amplitude * exp(i phi(u, v))))``. Because the phase of a real image is
    point-symmetric, the inverse transform is real up to round-off. By Parseval's theorem,
    before rescaling, its root-mean-square value is exactly ``amplitude``.

    Parameters
    ----------
    images : array-like of shape (n_images, C, H, W)
        Real images (any numeric dtype, any value range).
    amplitude : float, default=1.0
        The constant magnitude given to every coefficient of the unitary DFT (``R`` in
        TPSNet; unitary scaling makes it independent of the image size: it is the RMS
        value of the raw phase-only image). It has no effect when ``rescale="minmax"``.
    grayscale : bool, default=True
        If True, transform the ITU-R 601 luma ``0.299 R + 0.587 G + 0.114 B`` of RGB
        images (one output channel; single-channel images are used as they are). If
        False, transform every channel separately (C output channels).
    rescale : {"minmax"} or None, default="minmax"
        ``"minmax"`` maps every output channel of every image to ``[0, 1]``
        (``(p - min) / (max - min)``; a constant channel, which only a 1-pixel image
        gives, becomes 0). None returns the raw values, of RMS ``amplitude``.

    Returns
    -------
    phase : ndarray of shape (n_images, 1 or C, H, W)
        Computed in float64; returned in the input's floating dtype (float32 input gives
        float32, integer input float64).

    Notes
    -----
    A coefficient whose magnitude is at round-off level (for instance every non-DC
    coefficient of a constant image) has no meaningful phase; it is given phase 0, so the
    phase-only image of a constant image is an impulse at the origin rather than noise.

    Examples
    --------
    >>> import numpy as np
    >>> from skucdr.preprocessing import phase_only_images
    >>> rng = np.random.default_rng(0)
    >>> images = rng.random((2, 3, 8, 8))
    >>> phase = phase_only_images(images)
    >>> phase.shape, float(phase.min()), float(phase.max())
    ((2, 1, 8, 8), 0.0, 1.0)
    >>> np.allclose(phase, phase_only_images(0.1 * images + 0.5))  # contrast-invariant
    True
    """
    images = _check_images(images)
    if not (isinstance(amplitude, Real) and amplitude > 0):
        raise ValueError(f"amplitude must be a positive number, got {amplitude!r}.")
    if rescale not in ("minmax", None):
        raise ValueError(f"rescale must be 'minmax' or None, got {rescale!r}.")
    out_dtype = images.dtype if images.dtype.kind == "f" else np.float64

    x = images.astype(np.float64, copy=False)
    if grayscale:
        x = _to_grayscale(x)
    spectrum = np.fft.fft2(x, axes=(-2, -1), norm="ortho")
    magnitude = np.abs(spectrum)
    tol = _ROUNDOFF * np.finfo(np.float64).eps * np.sqrt((x * x).sum(axis=(-2, -1), keepdims=True))
    meaningful = magnitude > tol
    # exp(i phi) = F / |F| where the phase is meaningful, 1 (phase 0) elsewhere.
    np.divide(spectrum, magnitude, out=spectrum, where=meaningful)
    spectrum[~meaningful] = 1.0
    spectrum *= amplitude
    phase = np.fft.ifft2(spectrum, axes=(-2, -1), norm="ortho").real
    if rescale == "minmax":
        phase = _minmax(phase, amplitude)
    return phase.astype(out_dtype, copy=False)


def _minmax(phase, amplitude):
    """Rescale every (image, channel) plane to [0, 1]; constant planes become 0."""
    low = phase.min(axis=(-2, -1), keepdims=True)
    span = phase.max(axis=(-2, -1), keepdims=True) - low
    flat = span <= _ROUNDOFF * np.finfo(phase.dtype).eps * amplitude
    phase = (phase - low) / np.where(flat, 1.0, span)
    phase[np.broadcast_to(flat, phase.shape)] = 0.0
    return phase


def _check_not_sparse(X):
    # A scipy.sparse dok_matrix is a dict: reject sparse input before it is taken for a
    # mapping of domains.
    if issparse(X):
        raise TypeError(
            "Sparse data was passed, but PhasePriorExtractor needs dense images; use X.toarray()."
        )


def _input_ndim(X):
    """Number of dimensions of ``X`` (of its first value, for a mapping)."""
    if isinstance(X, Mapping):
        X = next(iter(X.values()), None)
        if isinstance(X, tuple) and len(X) == 2:
            X = X[0]
    if X is None:
        return 2
    return X.ndim if hasattr(X, "ndim") else np.asarray(X).ndim


class PhasePriorExtractor(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Replace images by their phase-only images (the phase prior of TPSNet).

    Each image ``x`` (its luma when ``grayscale=True``) is Fourier transformed, every
    amplitude is replaced by the constant ``amplitude``, and the inverse transform's real
    part, min-max rescaled per image and channel to ``[0, 1]``, is returned. The result
    does not depend on the input's amplitude spectrum (contrast, colour statistics,
    texture energy), only on its phase (edges and layout). See :func:`phase_only_images`.

    The transformer learns nothing: ``fit`` only validates the input and records its
    shape. It is vectorised over the batch (images are transformed in chunks to bound
    memory).

    Parameters
    ----------
    amplitude : float, default=1.0
        The constant magnitude of every coefficient of the unitary DFT; it is the RMS
        value of the raw phase-only image. With the default ``rescale="minmax"`` it has
        no effect on the output; it sets the output's scale when ``rescale=None``.
    grayscale : bool, default=True
        If True (TPSNet), transform the ITU-R 601 luma of RGB images (1 phase channel;
        single-channel images are used as they are; other channel counts raise a
        ``ValueError``). If False, transform every channel (C phase channels).
    output : {"phase", "concat"}, default="phase"
        ``"phase"``: the phase channels only. ``"concat"``: the original channels
        (unchanged) followed by the phase channels, e.g. ``C + 1`` channels for
        grayscale. Phase channels are not replicated to 3 channels; use
        ``np.repeat(..., 3, axis=1)`` for a backbone that wants RGB.
    image_shape : tuple (C, H, W), default=None
        The shape of one image when ``X`` holds flattened images ``(n, C*H*W)``. With a
        4-D ``X`` of images ``(n, C, H, W)`` it may be omitted. A 2-D ``X`` without
        ``image_shape`` is treated as a batch of 1-D signals (shape ``(1, 1,
        n_features)``): the Fourier transform then runs along the feature axis. Pass
        ``image_shape`` for flattened images; it is not guessed.
    rescale : {"minmax"} or None, default="minmax"
        ``"minmax"``: every phase channel of every image is mapped to ``[0, 1]`` (a
        constant channel, which only a 1-pixel image gives, becomes 0). None: raw values
        of RMS ``amplitude``.

    Attributes
    ----------
    n_features_in_ : int
        Number of values per input row (``C*H*W`` for images).
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of the input features, when ``X`` was a DataFrame with string column names.
    image_shape_ : tuple (C, H, W)
        The shape of one input image as seen in ``fit``.
    output_shape_ : tuple (C_out, H, W)
        The shape of one output image.

    See Also
    --------
    phase_only_images : The same transform as a NumPy function.
    skucdr.nn.phase.phase_only : The PyTorch twin, for (GPU) training batches.

    Notes
    -----
    The output has the layout of the input: 4-D images in give 4-D images
    ``(n, C_out, H, W)`` out; 2-D rows in give flat rows ``(n, C_out*H*W)`` out (pass
    ``image_shape=output_shape_`` to the next step). A mapping ``{domain: X}`` in gives a
    mapping out. ``sample_domain`` is accepted and ignored, and is requested by default,
    so the transformer sits in a :class:`~sklearn.pipeline.Pipeline` in front of a
    retriever when metadata routing is enabled. The output is float32. ``set_output``
    containers (pandas, polars) need 2-D input.

    Examples
    --------
    >>> import numpy as np
    >>> from skucdr import PhasePriorExtractor
    >>> images = np.random.default_rng(0).random((4, 3, 16, 16))
    >>> PhasePriorExtractor().fit_transform(images).shape
    (4, 1, 16, 16)
    >>> ext = PhasePriorExtractor(output="concat", image_shape=(3, 16, 16))
    >>> ext.fit_transform(images.reshape(4, -1)).shape, ext.output_shape_
    ((4, 1024), (4, 16, 16))
    """

    __metadata_request__fit = {"sample_domain": True}
    __metadata_request__transform = {"sample_domain": True}

    _parameter_constraints: dict = {
        "amplitude": [Interval(Real, 0, None, closed="neither")],
        "grayscale": ["boolean"],
        "output": [StrOptions({"phase", "concat"})],
        "image_shape": [tuple, list, None],
        "rescale": [StrOptions({"minmax"}), None],
    }

    def __init__(
        self, amplitude=1.0, *, grayscale=True, output="phase", image_shape=None, rescale="minmax"
    ):
        self.amplitude = amplitude
        self.grayscale = grayscale
        self.output = output
        self.image_shape = image_shape
        self.rescale = rescale

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None, *, sample_domain=None):
        """Validate ``X`` and record the image shape.

        Parameters
        ----------
        X : array-like of shape (n_samples, C, H, W) or (n_samples, n_features), or Mapping
            Images, flattened images (with ``image_shape``), or ``{domain: X_domain}``.
        y : None
            Ignored.
        sample_domain : array-like of shape (n_samples,), default=None
            Ignored (accepted so that the transformer can sit in a domain-aware pipeline).

        Returns
        -------
        self : PhasePriorExtractor
            The fitted transformer.
        """
        _check_not_sparse(X)
        data = check_domain_input(self, X, sample_domain, image_shape=self.image_shape, reset=True)
        shape = data.image_shape or (1, 1, data.X.shape[1])
        n_channels = shape[0]
        if self.grayscale and n_channels not in (1, 3):
            raise ValueError(
                f"grayscale=True needs images with 1 or 3 (RGB) channels, got image shape "
                f"{shape}; use grayscale=False to transform every channel separately."
            )
        n_phase = 1 if self.grayscale else n_channels
        n_out = n_phase + (n_channels if self.output == "concat" else 0)
        self.image_shape_ = tuple(shape)
        self.output_shape_ = (n_out, shape[1], shape[2])
        return self

    def transform(self, X, *, sample_domain=None):
        """Phase-only images of ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, C, H, W) or (n_samples, n_features), or Mapping
            Images of the shape seen in ``fit``, flattened or not, or ``{domain: X}``.
        sample_domain : array-like of shape (n_samples,), default=None
            Ignored.

        Returns
        -------
        X_out : ndarray of shape (n_samples, C_out, H, W) or (n_samples, C_out*H*W), or dict
            float32 phase images (see :attr:`output_shape_`), 4-D for 4-D input, flat for
            2-D input, and a mapping of domain to array for a mapping.
        """
        check_is_fitted(self)
        _check_not_sparse(X)
        four_d = _input_ndim(X) == 4
        check_tabular_output(self, from_mapping=isinstance(X, Mapping), ndim=4 if four_d else 2)
        data = check_domain_input(self, X, sample_domain, image_shape=self.image_shape, reset=False)
        if data.image_shape is not None and tuple(data.image_shape) != self.image_shape_:
            raise ValueError(
                f"X holds images of shape {data.image_shape}, but {type(self).__name__} was "
                f"fitted on images of shape {self.image_shape_}."
            )
        flat = data.X
        n = flat.shape[0]
        n_channels, height, width = self.image_shape_
        out = np.empty((n, int(np.prod(self.output_shape_))), dtype=np.float32)
        n_in = n_channels * height * width
        chunk = max(1, _CHUNK_VALUES // n_in)
        for start in range(0, n, chunk):
            images = flat[start : start + chunk].reshape(-1, n_channels, height, width)
            phase = phase_only_images(
                images, amplitude=self.amplitude, grayscale=self.grayscale, rescale=self.rescale
            ).reshape(len(images), -1)
            if self.output == "concat":
                out[start : start + chunk, :n_in] = images.reshape(len(images), -1)
                out[start : start + chunk, n_in:] = phase
            else:
                out[start : start + chunk] = phase
        if four_d:
            out = out.reshape((n,) + self.output_shape_)
        if data.from_mapping:
            return unpack_domains(out, data.sample_domain)
        return out

    def fit_transform(self, X, y=None, *, sample_domain=None):
        """Fit to ``X``, then transform it.

        Parameters
        ----------
        X : array-like of shape (n_samples, C, H, W) or (n_samples, n_features), or Mapping
            Images, flattened images (with ``image_shape``), or ``{domain: X_domain}``.
        y : None
            Ignored.
        sample_domain : array-like of shape (n_samples,), default=None
            Ignored.

        Returns
        -------
        X_out : ndarray or dict
            See :meth:`transform`.
        """
        return self.fit(X, y, sample_domain=sample_domain).transform(X, sample_domain=sample_domain)

    @property
    def _n_features_out(self):
        """Number of output features, used by ``get_feature_names_out``."""
        return int(np.prod(self.output_shape_))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags
