"""Retrieval metrics for cross-domain retrieval: mAP, precision@k, reports and a scorer.

Every function ranks a gallery for each query by **cosine similarity** (rows of both
embedding matrices are L2-normalised inside) and compares class labels: a gallery item is
*relevant* to a query when it has the query's label. Queries and gallery are disjoint (in
cross-domain retrieval they come from different domains), so no self-match is removed.

Conventions shared by every function of this module
---------------------------------------------------
- **Similarities** are computed in float32, query chunk by query chunk, so that memory
  stays bounded (about ``_CHUNK_ELEMENTS`` similarities at a time) whatever the number of
  queries.
- **Ties** are broken deterministically: gallery items with equal float32 similarity are
  ranked by increasing gallery row index (a stable order). Published code (UCDIR, CoDA)
  uses ``np.argsort(-scores)``, whose order among ties is arbitrary; with continuous
  embeddings ties essentially never occur, so the numbers agree.
- **Queries whose label is absent from the gallery** (no relevant item, ``R_q = 0``) are
  excluded: their AP is undefined. This is what CoDA's ``nanmean`` does for the class
  average, and it is the right behaviour for the partial and open-set settings, where such
  queries are "private" and scored separately. When no query remains, the result is NaN
  and an :class:`~sklearn.exceptions.UndefinedMetricWarning` is emitted.

The definitions follow the papers' released code: precision@k is ``retrieval_precision_cal``
of UCDIR (also ProtoOT, DG-UCDIR), and ``average="class", interpolated=True`` is
``cal_map_sda`` of CoDA, the mAP@All that UEM says it follows.
"""

from ._report import RetrievalReport, retrieval_report
from ._retrieval import (
    cross_domain_map,
    mean_average_precision,
    precision_at_k,
    within_domain_map,
)
from ._scorer import make_label_free_scorer, make_map_scorer

__all__ = [
    "RetrievalReport",
    "cross_domain_map",
    "make_label_free_scorer",
    "make_map_scorer",
    "mean_average_precision",
    "precision_at_k",
    "retrieval_report",
    "within_domain_map",
]
