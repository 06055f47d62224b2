"""TPSNet (Yang, Xue, Zhu & Fang, CVPR 2026): the estimator, its network, objective,
losses and text towers.

- :mod:`skucdr.tpsnet.retriever`: :class:`~skucdr.TextPhaseRetriever`;
- :mod:`skucdr.tpsnet.network`: the dual-prior network (phase CNN, fusion, text-query
  cross-attention) and :class:`~skucdr.tpsnet.network.TPSNetModule`;
- :mod:`skucdr.tpsnet.objective`: the warm-up, DPG and TPDP training phases;
- :mod:`skucdr.tpsnet.losses`: one function per loss of the paper;
- :mod:`skucdr.tpsnet.text`: frozen text towers and learnable domain prompts.
"""

from .retriever import TextPhaseRetriever

__all__ = ["TextPhaseRetriever"]
