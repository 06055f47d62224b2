"""PyTorch building blocks of skucdr's retrievers (no scikit-learn code here).

Submodules: :mod:`skucdr.nn.phase` (phase-only images on tensors),
:mod:`skucdr.nn.domain_norm` (batch norm with statistics per domain), :mod:`skucdr.nn.text`
(frozen text towers and learnable domain prompts), :mod:`skucdr.nn.tpsnet_modules` (TPSNet
network pieces) and :mod:`skucdr.nn.tpsnet_losses` (TPSNet losses, one function per
equation).
"""

from .domain_norm import DomainBatchNorm, convert_domain_batchnorm, domain_codes
from .phase import phase_only
from .text import BuiltinTextTower, OpenCLIPTextTower, PromptLearner, TextTower, encode_text
from .tpsnet_losses import (
    image_to_text_contrastive,
    label_smoothed_i2t_ce,
    momentum_update_prototypes,
    prototype_ce,
    text_to_image_contrastive,
)
from .tpsnet_modules import DualPriorFusion, PhaseCNN, TextQueryCrossAttention, TokenProjector

__all__ = [
    "BuiltinTextTower",
    "DomainBatchNorm",
    "DualPriorFusion",
    "OpenCLIPTextTower",
    "PhaseCNN",
    "PromptLearner",
    "TextQueryCrossAttention",
    "TextTower",
    "TokenProjector",
    "convert_domain_batchnorm",
    "domain_codes",
    "encode_text",
    "image_to_text_contrastive",
    "label_smoothed_i2t_ce",
    "momentum_update_prototypes",
    "phase_only",
    "prototype_ce",
    "text_to_image_contrastive",
]
