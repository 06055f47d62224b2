"""Scorers for model selection: cross-domain mAP and the label-free score, with
sample_domain requested through metadata routing."""

from __future__ import annotations

import inspect

import numpy as np
from sklearn import get_config
from sklearn.utils.metadata_routing import MetadataRequest, get_routing_for_object

from ._ranking import (
    check_map_params,
)
from ._retrieval import cross_domain_map

# --------------------------------------------------------------------------------------
# Scorer
# --------------------------------------------------------------------------------------


def _transform_consumes_domain(estimator):
    """Whether ``estimator.transform`` should be given ``sample_domain``."""
    params = inspect.signature(estimator.transform).parameters
    if "sample_domain" in params:
        return True
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        # A meta-estimator (e.g. Pipeline) forwards metadata only to steps that request it.
        routing = get_routing_for_object(estimator)
        return bool(routing.consumes(method="transform", params=["sample_domain"]))
    return False


class _DomainScorer:
    """What every skucdr scorer shares: ``sample_domain`` requested through metadata
    routing, and the estimator's embeddings of the scored rows."""

    def _check_call(self, estimator, sample_domain, kwargs):
        if kwargs:
            raise TypeError(
                f"{self!r} got unexpected metadata {sorted(kwargs)}; only sample_domain is used."
            )
        if sample_domain is None:
            state = "on" if get_config().get("enable_metadata_routing", False) else "OFF"
            raise ValueError(
                f"{self!r} received no sample_domain. The score compares domains, so it "
                "needs the domain of every row: enable metadata routing with "
                "sklearn.set_config(enable_metadata_routing=True) (or inside "
                "`with sklearn.config_context(enable_metadata_routing=True):`) and pass "
                "sample_domain=... to fit / cross_validate(params=...). Metadata routing "
                f"is currently {state}."
            )
        if not hasattr(estimator, "transform"):
            raise TypeError(
                f"{self!r} needs an estimator with a transform method that returns "
                f"embeddings; {type(estimator).__name__} has none."
            )

    @staticmethod
    def _transform(estimator, X, sample_domain):
        if _transform_consumes_domain(estimator):
            return estimator.transform(X, sample_domain=sample_domain)
        return estimator.transform(X)

    def get_metadata_routing(self):
        """Request ``sample_domain`` for ``score`` (public metadata-routing API).

        Returns
        -------
        request : sklearn.utils.metadata_routing.MetadataRequest
        """
        request = MetadataRequest(owner=self)
        request.score.add_request(param="sample_domain", alias=True)
        return request

    def _routing_repr(self):
        return repr(self)


class _MapScorer(_DomainScorer):
    """Scorer returning :func:`cross_domain_map` of an estimator's embeddings.

    Built by :func:`make_map_scorer`; see there.
    """

    def __init__(self, *, query_domain, gallery_domain, k, average, interpolated):
        self.query_domain = query_domain
        self.gallery_domain = gallery_domain
        self.k = k
        self.average = average
        self.interpolated = interpolated

    def _kwargs(self):
        return {
            "query_domain": self.query_domain,
            "gallery_domain": self.gallery_domain,
            "k": self.k,
            "average": self.average,
            "interpolated": self.interpolated,
        }

    def __call__(self, estimator, X, y, sample_domain=None, **kwargs):
        """Embed ``X`` with ``estimator.transform`` and score the retrieval.

        Parameters
        ----------
        estimator : fitted estimator with a ``transform`` method
            Its ``transform(X, sample_domain=...)`` gives the embeddings.
        X : array-like of shape (n_samples, ...)
            Rows of every domain, flat form.
        y : array-like of shape (n_samples,)
            Class labels (only used for scoring).
        sample_domain : array-like of shape (n_samples,)
            Domain of every row; delivered by metadata routing inside scikit-learn's
            model selection tools.
        **kwargs : dict
            Other metadata; none is supported.

        Returns
        -------
        score : float
            Mean mAP over ordered domain pairs (greater is better).
        """
        self._check_call(estimator, sample_domain, kwargs)
        if y is None:
            raise ValueError(f"{self!r} needs the class labels y to compute mAP; without "
                             "labels, use make_label_free_scorer().")
        embeddings = self._transform(estimator, X, sample_domain)
        return cross_domain_map(embeddings, y, sample_domain, **self._kwargs())

    def __repr__(self):
        defaults = {
            name: param.default
            for name, param in inspect.signature(make_map_scorer).parameters.items()
        }
        args = ", ".join(
            f"{name}={value!r}"
            for name, value in self._kwargs().items()
            if not (type(value) is type(defaults[name]) and value == defaults[name])
        )
        return f"make_map_scorer({args})"


