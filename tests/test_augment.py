"""Batched, seeded augmentation (skucdr.nn.augment)."""

import pytest
import torch

from skucdr.nn.augment import FeatureAugment, ImageAugment, build_augment


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_image_augment_is_seeded_and_stays_in_range():
    x = torch.rand(6, 3, 16, 16, generator=_gen(1))
    aug = ImageAugment(blur_p=0.5)
    a, b = aug(x, _gen(0)), aug(x, _gen(0))
    assert torch.equal(a, b)
    assert not torch.equal(a, aug(x, _gen(1)))
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1


def test_blur_off_draws_no_randomness():
    # blur_p=0 must leave the random stream (and so earlier results) untouched
    x = torch.rand(4, 3, 12, 12, generator=_gen(2))
    aug = ImageAugment()
    gen = _gen(0)
    expected = aug.photometric(aug.geometric(x, gen), gen)
    assert torch.equal(aug(x, _gen(0)), expected)


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


def test_build_augment_picks_by_input_kind():
    assert isinstance(build_augment((3, 8, 8)), ImageAugment)
    assert isinstance(build_augment(None), FeatureAugment)
    x = torch.ones(2, 3)
    assert build_augment(None, None)(x, _gen()) is x
    with pytest.raises(ValueError, match="augment must be"):
        build_augment(None, "strong")
