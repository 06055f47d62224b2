"""Cross-validation splitters for multi-domain data.

Cross-domain retrieval is scored on pairs of domains, so every test fold must hold every
domain. A plain ``KFold`` on data sorted by domain (the layout :func:`skucdr.pack_domains`
produces) gives single-domain test folds, on which cross-domain mAP is undefined.
"""

from __future__ import annotations

import numbers

import numpy as np
from sklearn import get_config
from sklearn.model_selection import BaseCrossValidator, StratifiedKFold

__all__ = ["DomainStratifiedKFold"]


def _n_rows(X):
    if hasattr(X, "shape") and len(X.shape) > 0:
        return int(X.shape[0])
    return len(X)


class DomainStratifiedKFold(BaseCrossValidator):
    """K-fold cross-validation stratified on the domain of each row.

    Every test fold holds about ``1 / n_splits`` of the rows of every domain, so that
    cross-domain retrieval (queries from one domain, gallery from another) can be scored
    on each fold, even when the rows are sorted by domain. Class labels are not used for
    splitting (the setting is unsupervised).

    The domains reach :meth:`split` as the ``sample_domain`` metadata: with
    ``sklearn.set_config(enable_metadata_routing=True)``, ``cross_validate(...,
    params={"sample_domain": d})`` and ``GridSearchCV(...).fit(X, y, sample_domain=d)``
    route it here, because the splitter requests it.

    Parameters
    ----------
    n_splits : int, default=5
        Number of folds. Must be at least 2, and no domain may have fewer rows.
    shuffle : bool, default=False
        Whether to shuffle each domain's rows before splitting them into folds.
    random_state : int, RandomState instance or None, default=None
        Seeds the shuffling when ``shuffle=True``; must be None otherwise (as in
        :class:`~sklearn.model_selection.StratifiedKFold`).

    See Also
    --------
    sklearn.model_selection.StratifiedKFold : Used internally, with the domains as strata.
    skucdr.metrics.make_map_scorer : The matching cross-domain mAP scorer.

    Examples
    --------
    >>> import numpy as np
    >>> from skucdr.model_selection import DomainStratifiedKFold
    >>> X = np.zeros((6, 2))
    >>> domains = np.array(["a", "a", "a", "b", "b", "b"])
    >>> cv = DomainStratifiedKFold(n_splits=3)
    >>> for train, test in cv.split(X, sample_domain=domains):
    ...     print(test, domains[test])
    [0 3] ['a' 'b']
    [1 4] ['a' 'b']
    [2 5] ['a' 'b']
    """

    __metadata_request__split = {"sample_domain": True}

    def __init__(self, n_splits=5, *, shuffle=False, random_state=None):
        if not isinstance(n_splits, numbers.Integral) or isinstance(n_splits, bool):
            raise TypeError(f"n_splits must be an int >= 2, got {n_splits!r}.")
        if n_splits < 2:
            raise ValueError(f"n_splits must be at least 2, got {n_splits}.")
        if not isinstance(shuffle, (bool, np.bool_)):
            raise TypeError(f"shuffle must be True or False, got {shuffle!r}.")
        if not shuffle and random_state is not None:
            raise ValueError(
                "Setting random_state has no effect since shuffle is False; leave "
                "random_state=None or set shuffle=True."
            )
        self.n_splits = int(n_splits)
        self.shuffle = shuffle
        self.random_state = random_state

    def split(self, X, y=None, groups=None, *, sample_domain=None):
        """Generate train/test indices, every test fold holding every domain.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)
            Data; only its number of rows is used.
        y : array-like of shape (n_samples,), default=None
            Ignored (present for API compatibility).
        groups : array-like of shape (n_samples,), default=None
            Ignored (present for API compatibility).
        sample_domain : array-like of shape (n_samples,)
            Domain label of every row. Required.

        Yields
        ------
        train : ndarray of int
            Row indices of the training set of the fold.
        test : ndarray of int
            Row indices of the test set of the fold.
        """
        n_samples = _n_rows(X)
        sample_domain = self._check_sample_domain(sample_domain, n_samples)
        folds = StratifiedKFold(self.n_splits, shuffle=self.shuffle, random_state=self.random_state)
        yield from folds.split(np.zeros((n_samples, 1)), sample_domain)

    def _check_sample_domain(self, sample_domain, n_samples):
        if sample_domain is None:
            state = "on" if get_config().get("enable_metadata_routing", False) else "OFF"
            raise ValueError(
                f"{type(self).__name__}.split needs sample_domain, the domain of every row. "
                "Inside cross_validate / GridSearchCV it arrives through metadata routing: "
                "call sklearn.set_config(enable_metadata_routing=True) and pass "
                "sample_domain (cross_validate(..., params={'sample_domain': d}) or "
                f"GridSearchCV(...).fit(X, y, sample_domain=d)). Metadata routing is "
                f"currently {state}."
            )
        sample_domain = np.asarray(sample_domain)
        if sample_domain.ndim != 1 or sample_domain.shape[0] != n_samples:
            raise ValueError(
                f"sample_domain has shape {sample_domain.shape}; expected ({n_samples},), "
                "one domain label per row of X."
            )
        if sample_domain.dtype.kind == "O":
            sample_domain = sample_domain.astype(str)
        domains, counts = np.unique(sample_domain, return_counts=True)
        too_small = {
            (d.item() if isinstance(d, np.generic) else d): int(c)
            for d, c in zip(domains, counts)
            if c < self.n_splits
        }
        if too_small:
            raise ValueError(
                f"n_splits={self.n_splits} needs at least {self.n_splits} rows per domain so "
                f"that every test fold holds every domain; these domains have fewer: "
                f"{too_small}."
            )
        return sample_domain

    def get_n_splits(self, X=None, y=None, groups=None, *, sample_domain=None):
        """Return the number of folds.

        Parameters
        ----------
        X, y, groups, sample_domain : object
            Ignored (present for API compatibility).

        Returns
        -------
        n_splits : int
        """
        return self.n_splits
