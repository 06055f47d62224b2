"""PrototypeClusterer: per-domain spherical k-means merged across domains, as an
estimator."""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Mapping

import numpy as np
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    ClusterMixin,
    TransformerMixin,
)
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from .._domains import check_domain_input, unpack_domains
from .._sklearn_compat import Interval, StrOptions, _fit_context
from ._kmeans import (
    choose_n_prototypes_elbow,
    l2_normalize,
    reject_sparse,
    seed_from,
    spherical_kmeans,
    thread_limit,
)
from ._merge import MERGE_RULES, merge_prototypes

try:  # faiss is a dependency, but keep a pure scikit-learn path (macOS OpenMP clashes).
    import faiss
except ImportError:  # pragma: no cover - exercised only without faiss
    faiss = None


# --------------------------------------------------------------------------------------
# the estimator
# --------------------------------------------------------------------------------------
class PrototypeClusterer(
    ClassNamePrefixFeaturesOutMixin, TransformerMixin, ClusterMixin, BaseEstimator
):
    """Per-domain spherical k-means with UEM's translate-match-merge of prototypes.

    Every domain is clustered separately (spherical k-means on L2-normalised rows, ``k``
    chosen by the elbow of the inertia curve or given). The prototypes of the other domains
    are then translated into the first domain's frame by the difference of the domain means
    (UEM Eq. 8), matched to the running shared set with the Hungarian algorithm and merged
    when closer than any two prototypes of one set (Eq. 9); unmatched and unmerged
    prototypes are kept, so clusters private to one domain survive. With more than two
    domains, domains are merged one after the other, in order of first appearance, into
    the running shared set.

    Parameters
    ----------
    n_prototypes : "elbow", int or dict, default="elbow"
        Prototypes per domain: chosen per domain with
        :func:`choose_n_prototypes_elbow` (``k`` in ``[2, min(max_prototypes, n_d // 10)]``),
        the same given number for every domain, or a dict ``{domain: k or "elbow"}``. A fixed ``k``
        above a domain's number of categories splits some of them; the close halves then shrink
        Eq. 9's threshold and few prototypes merge.
    merge : bool, default=True
        Merge matched prototypes across domains. With False the (translated) prototypes of
        all domains are concatenated, domain after domain.
    merge_rule : {"eq9", "mutual"}, default="eq9"
        When a matched pair merges (see :func:`merge_prototypes`): Eq. 9's threshold alone,
        or Eq. 9 and mutual nearest neighbours.
    max_prototypes : int, default=50
        Largest ``k`` the elbow scans.
    n_iter : int, default=20
        k-means iterations per run.
    n_redo : int, default=3
        k-means runs per ``k``; the best is kept.
    random_state : int, RandomState instance or None, default=None
        Seeds k-means.
    n_jobs : int, default=None
        Threads for faiss/BLAS during ``fit``, set with ``threadpoolctl``; None keeps the
        libraries' defaults (all cores).

    Attributes
    ----------
    cluster_centers_ : ndarray of shape (n_shared, n_features)
        Shared prototypes in the first domain's frame (not re-normalised).
    domain_centers_ : dict
        ``{domain: cluster_centers_ + (domain_means_[domain] - domain_means_[first])}``, the
        shared prototypes in each domain's frame.
    domain_means_ : dict
        Mean of every domain's L2-normalised rows.
    n_prototypes_ : dict
        ``{domain: k}``, the number of k-means prototypes of every domain.
    local_to_shared_ : dict
        ``{domain: ndarray of shape (k_d,)}``, the shared id of every local k-means cluster.
    merged_pairs_ : ndarray of shape (n_merged, 2) or dict
        With one or two domains: the merged ``(first_domain_idx, second_domain_idx)`` local
        prototype indices (empty with one domain or ``merge=False``). With more domains: a
        dict ``{domain: ndarray (n_merged_d, 2)}`` for every domain after the first, rows
        ``(shared id in the running set, local index in domain)``; the shared id of a first
        domain prototype is its local index.
    labels_ : ndarray of shape (n_samples,)
        Shared prototype id of every training row (same rule as :meth:`predict`).
    domains_ : list
        Domains seen in ``fit``, in order of first appearance (the first is the frame).
    n_features_in_ : int
        Number of features seen in ``fit``.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen in ``fit``, when ``X`` has string column names.

    See Also
    --------
    merge_prototypes : The two-domain merge rule.
    spherical_kmeans : The per-domain clustering.
    detect_private_queries : Open-set detection built on the same rules.

    Notes
    -----
    ``sample_domain`` is requested by ``fit``, ``transform`` and ``predict`` at class level,
    so with ``sklearn.set_config(enable_metadata_routing=True)`` it reaches the clusterer
    inside a Pipeline or GridSearchCV without ``set_*_request`` calls.

    Examples
    --------
    >>> import numpy as np
    >>> from skucdr import PrototypeClusterer
    >>> rng = np.random.RandomState(0)
    >>> centers = rng.normal(size=(3, 8))
    >>> Xa = np.repeat(centers, 20, axis=0) + 0.05 * rng.normal(size=(60, 8))
    >>> Xb = np.repeat(centers[:2], 20, axis=0) + 0.05 * rng.normal(size=(40, 8))
    >>> est = PrototypeClusterer(n_prototypes=3, random_state=0)
    >>> est.fit({"a": Xa, "b": Xb}).cluster_centers_.shape[1]
    8
    """

    __metadata_request__fit = {"sample_domain": True}
    __metadata_request__transform = {"sample_domain": True}
    __metadata_request__predict = {"sample_domain": True}

    _parameter_constraints: dict = {
        "n_prototypes": [
            Interval(numbers.Integral, 1, None, closed="left"),
            StrOptions({"elbow"}),
            dict,
        ],
        "merge": ["boolean"],
        "merge_rule": [StrOptions(set(MERGE_RULES))],
        "max_prototypes": [Interval(numbers.Integral, 2, None, closed="left")],
        "n_iter": [Interval(numbers.Integral, 1, None, closed="left")],
        "n_redo": [Interval(numbers.Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
        "n_jobs": [Interval(numbers.Integral, 1, None, closed="left"), None],
    }

    def __init__(
        self,
        n_prototypes="elbow",
        *,
        merge=True,
        merge_rule="eq9",
        max_prototypes=50,
        n_iter=20,
        n_redo=3,
        random_state=None,
        n_jobs=None,
    ):
        self.n_prototypes = n_prototypes
        self.merge = merge
        self.merge_rule = merge_rule
        self.max_prototypes = max_prototypes
        self.n_iter = n_iter
        self.n_redo = n_redo
        self.random_state = random_state
        self.n_jobs = n_jobs

    # ---- fit -------------------------------------------------------------------------
    def _cluster_domain(self, X_d, domain, seed):
        n_d = len(X_d)
        kw = {"n_iter": self.n_iter, "n_redo": self.n_redo, "random_state": seed}
        n_prototypes = self.n_prototypes
        if isinstance(n_prototypes, dict):
            if domain not in n_prototypes:
                raise ValueError(
                    f"n_prototypes is a dict without an entry for domain {domain!r}; it has "
                    f"{sorted(map(str, n_prototypes))}."
                )
            n_prototypes = n_prototypes[domain]
        if isinstance(n_prototypes, str) and n_prototypes == "elbow":
            k = choose_n_prototypes_elbow(
                X_d, k_min=2, k_max=max(2, min(self.max_prototypes, n_d // 10)), **kw
            )
        else:
            k = int(n_prototypes)
            if k > n_d:
                raise ValueError(
                    f"n_prototypes={k} is larger than the number of samples of domain "
                    f"{domain!r} (n_samples={n_d}): lower n_prototypes or use 'elbow'."
                )
        centers, _, _ = spherical_kmeans(X_d, k, **kw)
        return centers

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None, *, sample_domain=None):
        """Cluster every domain and merge the prototypes across domains.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or Mapping
            Feature vectors, or a mapping ``{domain: X_domain}``.
        y : None
            Ignored.
        sample_domain : array-like of shape (n_samples,), default=None
            Domain of every row; None means a single domain.

        Returns
        -------
        self : PrototypeClusterer
        """
        reject_sparse(X)
        data = check_domain_input(self, X, sample_domain, reset=True)
        rng = check_random_state(self.random_state)
        Xn = l2_normalize(data.X)
        domains = data.domain_order
        first = domains[0]

        centers, means = {}, {}
        with thread_limit(self.n_jobs):
            for domain in domains:
                X_d = Xn[data.sample_domain == domain]
                means[domain] = X_d.mean(axis=0, dtype=np.float64)
                centers[domain] = self._cluster_domain(X_d, domain, seed_from(rng))

        shared = centers[first].astype(np.float64)
        local_to_shared = {first: np.arange(len(shared), dtype=np.int64)}
        pairs = {}
        for domain in domains[1:]:
            if self.merge:
                result = merge_prototypes(
                    shared, centers[domain], means[first], means[domain], rule=self.merge_rule
                )
                shared = result.prototypes
                local_to_shared[domain] = result.b_to_shared
                pairs[domain] = result.pairs
            else:
                moved = centers[domain] + (means[first] - means[domain])
                local_to_shared[domain] = len(shared) + np.arange(len(moved), dtype=np.int64)
                shared = np.concatenate([shared, moved], axis=0)
                pairs[domain] = np.empty((0, 2), dtype=np.int64)

        self.domains_ = list(domains)
        self.domain_means_ = means
        self.n_prototypes_ = {domain: len(c) for domain, c in centers.items()}
        self.local_to_shared_ = local_to_shared
        if len(domains) <= 2:
            self.merged_pairs_ = (
                pairs[domains[1]] if len(domains) == 2 else np.empty((0, 2), dtype=np.int64)
            )
        else:
            self.merged_pairs_ = pairs
        self.cluster_centers_ = shared.astype(np.float32)
        self.domain_centers_ = {
            domain: (shared + (means[domain] - means[first])).astype(np.float32)
            for domain in domains
        }
        self._n_features_out = len(shared)
        self.labels_ = np.argmax(self._similarities(Xn, data.sample_domain), axis=1)
        return self

    # ---- post-fit --------------------------------------------------------------------
    def _similarities(self, Xn, sample_domain):
        """Cosine similarity of normalised rows to the shared prototypes in their frames."""
        out = np.empty((len(Xn), self._n_features_out), dtype=np.float32)
        unseen = ~np.isin(sample_domain, self.domains_)
        for i, domain in enumerate(self.domains_):
            rows = sample_domain == domain
            if i == 0:
                rows |= unseen
            if rows.any():
                protos = l2_normalize(self.domain_centers_[domain].astype(np.float64))
                out[rows] = Xn[rows].astype(np.float64) @ protos.T
        return out

    def _post_fit_input(self, X, sample_domain):
        check_is_fitted(self)
        reject_sparse(X)
        given = sample_domain is not None or isinstance(X, Mapping)
        data = check_domain_input(self, X, sample_domain, reset=False)
        if given:
            unseen = [d for d in data.domain_order if d not in self.domains_]
            if unseen:
                warnings.warn(
                    f"Domain(s) {unseen} were not seen in fit; their rows are compared with "
                    f"the prototypes in the frame of the first domain {self.domains_[0]!r}.",
                    UserWarning,
                    stacklevel=3,
                )
        return data

    def transform(self, X, *, sample_domain=None):
        """Cosine similarity of every row to every shared prototype, in the row's frame.

        Rows of domain ``d`` are compared with ``domain_centers_[d]``; rows of a domain not
        seen in ``fit`` (and all rows when ``sample_domain`` is None and the fitted domains
        are named) use the first domain's frame, ``cluster_centers_``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or Mapping
            Feature vectors, or a mapping ``{domain: X_domain}``.
        sample_domain : array-like of shape (n_samples,), default=None
            Domain of every row.

        Returns
        -------
        similarities : ndarray of shape (n_samples, n_shared), float32, or dict
            A mapping of such arrays when ``X`` is a mapping.
        """
        data = self._post_fit_input(X, sample_domain)
        sims = self._similarities(l2_normalize(data.X), data.sample_domain)
        if data.from_mapping:
            return unpack_domains(sims, data.sample_domain)
        return sims

    def predict(self, X, *, sample_domain=None):
        """Shared prototype id of every row: the most cosine-similar prototype in its frame.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or Mapping
            Feature vectors, or a mapping ``{domain: X_domain}``.
        sample_domain : array-like of shape (n_samples,), default=None
            Domain of every row (see :meth:`transform` for unseen domains).

        Returns
        -------
        labels : ndarray of shape (n_samples,), int64, or dict
            A mapping of such arrays when ``X`` is a mapping.
        """
        data = self._post_fit_input(X, sample_domain)
        labels = np.argmax(self._similarities(l2_normalize(data.X), data.sample_domain), axis=1)
        if data.from_mapping:
            return unpack_domains(labels, data.sample_domain)
        return labels

    def fit_transform(self, X, y=None, *, sample_domain=None):
        """Fit, then return the similarities of the training rows to the shared prototypes.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or Mapping
            Feature vectors, or a mapping ``{domain: X_domain}``.
        y : None
            Ignored.
        sample_domain : array-like of shape (n_samples,), default=None
            Domain of every row.

        Returns
        -------
        similarities : ndarray of shape (n_samples, n_shared) or dict
            Cosine similarities to the shared prototypes (see :meth:`transform`).
        """
        return self.fit(X, sample_domain=sample_domain).transform(X, sample_domain=sample_domain)

    def fit_predict(self, X, y=None, *, sample_domain=None):
        """Fit, then return ``labels_``, the shared prototype id of every training row.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or Mapping
            Feature vectors, or a mapping ``{domain: X_domain}``.
        y : None
            Ignored.
        sample_domain : array-like of shape (n_samples,), default=None
            Domain of every row.

        Returns
        -------
        labels : ndarray of shape (n_samples,) or dict
            Shared prototype ids; a mapping of such arrays when ``X`` is a mapping.
        """
        self.fit(X, sample_domain=sample_domain)
        if isinstance(X, Mapping):
            return self.predict(X)
        return self.labels_

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.dict = True
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags

