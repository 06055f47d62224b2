"""Phase-only images in PyTorch, for (GPU) training batches.

The twin of :func:`skucdr.preprocessing.phase_only_images`: same definition, computed with
``torch.fft`` on the tensor's device, so that TPSNet can compute the phase prior of each
augmented batch after the geometric augmentation (RGB and phase views stay aligned).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["phase_only"]

_LUMA_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601, as skucdr.preprocessing.LUMA_WEIGHTS
_ROUNDOFF = 8.0  # as in skucdr.preprocessing


@torch.no_grad()
def phase_only(
    images: Tensor,
    *,
    amplitude: float = 1.0,
    grayscale: bool = True,
    rescale: str | None = "minmax",
) -> Tensor:
    """Phase-only images of a batch: keep the Fourier phase, set every amplitude to a constant.

    For every image (and channel) ``x`` with unitary 2-D DFT ``F = |F| exp(i phi)``, returns
    ``real(IDFT(amplitude * exp(i phi)))``, min-max rescaled per image and channel to
    ``[0, 1]`` by default. Coefficients at round-off level get phase 0. Runs without
    autograd (the phase prior is an input, not a learned quantity).

    Parameters
    ----------
    images : Tensor of shape (n, C, H, W)
        Real images, on any device. Integer tensors are converted to float32, float16 and
        bfloat16 to float32 (cuFFT has no general half-precision path).
    amplitude : float, default=1.0
        Constant magnitude of every coefficient of the unitary DFT (the RMS value of the
        raw output). No effect when ``rescale="minmax"``.
    grayscale : bool, default=True
        Transform the ITU-R 601 luma of RGB images (1 output channel; 1-channel images
        are used as they are). If False, transform every channel.
    rescale : {"minmax"} or None, default="minmax"
        ``"minmax"``: map every (image, channel) plane to ``[0, 1]``; a constant plane
        becomes 0. None: raw values.

    Returns
    -------
    phase : Tensor of shape (n, 1 or C, H, W)
        On the input's device; float64 for float64 input, float32 otherwise.

    Examples
    --------
    >>> import torch
    >>> from skucdr.nn.phase import phase_only
    >>> phase = phase_only(torch.rand(2, 3, 8, 8))
    >>> tuple(phase.shape), float(phase.amin()), float(phase.amax())
    ((2, 1, 8, 8), 0.0, 1.0)
    """
    if not isinstance(images, Tensor):
        raise TypeError(f"phase_only expects a torch.Tensor, got {type(images).__name__}.")
    if images.ndim != 4:
        raise ValueError(f"Expected images of shape (n, C, H, W), got shape {tuple(images.shape)}.")
    if images.is_complex():
        raise TypeError("phase_only expects real images, got a complex tensor.")
    if not amplitude > 0:
        raise ValueError(f"amplitude must be a positive number, got {amplitude!r}.")
    if rescale not in ("minmax", None):
        raise ValueError(f"rescale must be 'minmax' or None, got {rescale!r}.")
    x = images if images.dtype in (torch.float32, torch.float64) else images.float()
    if grayscale:
        n_channels = x.shape[1]
        if n_channels == 3:
            weights = torch.tensor(_LUMA_WEIGHTS, dtype=x.dtype, device=x.device)
            x = torch.einsum("nchw,c->nhw", x, weights).unsqueeze(1)
        elif n_channels != 1:
            raise ValueError(
                f"grayscale=True needs images with 1 or 3 (RGB) channels, got {n_channels}; "
                "use grayscale=False to transform every channel separately."
            )
    spectrum = torch.fft.fft2(x, norm="ortho")
    magnitude = spectrum.abs()
    eps = torch.finfo(x.dtype).eps
    tol = _ROUNDOFF * eps * torch.linalg.vector_norm(x, dim=(-2, -1), keepdim=True)
    meaningful = magnitude > tol
    unit = torch.where(
        meaningful, spectrum / torch.where(meaningful, magnitude, 1.0), torch.ones_like(spectrum)
    )
    phase = torch.fft.ifft2(unit * amplitude, norm="ortho").real
    if rescale == "minmax":
        low = phase.amin(dim=(-2, -1), keepdim=True)
        span = phase.amax(dim=(-2, -1), keepdim=True) - low
        flat = span <= _ROUNDOFF * eps * amplitude
        phase = torch.where(flat, 0.0, (phase - low) / torch.where(flat, 1.0, span))
    return phase.contiguous()
