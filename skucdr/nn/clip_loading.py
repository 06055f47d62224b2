"""Loading ``open_clip`` models from local files (never downloaded), for the image
encoders of :mod:`skucdr.nn.encoders` and the text towers of :mod:`skucdr.tpsnet.text`."""

from __future__ import annotations

import os

__all__ = ["import_open_clip", "load_local_open_clip"]


def import_open_clip():
    """The ``open_clip`` package, or an ``ImportError`` saying how to install it."""
    try:
        import open_clip
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "open_clip models need the optional dependency open_clip: "
            "pip install 'skucdr[clip]' (or open_clip_torch)."
        ) from exc
    return open_clip


def load_local_open_clip(model_name, checkpoint_path, *, device="cpu"):
    """An ``open_clip`` model with the weights of a LOCAL checkpoint (never downloaded);
    a ``FileNotFoundError`` when the file is not there."""
    open_clip = import_open_clip()
    checkpoint_path = os.fspath(checkpoint_path)
    if not os.path.isfile(checkpoint_path):
        raise FileNotFoundError(
            f"No checkpoint file at {checkpoint_path!r}; from_pretrained only loads "
            "local weights."
        )
    model, _, _ = open_clip.create_model_and_transforms(
        model_name, pretrained=checkpoint_path, device=device
    )
    return model
