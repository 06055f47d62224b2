"""Encoders: the first-convolution adaptation and the torchvision ResNet trunk."""

import pytest
import torch
from torch.nn import functional as F

from skucdr.nn.encoders import adapt_first_conv_weight, build_encoder


@pytest.fixture()
def rgb_weight():
    return torch.randn(8, 3, 3, 3, generator=torch.Generator().manual_seed(0))


def test_one_channel_weight_answers_grey_as_the_rgb_filters_answer_grey_rgb(rgb_weight):
    grey = torch.rand(2, 1, 9, 9, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(
        F.conv2d(grey, adapt_first_conv_weight(rgb_weight, 1)),
        F.conv2d(grey.expand(-1, 3, -1, -1), rgb_weight),
    )


@pytest.mark.parametrize("in_channels", [2, 4, 6])
def test_more_channels_repeat_the_rgb_filters_cyclically(rgb_weight, in_channels):
    adapted = adapt_first_conv_weight(rgb_weight, in_channels)
    assert adapted.shape == (8, in_channels, 3, 3)
    for channel in range(in_channels):
        torch.testing.assert_close(adapted[:, channel],
                                   rgb_weight[:, channel % 3] * 3 / in_channels)
    if in_channels == 6:  # an RGB image given twice gets the RGB response
        rgb = torch.rand(2, 3, 9, 9, generator=torch.Generator().manual_seed(2))
        torch.testing.assert_close(F.conv2d(torch.cat([rgb, rgb], 1), adapted),
                                   F.conv2d(rgb, rgb_weight))


def test_three_channels_copy_and_bad_shapes(rgb_weight):
    adapted = adapt_first_conv_weight(rgb_weight, 3)
    assert torch.equal(adapted, rgb_weight) and adapted is not rgb_weight
    with pytest.raises(ValueError, match="RGB convolution"):
        adapt_first_conv_weight(torch.zeros(8, 4, 3, 3), 1)


def test_resnet_keeps_pretrained_weights_for_every_channel_count(tmp_path):
    torchvision = pytest.importorskip("torchvision", reason="torchvision not installed")
    torch.manual_seed(0)
    reference = torchvision.models.resnet18(weights=None).eval()
    path = tmp_path / "resnet18.pt"
    torch.save(reference.state_dict(), path)
    rgb = torch.rand(2, 3, 32, 32)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    trunk = torch.nn.Sequential(*list(reference.children())[:-1])
    with torch.no_grad():
        expected_rgb = trunk((rgb - mean) / std).flatten(1)
        expected_grey = trunk((rgb[:, :1].expand(-1, 3, -1, -1) - mean) / std).flatten(1)
        for shape, x, expected in (((3, 32, 32), rgb, expected_rgb),
                                   ((1, 32, 32), rgb[:, :1], expected_grey)):
            encoder = build_encoder("resnet18", image_shape=shape, n_features=None,
                                    encoder_weights=path).eval()
            torch.testing.assert_close(encoder(x), expected)
        four = build_encoder("resnet18", image_shape=(4, 32, 32), n_features=None,
                             encoder_weights=path)
        torch.testing.assert_close(four.body[0].weight,
                                   adapt_first_conv_weight(reference.conv1.weight, 4))
    torch.save({"conv1.weight": reference.conv1.weight}, tmp_path / "partial.pt")
    with pytest.raises(ValueError, match="does not fit resnet18"):
        build_encoder("resnet18", image_shape=(3, 32, 32), n_features=None,
                      encoder_weights=tmp_path / "partial.pt")


def test_resnet_without_torchvision_says_so(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_torchvision(name, *args, **kwargs):
        if name == "torchvision":
            raise ImportError("No module named 'torchvision'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_torchvision)
    with pytest.raises(ImportError, match="needs torchvision"):
        build_encoder("resnet18", image_shape=(3, 32, 32), n_features=None)


class _SameDeviceOnly(torch.nn.Module):
    """Fails like a GPU module fed a CPU batch (torch's own check is skipped on "meta")."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(192, 5)

    def forward(self, x):
        if x.device != self.linear.weight.device:
            raise RuntimeError("Expected all tensors to be on the same device")
        return self.linear(x.flatten(1))


def test_user_module_is_probed_on_its_own_device():
    # a user's module already on another device (a GPU; "meta" stands in for it here) is
    # probed there instead of failing on a CPU example batch
    module = _SameDeviceOnly().to("meta")
    encoder = build_encoder(module, image_shape=(3, 8, 8), n_features=192,
                            example=torch.rand(2, 3, 8, 8))
    assert encoder.feature_dim == 5
    assert module.linear.weight.device.type == "meta"  # the user's module is untouched
