"""Batched, seeded data augmentation on tensors (no per-image Python loop).

Contrastive learning needs two kinds of invariance: geometric (crop, shift, scale,
rotation) and photometric (colour jitter, grey-scale); across domains also a third, to
style: the Fourier amplitude spectrum of an image, exchanged with another image of the
batch while its phase (the structure) is kept. All are applied to a whole batch at once
on the batch's device, drawing from an explicit ``torch.Generator`` so a fit is
reproducible with ``random_state``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F

__all__ = ["ImageAugment", "FeatureAugment", "build_augment", "mix_amplitude"]


def _check_setting(augment, name, ok, what):
    """Raise a ValueError naming ``name`` unless ``ok(value)`` holds (False on a bad type)."""
    value = getattr(augment, name)
    try:
        valid = bool(ok(value))
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise ValueError(f"{type(augment).__name__} {name} must be {what}, got {value!r}.")


def _uniform(gen, n, low, high, device):
    return torch.rand(n, generator=gen, device="cpu").to(device) * (high - low) + low


@dataclass
class ImageAugment:
    """Random affine crop, colour jitter, grey-scale and amplitude mix for ``(n, C, H, W)`` batches.

    Parameters
    ----------
    scale : tuple of float, default=(0.75, 1.1)
        Range of the zoom factor (below 1 zooms out, above 1 zooms in).
    max_rotation : float, default=15
        Largest rotation in degrees.
    max_shift : float, default=0.1
        Largest translation as a fraction of the image size.
    brightness, contrast, saturation : float, default=0.4
        Colour-jitter strengths in ``[0, 1]`` (factors drawn in ``[1 - s, 1 + s]``).
    hue : float, default=0.5
        Hue jitter, as a rotation of the colour vector about the grey axis (fraction of a
        turn, at most 0.5, which allows any hue).
    jitter_p : float, default=0.8
        Probability of applying colour jitter to an image.
    grayscale_p : float, default=0.5
        Probability of turning an image grey.
    invert_p : float, default=0.5
        Probability of inverting an image's intensities.
    blur_p : float, default=0.0
        Probability of a Gaussian blur (SimCLR's augmentation; makes the encoder
        tolerant of resolution and sharpness, e.g. low-resolution scans versus photos).
        Off by default: it lost on the digit domains (:ref:`augmentation`).
    blur_sigma : tuple of float, default=(0.1, 2.0)
        Range of the blur's standard deviation, in pixels of the input.
    amplitude_mix_p : float, default=0.5
        Probability that an image's Fourier amplitude spectrum is mixed with that of a
        random other image of the batch (FACT's amplitude mix, Xu et al., CVPR 2021),
        after the other augmentations; the phase is kept (:func:`mix_amplitude`). The
        retrievers' batches hold every domain in equal shares, so about half the
        partners come from another domain: the network sees each image in the other
        domains' "styles" (colour statistics, texture, sharpness) and learns to ignore
        them. 0 turns it off (and draws no random numbers). See :ref:`augmentation`.
    amplitude_mix_eta : float, default=1.0
        Largest mixing weight: ``lambda ~ U(0, amplitude_mix_eta)`` per image (FACT's
        value: up to a complete exchange of the two amplitude spectra). Lower it when
        the domains share their style and differ in content.
    random_conv_p : float, default=0.0
        Probability that an image is passed through a random convolution (RandConv, Xu
        et al., ICLR 2021): one filter bank per image, ``C`` to ``C`` channels, weights
        drawn from ``N(0, 1 / (k^2 C))``, reflect padding; the output is min-max rescaled
        per image and blended with the input, ``(1 - a) x + a conv(x)``, ``a ~ U(0, 1)``.
        It randomises local texture and colour while keeping shapes, after the colour
        jitter and before the amplitude mix. 0 turns it off (and draws no random
        numbers). UniversalCDRRetriever's ``augment="auto"`` uses 0.5,
        TextPhaseRetriever's 0 (:ref:`augmentation`): it pays where domains differ in
        colour and texture rather than shape.
    random_conv_kernels : tuple of int, default=(1, 3, 5, 7)
        Odd kernel sizes; one is drawn per batch.

    Notes
    -----
    The colour defaults are stronger than SimCLR's (hue 0.1, grey-scale 0.2, no
    inversion): across domains, colour, background and polarity (dark-on-light versus
    light-on-dark) are what differs, and instance discrimination otherwise learns to
    separate images by them (:ref:`augmentation`).

    Saturation, hue and grey-scale act on three-channel (RGB) batches only; other
    channel counts (grey, or RGB plus a phase channel from
    :class:`~skucdr.PhasePriorExtractor`) get brightness, contrast and inversion.
    """

    scale: tuple = (0.75, 1.1)
    max_rotation: float = 15.0
    max_shift: float = 0.1
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.5
    jitter_p: float = 0.8
    grayscale_p: float = 0.5
    invert_p: float = 0.5
    blur_p: float = 0.0
    blur_sigma: tuple = (0.1, 2.0)
    amplitude_mix_p: float = 0.5
    amplitude_mix_eta: float = 1.0
    random_conv_p: float = 0.0
    random_conv_kernels: tuple = (1, 3, 5, 7)

    def __post_init__(self):
        def positive_range(v):
            low, high = (float(t) for t in v)
            return 0 < low <= high < math.inf

        for name in ("scale", "blur_sigma"):
            _check_setting(self, name, positive_range, "a pair (low, high) with 0 < low <= high")
        _check_setting(self, "max_rotation", lambda v: 0 <= v < math.inf, "a finite number >= 0")
        _check_setting(self, "max_shift", lambda v: 0 <= v <= 1, "in [0, 1]")
        for name in ("brightness", "contrast", "saturation", "amplitude_mix_eta"):
            _check_setting(self, name, lambda v: 0 <= v <= 1, "in [0, 1]")
        _check_setting(self, "hue", lambda v: 0 <= v <= 0.5, "in [0, 0.5]")
        for name in ("jitter_p", "grayscale_p", "invert_p", "blur_p", "amplitude_mix_p",
                     "random_conv_p"):
            _check_setting(self, name, lambda v: 0 <= v <= 1, "a probability in [0, 1]")

        def odd_sizes(v):
            sizes = tuple(v)
            return len(sizes) > 0 and all(
                isinstance(k, int) and not isinstance(k, bool) and k >= 1 and k % 2 == 1
                for k in sizes)

        _check_setting(self, "random_conv_kernels", odd_sizes,
                       "a non-empty tuple of odd positive ints")

    def geometric(self, x, gen):
        n, device = x.shape[0], x.device
        zoom = _uniform(gen, n, *self.scale, device)
        angle = _uniform(gen, n, -self.max_rotation, self.max_rotation, device) * math.pi / 180
        shift = _uniform(gen, 2 * n, -self.max_shift, self.max_shift, device).view(n, 2) * 2
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        theta = torch.stack(
            [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)],
            dim=1,
        ).to(x.dtype)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def photometric(self, x, gen):
        n, c, device = x.shape[0], x.shape[1], x.device
        shape = (n, 1, 1, 1)
        apply = (_uniform(gen, n, 0, 1, device) < self.jitter_p).view(shape)
        b = _uniform(gen, n, 1 - self.brightness, 1 + self.brightness, device).view(shape)
        k = _uniform(gen, n, 1 - self.contrast, 1 + self.contrast, device).view(shape)
        s = _uniform(gen, n, 1 - self.saturation, 1 + self.saturation, device).view(shape)
        jittered = x * b
        mean = jittered.mean(dim=(1, 2, 3), keepdim=True)
        jittered = (jittered - mean) * k + mean
        if c == 3:
            grey = _luma(jittered)
            jittered = (jittered - grey) * s + grey
            jittered = _rotate_hue(jittered, _uniform(gen, n, -self.hue, self.hue, device))
        x = torch.where(apply, jittered.clamp(0, 1), x)
        if c == 3 and self.grayscale_p > 0:
            grey = (_uniform(gen, n, 0, 1, device) < self.grayscale_p).view(shape)
            x = torch.where(grey, _luma(x), x)
        if self.invert_p > 0:
            invert = (_uniform(gen, n, 0, 1, device) < self.invert_p).view(shape)
            x = torch.where(invert, 1 - x, x)
        return x

    def blur(self, x, gen):
        """Separable Gaussian blur with a per-image sigma, applied with probability ``blur_p``."""
        if self.blur_p <= 0:
            return x
        n, c, h, w = x.shape
        sigma = _uniform(gen, n, *self.blur_sigma, x.device)
        apply = _uniform(gen, n, 0, 1, x.device) < self.blur_p
        radius = max(1, min(int(math.ceil(2 * self.blur_sigma[1])), (min(h, w) - 1) // 2))
        offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
        kernel = torch.exp(-(offsets[None] ** 2) / (2 * sigma[:, None].to(x.dtype) ** 2))
        kernel = kernel / kernel.sum(dim=1, keepdim=True)
        kernel = kernel.repeat_interleave(c, dim=0)  # one kernel per (image, channel)
        flat = x.reshape(1, n * c, h, w)
        flat = F.pad(flat, (radius, radius, 0, 0), mode="reflect")
        flat = F.conv2d(flat, kernel.view(n * c, 1, 1, -1), groups=n * c)
        flat = F.pad(flat, (0, 0, radius, radius), mode="reflect")
        flat = F.conv2d(flat, kernel.view(n * c, 1, -1, 1), groups=n * c)
        blurred = flat.view(n, c, h, w)
        mask = apply.view(n, 1, 1, 1).to(x.dtype)
        return mask * blurred + (1 - mask) * x

    def random_conv(self, x, gen):
        """RandConv: a random filter bank per image, applied with probability ``random_conv_p``."""
        if self.random_conv_p <= 0:
            return x
        n, c, h, w = x.shape
        device = x.device
        sizes = self.random_conv_kernels
        pick = int(torch.randint(len(sizes), (1,), generator=gen, device="cpu"))
        # reflect padding needs k // 2 < H, W: larger kernels shrink to the largest that fits
        k = min(sizes[pick], 2 * min(h, w) - 1)
        weight = torch.randn((n * c, c, k, k), generator=gen, device="cpu").to(device, x.dtype)
        weight = weight / math.sqrt(k * k * c)
        blend = _uniform(gen, n, 0, 1, device).view(n, 1, 1, 1).to(x.dtype)
        rows = (_uniform(gen, n, 0, 1, device) < self.random_conv_p).nonzero().squeeze(1)
        if rows.numel() == 0:
            return x
        # only the chosen images are convolved, each with its own filter bank (drawn above
        # for every image, so that the random stream does not depend on the choice)
        m, picked = rows.numel(), x[rows]
        weight = weight.view(n, c, c, k, k)[rows].reshape(m * c, c, k, k)
        flat = picked.reshape(1, m * c, h, w)
        if k > 1:
            flat = F.pad(flat, (k // 2,) * 4, mode="reflect")
        conv = F.conv2d(flat, weight, groups=m).view(m, c, h, w)
        low = conv.amin(dim=(1, 2, 3), keepdim=True)
        high = conv.amax(dim=(1, 2, 3), keepdim=True)
        conv = (conv - low) / (high - low).clamp_min(1e-6)
        out = x.clone()
        out[rows] = (1 - blend[rows]) * picked + blend[rows] * conv
        return out

    def amplitude_mix(self, x, gen):
        """Mix the amplitude spectra of ``amplitude_mix_p`` of the images with a partner's."""
        if self.amplitude_mix_p <= 0:
            return x
        n, device = x.shape[0], x.device
        partners = torch.randperm(n, generator=gen, device="cpu").to(device)
        lam = _uniform(gen, n, 0, self.amplitude_mix_eta, device)
        rows = (_uniform(gen, n, 0, 1, device) < self.amplitude_mix_p).nonzero().squeeze(1)
        if rows.numel() == 0:
            return x
        mixed = mix_amplitude(x[rows], x[partners[rows]], lam[rows])
        out = x.clone()
        out[rows] = mixed.clamp(0, 1)
        return out

    def __call__(self, x, gen):
        """Augment a batch of images with values in ``[0, 1]``."""
        x = self.photometric(self.blur(self.geometric(x, gen), gen), gen)
        return self.amplitude_mix(self.random_conv(x, gen), gen)


