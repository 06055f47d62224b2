"""Batched, seeded augmentation (skucdr.nn.augment)."""

import pytest
import torch

from skucdr.nn.augment import FeatureAugment, ImageAugment, build_augment, mix_amplitude


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_image_augment_is_seeded_and_stays_in_range():
    x = torch.rand(6, 3, 16, 16, generator=_gen(1))
    aug = ImageAugment(blur_p=0.5)
    a, b = aug(x, _gen(0)), aug(x, _gen(0))
    assert torch.equal(a, b)
    assert not torch.equal(a, aug(x, _gen(1)))
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1


def test_blur_and_amplitude_mix_off_draw_no_randomness():
    # blur_p=0 / amplitude_mix_p=0 must leave the random stream (and so earlier results)
    # untouched
    x = torch.rand(4, 3, 12, 12, generator=_gen(2))
    aug = ImageAugment(amplitude_mix_p=0.0)
    gen = _gen(0)
    expected = aug.photometric(aug.geometric(x, gen), gen)
    assert torch.equal(aug(x, _gen(0)), expected)
    default = ImageAugment()
    gen = _gen(0)
    expected = default.amplitude_mix(default.photometric(default.geometric(x, gen), gen), gen)
    assert torch.equal(default(x, _gen(0)), expected)


def test_mix_amplitude_keeps_the_phase_and_mixes_the_amplitude():
    x = torch.rand(3, 2, 10, 12, generator=_gen(5), dtype=torch.float64)
    partners = torch.rand(3, 2, 10, 12, generator=_gen(6), dtype=torch.float64)
    lam = torch.tensor([0.0, 0.3, 1.0], dtype=torch.float64)
    out = mix_amplitude(x, partners, lam)
    assert out.shape == x.shape
    f_x, f_p, f_out = (torch.fft.fft2(v) for v in (x, partners, out))
    want = (1 - lam.view(-1, 1, 1, 1)) * f_x.abs() + lam.view(-1, 1, 1, 1) * f_p.abs()
    assert torch.allclose(f_out.abs(), want, atol=1e-9)
    # same phase: the coefficients are positive multiples of the input's
    assert torch.allclose(f_out * f_x.conj() / (f_out.abs() * f_x.abs()),
                          torch.ones_like(f_x), atol=1e-9)
    assert torch.allclose(out[0], x[0], atol=1e-12)  # lam = 0: unchanged


def test_amplitude_mix_probability_selects_images_and_stays_in_range():
    x = torch.rand(64, 3, 8, 8, generator=_gen(7))
    out = ImageAugment(amplitude_mix_p=0.5, amplitude_mix_eta=1.0).amplitude_mix(x, _gen(0))
    changed = (out - x).flatten(1).abs().amax(1) > 1e-6
    assert 16 < int(changed.sum()) < 48
    assert out.min() >= 0 and out.max() <= 1


def test_random_conv_off_draws_no_randomness():
    x = torch.rand(4, 3, 12, 12, generator=_gen(3))
    aug = ImageAugment(random_conv_p=0.0)
    gen = _gen(0)
    assert torch.equal(aug.random_conv(x, gen), x)
    assert torch.equal(gen.get_state(), _gen(0).get_state())


def test_random_conv_1x1_is_an_affine_map_of_each_grey_image():
    # a 1x1 random filter on one channel, rescaled and blended with the input, is an
    # affine function of the pixel values: shapes are kept exactly (|correlation| = 1)
    x = torch.rand(16, 1, 10, 10, generator=_gen(4), dtype=torch.float64)
    out = ImageAugment(random_conv_p=1.0, random_conv_kernels=(1,)).random_conv(x, _gen(0))
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    for a, b in zip(x.flatten(1), out.flatten(1)):
        corr = torch.corrcoef(torch.stack([a, b]))[0, 1]
        assert abs(float(corr)) == pytest.approx(1.0, abs=1e-9)


