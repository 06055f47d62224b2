"""UEM's network: the embedding network and the domain classifier of Eq. 13."""

from __future__ import annotations

from torch import nn

from .losses import GradientReversal

__all__ = ["UEMModule"]


class UEMModule(nn.Module):
    """The trainable parts of UEM: the embedding network and the domain classifier.

    Parameters
    ----------
    embedder : torch.nn.Module
        Maps a batch to L2-normalised embeddings of width ``n_components``.
    n_components : int
        Embedding width.
    n_domains : int
        Number of domains the classifier tells apart.
    hidden : int, default=256
        Width of the classifier's hidden layer (the paper: "two fully-connected layers").
    """

    def __init__(self, embedder, n_components, n_domains, hidden=256):
        super().__init__()
        self.embedder = embedder
        self.discriminator = nn.Sequential(
            GradientReversal(1.0),
            nn.Linear(n_components, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, max(2, n_domains)),
        )

    def forward(self, x):
        return self.embedder(x)