def mix_amplitude(x, partners, lam):
    """Images with the phase of ``x`` and the amplitude ``(1 - lam) |F x| + lam |F p|``.

    ``F`` is the 2-D discrete Fourier transform over the last two axes, per channel.
    Where ``|F x|`` is 0 the phase is undefined and the output's coefficient stays 0.

    Parameters
    ----------
    x, partners : torch.Tensor of shape (n, C, H, W)
        The images and, row by row, the images whose amplitude is mixed in.
    lam : torch.Tensor of shape (n,)
        Mixing weight of each row (0 returns ``x``, 1 takes the partner's amplitude).

    Returns
    -------
    torch.Tensor of shape (n, C, H, W)
        Real images, not clipped.
    """
    spec = torch.fft.rfft2(x)
    amp = spec.abs()
    lam = lam.view(-1, 1, 1, 1).to(amp.dtype)
    target = (1 - lam) * amp + lam * torch.fft.rfft2(partners).abs()
    scale = torch.where(amp > 0, target / amp.clamp_min(1e-12), torch.zeros_like(amp))
    return torch.fft.irfft2(spec * scale, s=x.shape[-2:])


def _luma(x):
    weights = x.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    return (x * weights).sum(dim=1, keepdim=True)


def _rotate_hue(x, turns):
    """Rotate RGB vectors about the grey axis by ``turns`` of a full turn (per image)."""
    angle = turns * 2 * math.pi
    cos, sin = torch.cos(angle), torch.sin(angle)
    k = 1.0 / math.sqrt(3.0)
    # Rodrigues' rotation about the unit axis (1, 1, 1)/sqrt(3), one matrix per image.
    one_minus = (1 - cos) / 3.0
    a = cos + one_minus
    b = one_minus - k * sin
    c = one_minus + k * sin
    rot = torch.stack(
        [torch.stack([a, b, c], 1), torch.stack([c, a, b], 1), torch.stack([b, c, a], 1)], 1
    ).to(x.dtype)
    return torch.einsum("nij,njhw->nihw", rot, x)