def test_random_conv_changes_texture_per_image_and_selects_images():
    x = torch.rand(64, 3, 9, 7, generator=_gen(8))
    aug = ImageAugment(random_conv_p=0.5, random_conv_kernels=(3, 5, 31))
    out = aug.random_conv(x, _gen(0))
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    changed = (out - x).flatten(1).abs().amax(1) > 1e-6
    assert 16 < int(changed.sum()) < 48
    assert torch.equal(out, aug.random_conv(x, _gen(0)))
    # a kernel larger than the image shrinks to the largest that fits (13 for 7 columns)
    big = ImageAugment(random_conv_p=1.0, random_conv_kernels=(31,)).random_conv(x, _gen(1))
    assert big.shape == x.shape and torch.isfinite(big).all()


def test_blur_smooths_and_keeps_flat_images():
    checker = ((torch.arange(16)[:, None] + torch.arange(16)[None, :]) % 2).float()
    x = torch.stack([checker.expand(3, 16, 16), torch.full((3, 16, 16), 0.3)])
    blurred = ImageAugment(blur_p=1.0, blur_sigma=(1.5, 1.5)).blur(x, _gen(0))
    assert blurred[0].var() < 0.05 * x[0].var()  # the checkerboard is averaged away
    assert torch.allclose(blurred[0].mean(), x[0].mean(), atol=0.02)
    assert torch.allclose(blurred[1], x[1])  # a flat image does not change


def test_blur_probability_selects_images():
    x = torch.rand(64, 1, 10, 10, generator=_gen(3))
    out = ImageAugment(blur_p=0.5, blur_sigma=(1.0, 1.0)).blur(x, _gen(0))
    changed = (out - x).flatten(1).abs().amax(1) > 1e-6
    assert 16 < int(changed.sum()) < 48


def test_feature_augment_is_seeded():
    x = torch.randn(5, 8, generator=_gen(4))
    aug = FeatureAugment()
    assert torch.equal(aug(x, _gen(0)), aug(x, _gen(0)))


def test_feature_augment_drops_and_perturbs_at_the_given_rates():
    x = torch.randn(200, 500, generator=_gen(5)) * 3.0 + 1.0
    out = FeatureAugment(noise=0.3, dropout=0.3)(x, _gen(1))
    dropped = out == 0
    assert abs(dropped.float().mean().item() - 0.3) < 0.01
    # kept features: (x + noise) / (1 - dropout), noise ~ N(0, (0.3 * row std)^2)
    noise = (out * 0.7 - x)[~dropped]
    assert abs(noise.mean().item()) < 0.02
    assert abs(noise.std().item() - 0.3 * x.std(dim=1, correction=0).mean().item()) < 0.02


@pytest.mark.parametrize("kwargs, match", [({"dropout": 1.0}, "dropout must be in"),
                                           ({"dropout": -0.1}, "dropout must be in"),
                                           ({"noise": -1.0}, "noise must be"),
                                           ({"noise": float("nan")}, "noise must be"),
                                           ({"noise": "high"}, "noise must be")])
def test_feature_augment_rejects_bad_rates(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FeatureAugment(**kwargs)


@pytest.mark.parametrize("kwargs, match", [({"scale": (1.2, 0.8)}, "scale must be"),
                                           ({"scale": 0.9}, "scale must be"),
                                           ({"blur_sigma": (0.0, 1.0)}, "blur_sigma must be"),
                                           ({"max_rotation": -5}, "max_rotation must be"),
                                           ({"brightness": 1.5}, "brightness must be"),
                                           ({"hue": 0.7}, "hue must be"),
                                           ({"invert_p": 2}, "invert_p must be"),
                                           ({"jitter_p": "often"}, "jitter_p must be"),
                                           ({"random_conv_p": -0.1}, "random_conv_p must be"),
                                           ({"random_conv_kernels": (2,)},
                                            "random_conv_kernels must be"),
                                           ({"random_conv_kernels": ()},
                                            "random_conv_kernels must be")])
def test_image_augment_rejects_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ImageAugment(**kwargs)


def test_build_augment_picks_by_input_kind():
    assert isinstance(build_augment((3, 8, 8)), ImageAugment)
    assert isinstance(build_augment(None), FeatureAugment)
    x = torch.ones(2, 3)
    assert build_augment(None, None)(x, _gen()) is x
    with pytest.raises(ValueError, match="augment must be"):
        build_augment(None, "strong")
