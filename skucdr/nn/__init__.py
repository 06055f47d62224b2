"""PyTorch building blocks shared by both methods (no scikit-learn code here).

- :mod:`skucdr.nn.encoders`: image and feature encoders, torchvision ResNets;
- :mod:`skucdr.nn.augment`: training augmentation on whole batches;
- :mod:`skucdr.nn.domain_norm`: batch norm with statistics per domain;
- :mod:`skucdr.nn.phase`: phase-only images on tensors;
- :mod:`skucdr.nn.prototypes`: memory banks and cross-domain prototypes;
- :mod:`skucdr.nn.training`: the skorch training engine and the objective interface;
- :mod:`skucdr.nn.checkpoint`: the training state saved after every epoch, and resuming;
- :mod:`skucdr.nn.devices`: devices, and moving a fitted net between them;
- :mod:`skucdr.nn.clip_loading`: ``open_clip`` models from local files.

Each method's own network, objective and losses live in :mod:`skucdr.uem` and
:mod:`skucdr.tpsnet`.
"""

from .augment import FeatureAugment, ImageAugment
from .domain_norm import DomainBatchNorm, convert_domain_batchnorm, domain_codes
from .phase import phase_only

__all__ = [
    "DomainBatchNorm",
    "FeatureAugment",
    "ImageAugment",
    "convert_domain_batchnorm",
    "domain_codes",
    "phase_only",
]