@dataclass
class FeatureAugment:
    """Gaussian noise and feature dropout for feature-vector batches.

    With feature vectors these two perturbations are the only source of the two views
    that instance discrimination contrasts, so they set which differences the encoder
    learns to ignore: too weak, and instance discrimination separates images of the same
    category by whatever distinguishes them in the input (the embedding can then retrieve
    worse than the input features themselves).

    Parameters
    ----------
    noise : float, default=0.3
        Standard deviation of the added noise, relative to each row's standard deviation.
    dropout : float, default=0.3
        Probability of zeroing each feature (the kept ones are scaled by
        ``1 / (1 - dropout)``).

    Notes
    -----
    The defaults beat weaker noise and dropout on HOG features and on the pooled
    features of CNNs trained on one domain (:ref:`feature-standardisation`).
    """

    noise: float = 0.3
    dropout: float = 0.3

    def __post_init__(self):
        _check_setting(self, "noise", lambda v: 0 <= v < math.inf, "a finite number >= 0")
        _check_setting(self, "dropout", lambda v: 0 <= v < 1, "in [0, 1)")

    def __call__(self, x, gen):
        scale = x.std(dim=1, keepdim=True, correction=0) * self.noise
        noise = torch.randn(x.shape, generator=gen, device="cpu").to(x.device)
        keep = (torch.rand(x.shape, generator=gen, device="cpu") >= self.dropout).to(x.device)
        return (x + noise * scale) * keep.to(x.dtype) / (1 - self.dropout)


def build_augment(image_shape, spec="auto", **image_params):
    """The default augmentation for the input kind, or the user's callable.

    Parameters
    ----------
    image_shape : tuple or None
        Shape of one image, None for feature vectors.
    spec : "auto", None or callable
        ``"auto"``: :class:`ImageAugment` for images, :class:`FeatureAugment` for vectors;
        None: no augmentation; a callable ``f(batch, generator) -> batch`` is used as is.
    **image_params
        Settings of the ``"auto"`` :class:`ImageAugment` that differ from its defaults
        (a retriever's own choice, e.g. UniversalCDRRetriever's ``random_conv_p=0.5``).

    Examples
    --------
    >>> build_augment((3, 28, 28), "auto", random_conv_p=0.5).random_conv_p
    0.5
    >>> type(build_augment(None)).__name__
    'FeatureAugment'
    """
    if spec is None:
        return lambda x, gen: x
    if callable(spec):
        return spec
    if spec != "auto":
        raise ValueError(f"augment must be 'auto', None or a callable, got {spec!r}.")
    return ImageAugment(**image_params) if image_shape is not None else FeatureAugment()
