"""The retrieval report: mAP@All and P@k per ordered domain pair, as a table."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._sklearn_compat import validate_params
from .._validation import l2_normalize
from ._ranking import (
    check_domain_data,
    check_ks,
    mean_ap,
    precision,
    query_stats,
    warn_no_query,
)
from ._retrieval import CUTOFFS, check_pairs, domain_pairs

# --------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------


@dataclass
class RetrievalReport:
    """Retrieval scores per ordered pair of domains, as returned by :func:`retrieval_report`.

    Attributes
    ----------
    rows : list of dict
        One dict per ordered pair with keys ``query_domain``, ``gallery_domain``,
        ``n_queries`` (queries whose label occurs in the gallery, i.e. the ones scored),
        ``n_gallery``, ``map_all`` (mAP@All, mean over queries), ``map_class_interp``
        (mAP@All as in CoDA/UEM: interpolated, class-balanced) and ``p@k`` for every
        cut-off ``k``. Undefined scores are NaN.
    k : tuple of int
        The precision cut-offs.
    """

    rows: list
    k: tuple = (1, 5, 15)

    @property
    def metric_names(self):
        """Names of the score columns, in display order."""
        return ["map_all", "map_class_interp"] + [f"p@{k}" for k in self.k]

    @property
    def mean(self):
        """dict: mean of every score over the pairs (NaN entries ignored)."""
        out = {}
        for name in self.metric_names:
            values = np.array([row[name] for row in self.rows], dtype=float)
            out[name] = float(np.nanmean(values)) if np.isfinite(values).any() else np.nan
        return out

    def to_frame(self):
        """The rows as a :class:`pandas.DataFrame` (pandas is an optional dependency).

        Returns
        -------
        frame : pandas.DataFrame
            One row per pair, without the mean row.
        """
        try:
            import pandas as pd
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("RetrievalReport.to_frame needs pandas: pip install pandas.") from exc
        return pd.DataFrame(self.rows)

    def _table(self):
        header = ["query", "gallery", "n_queries", "mAP@All", "mAP@All (class, interp.)"]
        header += [f"P@{k}" for k in self.k]
        lines = []
        for row in self.rows:
            lines.append(
                [str(row["query_domain"]), str(row["gallery_domain"]), str(row["n_queries"])]
                + [_fmt(row[name]) for name in self.metric_names]
            )
        mean = self.mean
        lines.append(["mean", "", ""] + [_fmt(mean[name]) for name in self.metric_names])
        return header, lines

    def to_markdown(self):
        """The report as a Markdown table, with a final mean row.

        Returns
        -------
        table : str
        """
        header, lines = self._table()
        out = ["| " + " | ".join(header) + " |"]
        out.append("|" + "|".join(["---"] * 2 + ["---:"] * (len(header) - 2)) + "|")
        out += ["| " + " | ".join(line) + " |" for line in lines]
        return "\n".join(out)

    def __str__(self):
        header, lines = self._table()
        widths = [max(len(c) for c in col) for col in zip(header, *lines)]

        def fmt(cells):
            return "  ".join(
                c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
            ).rstrip()

        rule = "-" * len(fmt(header))
        body = [fmt(line) for line in lines]
        return "\n".join([fmt(header), rule, *body[:-1], rule, body[-1]])

    def __repr__(self):
        return str(self)


def _fmt(value):
    return "nan" if not np.isfinite(value) else f"{value:.4f}"


@validate_params({"k": CUTOFFS, "pairs": ["array-like", None]},
                 prefer_skip_nested_validation=True)
def retrieval_report(embeddings, labels, sample_domain, *, k=(1, 5, 15), pairs=None):
    """Retrieval scores of every ordered pair of domains, in one table.

    For each pair, the gallery is ranked once and the report holds mAP@All averaged over
    queries, CoDA's interpolated class-balanced mAP@All (the one UEM reports) and UCDIR's
    precision at every cut-off.

    Parameters
    ----------
    embeddings : array-like of shape (n_samples, n_features)
        Embeddings of all domains, stacked.
    labels : array-like of shape (n_samples,)
        Class label of every row.
    sample_domain : array-like of shape (n_samples,)
        Domain label of every row.
    k : int or sequence of int, default=(1, 5, 15)
        Precision cut-offs.
    pairs : sequence of (query_domain, gallery_domain), default=None
        Pairs to report. By default every ordered pair of different domains, in order of
        first appearance in ``sample_domain``.

    Returns
    -------
    report : RetrievalReport
        ``str(report)`` is a fixed-width table with a mean row; ``report.rows`` holds the
        numbers; ``report.to_markdown()`` and ``report.to_frame()`` export them.

    Examples
    --------
    >>> import numpy as np
    >>> from skucdr.metrics import retrieval_report
    >>> Z = np.array([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1], [0.1, 0.9]])
    >>> report = retrieval_report(Z, [0, 1, 0, 1], ["a", "a", "b", "b"], k=1)
    >>> report.rows[0]["map_all"], report.rows[0]["p@1"]
    (1.0, 1.0)
    """
    ks, _ = check_ks(k)
    embeddings, labels, sample_domain = check_domain_data(embeddings, labels, sample_domain)
    if pairs is None:
        pairs = domain_pairs(sample_domain, None, None)
    else:
        pairs = check_pairs(pairs, sample_domain)
    Z = l2_normalize(embeddings)
    rows = []
    for a, b in pairs:
        qa, gb = sample_domain == a, sample_domain == b
        stats = query_stats(
            Z[qa], labels[qa], Z[gb], labels[gb], interpolated=(False, True), ks=ks
        )
        if stats.codes.size == 0:
            warn_no_query(f" for the pair {a!r} -> {b!r}", "its scores are NaN")
        row = {
            "query_domain": a,
            "gallery_domain": b,
            "n_queries": int(stats.codes.size),
            "n_gallery": int(gb.sum()),
            "map_all": mean_ap(stats, False, "query"),
            "map_class_interp": mean_ap(stats, True, "class"),
        }
        row.update({f"p@{k_}": precision(stats, k_) for k_ in ks})
        rows.append(row)
    return RetrievalReport(rows=rows, k=ks)


