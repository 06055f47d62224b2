"""Searching a fitted retriever's gallery: ``index_gallery``, ``kneighbors``,
``detect_private`` and ``score``.

:class:`SearchMixin` holds the retrieval methods every skucdr retriever offers on top of
its embedding. It relies on what :class:`~skucdr._base.BaseRetriever` provides:
``_validate``, ``_inference_codes`` and ``_embed`` (validated input to embeddings), the
fitted ``domains_``, ``train_embedding_`` and ``train_domain_``, and the parameters
``index``, ``index_params`` and ``random_state``. The gallery itself is a
:class:`~skucdr._gallery.Gallery` (``gallery_``).
"""

from __future__ import annotations


import numpy as np
from sklearn.utils.validation import check_is_fitted

from ._gallery import Gallery
from ._validation import check_same_kind
from .open_set import DetectionCache

__all__ = ["SearchMixin"]


class SearchMixin:
    """``index_gallery``, ``kneighbors``, ``detect_private`` and ``score`` of a fitted
    retriever (see the module's docstring for what the host class provides)."""

    # ------------------------------------------------------------------ gallery
    @property
    def gallery_embedding_(self):
        """The gallery's embeddings (``gallery_.embedding``)."""
        return self.gallery_.embedding

    @property
    def gallery_domain_(self):
        """The domain of every gallery row (``gallery_.domain``)."""
        return self.gallery_.domain

    def index_gallery(self, X, *, sample_domain=None, append=False):
        """Make a catalogue the retrieval gallery, without retraining.

        The catalogue is embedded a batch at a time (a dataset of images is decoded a
        batch at a time too, see :meth:`fit`), so memory holds its embeddings and one
        batch. The faiss indexes that queries of the fitted domains search are built
        here, so the first query is as fast as the next.

        Parameters
        ----------
        X : array-like, dataset or Mapping
            The catalogue, as in :meth:`fit`.
        sample_domain : array-like of shape (n_samples,), default=None
            Domain of every catalogue row.
        append : bool, default=False
            False: the catalogue replaces the gallery. True: its rows are added after
            the gallery's (row numbers of earlier rows do not change), and the faiss
            indexes already built take the new rows in without re-indexing the old ones.

        Returns
        -------
        self : object
        """
        check_is_fitted(self, "net_")
        if not isinstance(append, (bool, np.bool_)):
            raise TypeError(f"append must be a bool, got {append!r}.")
        data = self._validate(X, sample_domain, reset=False)
        if append:  # before the catalogue is embedded
            check_same_kind(data.sample_domain, self.gallery_.domain, "sample_domain")
        embedding = self._embed(data.X, self._inference_codes(data))
        if append:
            self.gallery_.append(embedding, data.sample_domain)
        else:
            self.gallery_ = Gallery(embedding, data.sample_domain)
        self.gallery_.build(self.domains_.tolist(), self.index, self.index_params)
        return self

    def _queries(self, X, sample_domain):
        if X is None:
            return self.gallery_.embedding, self.gallery_.domain, True
        data = self._validate(X, sample_domain, reset=False)
        Q = self._embed(data.X, self._inference_codes(data))
        return Q, data.sample_domain, False

    def kneighbors(
        self,
        X=None,
        n_neighbors=5,
        *,
        sample_domain=None,
        gallery_domain=None,
        return_distance=True,
    ):
        """Find the gallery items nearest to each query (cosine distance, ascending).

        Parameters
        ----------
        X : array-like, Mapping or None, default=None
            Queries. None queries the gallery's own rows (each row never returns itself).
        n_neighbors : int, default=5
            Neighbours per query.
        sample_domain : array-like of shape (n_queries,), default=None
            Domain of every query.
        gallery_domain : label or list of labels, default=None
            Gallery domains to search. Default: every gallery domain other than the
            query's own (all of them when the gallery holds only the query's domain).
        return_distance : bool, default=True
            Whether to return the distances.

        Returns
        -------
        distances : ndarray of shape (n_queries, n_neighbors), float32
            Cosine distances ``1 - cos``, ascending. Only when ``return_distance``.
        indices : ndarray of shape (n_queries, n_neighbors), int64
            Row numbers in the gallery: the rows of the fitted ``X`` (for a mapping, its
            domains joined in the mapping's order, each in its own row order), or of the
            last :meth:`index_gallery` catalogue laid out the same way. Keep the file of
            every row beside it (``load_image_folder_domains(..., return_paths=True)``)
            to map hits back to files.
        """
        check_is_fitted(self, "net_")
        self.gallery_.check_n_neighbors(n_neighbors)  # before any query is embedded
        Q, q_domains, self_query = self._queries(X, sample_domain)
        distances, indices = self.gallery_.search(
            Q, q_domains, n_neighbors, gallery_domain=gallery_domain, index=self.index,
            index_params=self.index_params, self_query=self_query)
        return (distances, indices) if return_distance else indices

    # ----------------------------------------------------------------- open set
    def detect_private(self, X, *, sample_domain=None, gallery_domain=None):
        """Flag queries whose category is judged absent from the gallery (open-set).

        Implements UEM's appendix B.1 on the learned embedding: k-means on the query
        side and on the gallery side (number of clusters by the elbow rule), translation
        of the gallery prototypes into the query frame, Hungarian matching and UEM's
        merge rule; a query is private when its nearest prototype was not merged, or
        when its distance to the nearest gallery item exceeds the largest cross-domain
        distance observed inside its merged pair (distance ``(1 - cos) * L2``). The
        query side is the fitted rows of the queries' domain (the queries themselves for
        a domain not seen in fit); its clusters against the gallery are built on the
        first call and reused by later calls until :meth:`index_gallery` or :meth:`fit`
        changes the gallery (:class:`~skucdr.open_set.DetectionCache`).

        Parameters
        ----------
        X : array-like or Mapping
            Queries.
        sample_domain : array-like of shape (n_queries,), default=None
            Domain of every query.
        gallery_domain : label or list of labels, default=None
            Gallery domains to compare against (default: all domains but the query's).

        Returns
        -------
        private : ndarray of shape (n_queries,), bool
            True where the query's category is judged absent from the gallery.
        """
        check_is_fitted(self, "net_")
        Q, q_domains, _ = self._queries(X, sample_domain)
        if self.__dict__.get("_detection") is None:
            self._detection = DetectionCache()
        return self._detection.detect(
            Q, q_domains, self.gallery_, gallery_domain=gallery_domain,
            reference_of=self._fitted_rows_of, options=self._open_set_options(),
            random_state=self.random_state)

    def _fitted_rows_of(self, domain):
        """Fitted embeddings of ``domain`` (the query side of appendix B.1), if any."""
        emb = getattr(self, "train_embedding_", None)
        if emb is None:
            return None
        rows = self.train_domain_ == domain
        return emb[rows] if rows.any() else None

    def _open_set_options(self):
        """Appendix B.1's clustering options (``n_prototypes``, ``merge_rule``)."""
        return {"n_prototypes": "elbow", "merge_rule": "eq9"}

    # ------------------------------------------------------------------ scoring
    def score(self, X, y, *, sample_domain=None):
        """Mean mAP@All over ordered domain pairs (query domain -> gallery domain).

        Parameters
        ----------
        X : array-like or Mapping
            Rows of at least two domains.
        y : array-like of shape (n_samples,)
            Category labels, used only for scoring.
        sample_domain : array-like of shape (n_samples,), default=None
            Domain of every row.

        Returns
        -------
        score : float
            Query-averaged, non-interpolated mAP over the whole gallery, averaged over
            ordered domain pairs. With one domain only, each row queries the others of
            the same domain.
        """
        from .metrics import cross_domain_map, within_domain_map

        Z = self.transform(X, sample_domain=sample_domain)
        if isinstance(Z, dict):
            from ._domains import pack_domains

            Z, sample_domain = pack_domains(Z)
        y = np.asarray(y)
        if sample_domain is None or len(np.unique(sample_domain)) < 2:
            return within_domain_map(Z, y)
        return cross_domain_map(Z, y, np.asarray(sample_domain))