def make_map_scorer(
    *, query_domain=None, gallery_domain=None, k=None, average="query", interpolated=False
):
    """Make a scorer for ``GridSearchCV(scoring=...)`` and ``cross_validate(scoring=...)``.

    The scorer embeds the test rows with ``estimator.transform(X, sample_domain=...)``
    and returns :func:`cross_domain_map` of the embeddings (greater is better). It
    receives ``sample_domain`` through scikit-learn's metadata routing, which must be
    enabled: ``sklearn.set_config(enable_metadata_routing=True)``. Estimators whose
    ``transform`` does not take ``sample_domain`` (e.g. ``PCA``) are called with ``X``
    only.

    Parameters
    ----------
    query_domain : domain label or list of them, default=None
        Restrict the query side of the pairs (default: every domain).
    gallery_domain : domain label or list of them, default=None
        Restrict the gallery side of the pairs (default: every domain).
    k : int, default=None
        See :func:`mean_average_precision`.
    average : {"query", "class"}, default="query"
        See :func:`mean_average_precision`.
    interpolated : bool, default=False
        See :func:`mean_average_precision`.

    Returns
    -------
    scorer : callable
        ``scorer(estimator, X, y, sample_domain=None) -> float`` with a
        ``get_metadata_routing()`` that requests ``sample_domain`` for ``score``.

    Examples
    --------
    >>> import sklearn
    >>> from skucdr.metrics import make_map_scorer
    >>> scorer = make_map_scorer(average="class", interpolated=True)
    >>> scorer
    make_map_scorer(average='class', interpolated=True)
    >>> # with sklearn.config_context(enable_metadata_routing=True):
    >>> #     GridSearchCV(est, grid, scoring=scorer, cv=DomainStratifiedKFold(3)).fit(
    >>> #         X, y, sample_domain=sample_domain)
    """
    check_map_params(k, average, interpolated)
    return _MapScorer(
        query_domain=query_domain,
        gallery_domain=gallery_domain,
        k=k,
        average=average,
        interpolated=interpolated,
    )


class _LabelFreeScorer(_DomainScorer):
    """Scorer returning :func:`~skucdr.label_free.mutual_neighbor_rate` of an
    estimator's embeddings. Built by :func:`make_label_free_scorer`; see there."""

    def __call__(self, estimator, X, y=None, sample_domain=None, **kwargs):
        """Embed ``X`` with ``estimator.transform`` and score it without labels.

        Parameters
        ----------
        estimator : fitted estimator with a ``transform`` method
        X : array-like of shape (n_samples, ...)
            Rows of every domain, flat form.
        y : None
            Ignored: the score uses no labels.
        sample_domain : array-like of shape (n_samples,)
            Domain of every row; delivered by metadata routing.
        **kwargs : dict
            Other metadata; none is supported.

        Returns
        -------
        score : float
            Greater is better, in [0, 1].
        """
        from ..label_free import mutual_neighbor_rate

        self._check_call(estimator, sample_domain, kwargs)
        embeddings = self._transform(estimator, X, sample_domain)
        return mutual_neighbor_rate(embeddings, np.asarray(sample_domain))

    def __repr__(self):
        return "make_label_free_scorer()"


def make_label_free_scorer():
    """Make a scorer for ``GridSearchCV(scoring=...)`` that needs no labels.

    The scorer embeds the test rows with ``estimator.transform(X, sample_domain=...)``
    and returns how often a row and its nearest neighbour in another domain are each
    other's nearest neighbours (:func:`~skucdr.label_free.mutual_neighbor_rate`; greater
    is better), so that hyper-parameters can be chosen on unlabeled data:
    ``GridSearchCV(...).fit(X, sample_domain=...)`` with no ``y``. Like
    :func:`make_map_scorer`, it receives ``sample_domain`` through scikit-learn's
    metadata routing, which must be enabled. How well it ranks fits as labelled mAP@All
    does, and where it fails, is measured in :ref:`label-free-selection`.

    Returns
    -------
    scorer : callable
        ``scorer(estimator, X, y=None, sample_domain=None) -> float`` with a
        ``get_metadata_routing()`` that requests ``sample_domain`` for ``score``.

    Examples
    --------
    >>> from skucdr.metrics import make_label_free_scorer
    >>> make_label_free_scorer()
    make_label_free_scorer()
    >>> # with sklearn.config_context(enable_metadata_routing=True):
    >>> #     GridSearchCV(est, grid, scoring=make_label_free_scorer(),
    >>> #                  cv=DomainStratifiedKFold(3)).fit(X, sample_domain=sample_domain)
    """
    return _LabelFreeScorer()

