"""Memory banks, shared by UEM's objective and TPSNet's (their prototypes come from
:func:`skucdr.cluster.domain_prototypes`)."""

from __future__ import annotations

import torch
from torch.nn import functional as F

__all__ = ["momentum_update_bank"]


@torch.no_grad()
def momentum_update_bank(bank, index, features, momentum):
    """Move memory-bank rows towards new features and re-normalise them (NPID).

    ``bank[index] <- normalize(momentum * bank[index] + (1 - momentum) * features)``,
    in place.
    """
    mixed = momentum * bank[index] + (1 - momentum) * features
    bank[index] = F.normalize(mixed, dim=1)
