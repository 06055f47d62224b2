"""UEM (Wang, Du & Zhu, NeurIPS 2024): the estimator, its network, objective and losses.

- :mod:`skucdr.uem.retriever`: :class:`~skucdr.UniversalCDRRetriever`;
- :mod:`skucdr.uem.network`: the embedding network and the domain classifier;
- :mod:`skucdr.uem.objective`: the two training stages (IDSE, CDSM);
- :mod:`skucdr.uem.losses`: one function per equation of the paper.
"""

from .retriever import UniversalCDRRetriever

__all__ = ["UniversalCDRRetriever"]
