"""Cosine k-nearest-neighbour search with faiss.

:class:`FaissCosineIndex` is the search engine behind every ``kneighbors`` of skucdr.
Cosine similarity is the inner product of L2-normalised vectors, so the index stores
normalised float32 rows in a faiss inner-product index and reports the cosine *distance*
``1 - similarity`` in ascending order, exactly like
:meth:`sklearn.neighbors.NearestNeighbors.kneighbors` with ``metric="cosine"``.

The default ``index="Flat"`` is exact. Any faiss factory string (``"HNSW32"``,
``"IVF1024,Flat"``, ``"IVF1024,PQ16"``, ...) gives an approximate index for large galleries.
"""

from __future__ import annotations

import re
import warnings
from contextlib import contextmanager
from numbers import Integral

import faiss
import numpy as np
from joblib import effective_n_jobs
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_array, check_is_fitted

from ._sklearn_compat import Interval, _fit_context

__all__ = ["FaissCosineIndex", "auto_index", "cosine_kneighbors"]


@contextmanager
def _faiss_threads(n_jobs):
    """Use ``n_jobs`` OpenMP threads in faiss inside the block, then restore the setting."""
    if n_jobs is None:
        yield
        return
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(int(effective_n_jobs(n_jobs)))
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)


def _l2_normalize(X):
    """Return a new float32 array with unit-norm rows (all-zero rows stay zero)."""
    X = np.array(X, dtype=np.float32, copy=True, order="C")
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    X /= norms
    return X


def _check_rows(X, name, *, min_samples):
    """Validate a 2-D numeric array of rows and return it as float32."""
    X = check_array(
        X,
        dtype=np.float32,
        ensure_all_finite=False,
        ensure_min_samples=min_samples,
        input_name=name,
    )
    if not np.isfinite(X).all():
        what = "NaN" if np.isnan(X).any() else "infinite values"
        raise ValueError(f"{name} contains {what}; cosine neighbours need finite vectors.")
    return X


#: below this many rows, index="auto" searches exactly (faiss's guideline: brute force is
#: fast and exact up to about 1e5 vectors)
AUTO_EXACT_BELOW = 100_000
#: with index="auto", a query visits one inverted list in this many
AUTO_LISTS_PER_PROBE = 64


def auto_index(n_rows):
    """The faiss index ``index="auto"`` builds for ``n_rows`` rows, and its ``nprobe``.

    Exact (``"Flat"``) below :data:`AUTO_EXACT_BELOW` rows; above, inverted lists over
    exact vectors, ``"IVF{k},Flat"`` with ``k`` the power of two nearest to
    ``4 * sqrt(n_rows)`` (faiss's guideline for up to a few million vectors: 4 to 16
    times the square root), visiting ``k / 64`` lists per query by default (about 1.6 %
    of the rows; ``benchmarks/results/million.md`` measures recall and speed, and how
    ``nprobe`` trades one for the other).
    """
    if n_rows < AUTO_EXACT_BELOW:
        return "Flat", None
    n_lists = 2 ** int(round(np.log2(4 * np.sqrt(n_rows))))
    return f"IVF{n_lists},Flat", max(1, n_lists // AUTO_LISTS_PER_PROBE)


def _min_training_rows(index):
    """Rows a faiss index needs for training: IVF lists and PQ codebooks (2**nbits)."""
    needed = 1
    try:
        inner = faiss.downcast_index(faiss.extract_index_ivf(index))
        needed = max(needed, int(inner.nlist))
    except RuntimeError:  # not an IVF index
        inner = faiss.downcast_index(index)
        if isinstance(inner, faiss.IndexPreTransform):
            inner = faiss.downcast_index(inner.index)
    pq = getattr(inner, "pq", None)
    if pq is not None:
        needed = max(needed, int(pq.ksub))
    return needed


def _faiss_message(exc):
    """The informative tail of a faiss C++ error message."""
    text = str(exc).strip()
    # "Error in <C++ signature> at <file>:<line>: <message>", or "... Error: <message>"
    for pattern in (r"Error: (.*)$", r"Error in .*? at \S+:\d+: (.*)$"):
        match = re.search(pattern, text, flags=re.S)
        if match:
            return match.group(1).strip()
    return text.splitlines()[-1].strip()


class FaissCosineIndex(BaseEstimator):
    """Cosine k-nearest-neighbour index on top of faiss.

    Rows are L2-normalised to float32 and stored in a faiss inner-product index, so the
    inner product is the cosine similarity. :meth:`search` returns cosine *distances*
    ``1 - similarity`` in ascending order, like
    :meth:`sklearn.neighbors.NearestNeighbors.kneighbors` with ``metric="cosine"``.

    Parameters
    ----------
    index : str, default="Flat"
        A faiss index factory string, or ``"auto"``: chosen by the number of fitted rows
        (:func:`auto_index`: exact below 100,000 rows, inverted lists above; ``nprobe``
        still applies). ``"Flat"`` is exact brute force. Approximate
        indexes for large galleries: ``"HNSW32"`` (graph, no training),
        ``"IVF1024,Flat"`` (inverted lists, trained with k-means on the fitted rows,
        needs at least 1024 rows), ``"IVF1024,PQ16"`` (inverted lists with product
        quantisation, needs at least 1024 rows). See the faiss wiki, "The index factory".
    nprobe : int, default=None
        Number of inverted lists visited per query (IVF indexes only). ``None`` keeps
        faiss's default (1), or, with ``index="auto"``, :func:`auto_index`'s; larger is
        slower and more accurate. With ``"auto"``, a knob that does not apply to the
        chosen index is ignored.
    ef_search : int, default=None
        Size of the HNSW candidate list at search time (HNSW indexes and HNSW
        quantisers only). ``None`` keeps faiss's default (16).
    batch_size : int, default=8192
        Queries are searched in batches of this many rows, which bounds the memory used
        per call.
    n_jobs : int, default=None
        Number of faiss (OpenMP) threads during :meth:`fit` and :meth:`search`. ``None``
        leaves faiss's current setting untouched; ``-1`` uses all cores. The previous
        setting is restored after each call: nothing is changed globally.

    Attributes
    ----------
    embeddings_ : ndarray of shape (`n_samples_fit_`, `n_features_in_`), dtype float32
        The L2-normalised copy of the fitted rows. It is what a pickle keeps.
    n_samples_fit_ : int
        Number of indexed rows.
    n_features_in_ : int
        Dimension of the indexed rows.
    index_ : faiss.Index
        The faiss index (a property). A pickle stores it in faiss's own serialization
        (:func:`faiss.serialize_index`): it loads as it was, with no rebuild.
    index_string_ : str
        The factory string of ``index_`` (what ``"auto"`` chose).

    See Also
    --------
    cosine_kneighbors : One-call convenience wrapper.
    sklearn.neighbors.NearestNeighbors : Exact neighbours, ``metric="cosine"``.

    Notes
    -----
    The index stores one normalised float32 copy of the gallery (``embeddings_``). An
    exact (``"Flat"``) index is that copy alone, searched by :func:`faiss.knn`; an
    approximate index adds faiss's own encoding of the rows (a full copy for ``"HNSW"``
    and ``"IVF...,Flat"``, compressed codes for ``"PQ"``). Zero vectors are kept as zeros (similarity 0 to
    everything). When an approximate index finds fewer than ``n_neighbors`` rows for a
    query (e.g. IVF with a small ``nprobe``), that query is answered exactly and a
    warning suggests a larger ``nprobe``; indices are therefore always valid row numbers.

    Examples
    --------
    >>> import numpy as np
    >>> from skucdr.neighbors import FaissCosineIndex
    >>> gallery = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    >>> index = FaissCosineIndex().fit(gallery)
    >>> distances, indices = index.search([[1.0, 0.0]], n_neighbors=2)
    >>> indices
    array([[0, 2]])
    >>> np.round(distances, 3)
    array([[0.   , 0.293]], dtype=float32)
    """

    _parameter_constraints: dict = {
        "index": [str],
        "nprobe": [Interval(Integral, 1, None, closed="left"), None],
        "ef_search": [Interval(Integral, 1, None, closed="left"), None],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "n_jobs": [Integral, None],
    }

    def __init__(self, index="Flat", *, nprobe=None, ef_search=None, batch_size=8192, n_jobs=None):
        self.index = index
        self.nprobe = nprobe
        self.ef_search = ef_search
        self.batch_size = batch_size
        self.n_jobs = n_jobs

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, embeddings, y=None):
        """Index the gallery rows.

        Parameters
        ----------
        embeddings : array-like of shape (n_samples, n_features)
            Gallery vectors. They are copied and L2-normalised; the input is not changed.
        y : None
            Ignored; present for API consistency.

        Returns
        -------
        self : FaissCosineIndex
            The fitted index.
        """
        X = _l2_normalize(_check_rows(embeddings, "embeddings", min_samples=1))
        if self._index_string(len(X)) == "Flat":  # exact: the rows are the index
            self.check(X.shape[1])
            index = None
        else:
            with _faiss_threads(self.n_jobs):
                index = self._build_index(X)  # raises before any fitted attribute is set
        self.embeddings_ = X
        self.n_samples_fit_, self.n_features_in_ = X.shape
        self.index_string_ = "Flat" if index is None else self._built_string(index)
        self._index = index
        return self

    def add(self, embeddings):
        """Add rows to the fitted index, after the rows it holds.

        Nothing already indexed is re-indexed: faiss adds the new rows to its structure
        (a trained index keeps its training, an HNSW graph inserts them).

        Parameters
        ----------
        embeddings : array-like of shape (n_new, n_features)
            The new rows; they get the row numbers ``n_samples_fit_ ...`` onwards.

        Returns
        -------
        self : FaissCosineIndex
        """
        check_is_fitted(self, "embeddings_")
        X = _l2_normalize(_check_rows(embeddings, "embeddings", min_samples=1))
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"embeddings have {X.shape[1]} features, but the index was "
                             f"fitted with {self.n_features_in_} features.")
        if not self._exact:
            with _faiss_threads(self.n_jobs):
                self.index_.add(X)
        self.embeddings_ = np.concatenate([self.embeddings_, X])
        self.n_samples_fit_ = len(self.embeddings_)
        return self

    @property
    def _exact(self):
        """Whether the fitted index is exact brute force over ``embeddings_`` (no faiss
        structure: :func:`faiss.knn` searches the rows themselves)."""
        return self.index_string_ == "Flat"

    @property
    def index_(self):
        """The faiss index, rebuilt from ``embeddings_`` if it was dropped by a pickle.

        For an exact (``"Flat"``) index, searches run :func:`faiss.knn` on
        ``embeddings_`` and no faiss copy of the rows is kept: ``index_`` then builds an
        ``IndexFlatIP`` holding a copy, on every access."""
        check_is_fitted(self, "embeddings_")
        if self._exact:
            flat = faiss.IndexFlatIP(self.n_features_in_)
            flat.add(self.embeddings_)
            return flat
        if getattr(self, "_index", None) is None:
            with _faiss_threads(self.n_jobs):
                self._index = self._build_index(self.embeddings_)
        return self._index

    def check(self, dim):
        """Raise a ``ValueError`` now if the factory string or a search knob does not
        make a faiss index of ``dim`` dimensions (nothing is trained or stored)."""
        self._apply_search_knobs(self._empty_index(dim))

    def _index_string(self, n_rows=0):
        return auto_index(n_rows)[0] if self.index == "auto" else self.index

    @staticmethod
    def _ivf_lists(index):
        """The number of inverted lists of a faiss ``index``, None if it has none."""
        try:
            return int(faiss.extract_index_ivf(index).nlist)
        except RuntimeError:
            return None

    def _built_string(self, index):
        """The factory string of the built ``index`` (what ``"auto"`` chose)."""
        if self.index != "auto":
            return self.index
        lists = self._ivf_lists(index)
        return "Flat" if lists is None else f"IVF{lists},Flat"

    def _nprobe(self, index):
        """``nprobe``, or with ``"auto"`` and none given, the built index's lists over
        :data:`AUTO_LISTS_PER_PROBE` (it does not change when rows are added)."""
        if self.nprobe is not None or self.index != "auto":
            return self.nprobe
        lists = self._ivf_lists(index)
        return None if lists is None else max(1, lists // AUTO_LISTS_PER_PROBE)

    def _empty_index(self, d, n_rows=0):
        index_string = self._index_string(n_rows)
        try:
            return faiss.index_factory(d, index_string, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as exc:
            raise ValueError(
                f"Invalid faiss index factory string {self.index!r} for dimension {d}: "
                f"{_faiss_message(exc)}. Use 'Flat' (exact) or e.g. 'HNSW32', "
                "'IVF1024,Flat', 'IVF1024,PQ16'."
            ) from exc

    def _build_index(self, X):
        """Create, train (if needed) and fill the faiss index with normalised rows ``X``."""
        n, d = X.shape
        index = self._empty_index(d, n)
        self._apply_search_knobs(index)
        if not index.is_trained:
            needed = _min_training_rows(index)
            if n < needed:
                raise ValueError(
                    f"The faiss index {self.index!r} needs at least {needed} rows to train, "
                    f"but only {n} were given. Use fewer inverted lists / PQ centroids, "
                    "or index='Flat' (exact, no training)."
                )
            try:
                index.train(X)
            except RuntimeError as exc:
                raise ValueError(
                    f"Could not train the faiss index {self.index!r} on {n} rows: "
                    f"{_faiss_message(exc)}"
                ) from exc
        index.add(X)
        return index

    def _apply_search_knobs(self, index):
        space = faiss.ParameterSpace()
        for name, faiss_name, kind in (
            ("nprobe", "nprobe", "IVF"),
            ("ef_search", "efSearch", "HNSW"),
        ):
            value = self._nprobe(index) if name == "nprobe" else getattr(self, name)
            if value is None:
                continue
            try:
                space.set_index_parameter(index, faiss_name, int(value))
            except RuntimeError as exc:
                if self.index == "auto":  # a knob of the index "auto" did not choose
                    continue
                raise ValueError(
                    f"{name}={value} only applies to {kind} indexes, "
                    f"but index={self.index!r}."
                ) from exc

    def search(self, queries, n_neighbors):
        """Find the ``n_neighbors`` nearest indexed rows of each query.

        Parameters
        ----------
        queries : array-like of shape (n_queries, n_features)
            Query vectors (normalised internally, batch by batch).
        n_neighbors : int
            Number of neighbours per query, at most ``n_samples_fit_``.

        Returns
        -------
        distances : ndarray of shape (n_queries, n_neighbors), dtype float32
            Cosine distances ``1 - cos``, ascending along each row.
        indices : ndarray of shape (n_queries, n_neighbors), dtype int64
            Row numbers of the neighbours in the fitted ``embeddings``.
        """
        check_is_fitted(self, "embeddings_")
        k = self._check_n_neighbors(n_neighbors)
        Q = _check_rows(queries, "queries", min_samples=0)
        if Q.shape[1] != self.n_features_in_:
            raise ValueError(
                f"queries have {Q.shape[1]} features, but the index was fitted with "
                f"{self.n_features_in_} features."
            )
        n_q = Q.shape[0]
        distances = np.empty((n_q, k), dtype=np.float32)
        indices = np.empty((n_q, k), dtype=np.int64)
        index = None if self._exact else self.index_
        if index is not None:
            self._apply_search_knobs(index)  # honours set_params after fit
        with _faiss_threads(self.n_jobs):
            for start in range(0, n_q, self.batch_size):
                stop = min(start + self.batch_size, n_q)
                batch = _l2_normalize(Q[start:stop])
                if index is None:
                    sim, ind = self._exact_search(batch, k)
                else:
                    sim, ind = index.search(batch, k)
                missing = (ind < 0).any(axis=1)
                if missing.any():
                    sim[missing], ind[missing] = self._exact_search(batch[missing], k)
                    warnings.warn(
                        f"The faiss index {self.index!r} returned fewer than {k} neighbours "
                        f"for {int(missing.sum())} queries; they were searched exactly. "
                        "Increase nprobe (IVF) or ef_search (HNSW) to avoid this.",
                        UserWarning,
                        stacklevel=2,
                    )
                np.subtract(1.0, sim, out=distances[start:stop])
                indices[start:stop] = ind
        return distances, indices

    def _exact_search(self, batch, k):
        """Brute force over ``embeddings_`` (no copy of the rows)."""
        return faiss.knn(batch, self.embeddings_, k, metric=faiss.METRIC_INNER_PRODUCT)

    def _check_n_neighbors(self, n_neighbors):
        if isinstance(n_neighbors, bool) or not isinstance(n_neighbors, Integral):
            raise TypeError(
                f"n_neighbors must be an integer, got {type(n_neighbors).__name__}."
            )
        if n_neighbors < 1:
            raise ValueError(f"n_neighbors must be >= 1, got {n_neighbors}.")
        if n_neighbors > self.n_samples_fit_:
            raise ValueError(
                f"Expected n_neighbors <= n_samples_fit, but n_neighbors = {n_neighbors}, "
                f"n_samples_fit = {self.n_samples_fit_}: the index holds only "
                f"{self.n_samples_fit_} rows."
            )
        return int(n_neighbors)

    def write(self, path):
        """Write the faiss index to ``path`` in faiss's format (:func:`faiss.write_index`);
        :meth:`read` loads it, memory-mapped if asked."""
        check_is_fitted(self, "embeddings_")
        faiss.write_index(self.index_, str(path))

    def read(self, path, embeddings, *, mmap=False):
        """Load the faiss index that :meth:`write` wrote for these parameters.

        Parameters
        ----------
        path : str or path
            The file :meth:`write` wrote.
        embeddings : ndarray of shape (n_rows, n_features), float32
            The L2-normalised rows the index holds (kept by reference, not copied: they
            answer queries an approximate index cannot fill).
        mmap : bool, default=False
            Map the file into memory instead of reading it: the operating system pages
            the index in as searches touch it, so an index larger than memory works.

        Returns
        -------
        self : FaissCosineIndex
        """
        flags = faiss.IO_FLAG_MMAP | getattr(faiss, "IO_FLAG_MMAP_IFC", 0) if mmap else 0
        index = faiss.read_index(str(path), flags)
        if index.ntotal != len(embeddings) or index.d != embeddings.shape[1]:
            raise ValueError(f"{path} holds {index.ntotal} rows of dimension {index.d}, but "
                             f"{embeddings.shape} embeddings were given.")
        exact = isinstance(faiss.downcast_index(index), faiss.IndexFlat)
        # an exact index is its rows: normalised again, they are the rows it held
        self.embeddings_ = _l2_normalize(embeddings) if exact else embeddings
        self.n_samples_fit_, self.n_features_in_ = embeddings.shape
        self.index_string_ = "Flat" if exact else self._built_string(index)
        self._index = None if exact else index
        return self

    def __getstate__(self):
        state = dict(super().__getstate__())  # a copy: never touch the live object
        index = state.pop("_index", None)  # a faiss object: stored in faiss's format
        if index is not None:
            state["_index_bytes"] = faiss.serialize_index(index)
        return state

    def __setstate__(self, state):
        packed = state.pop("_index_bytes", None)
        super().__setstate__(state)
        self._index = faiss.deserialize_index(packed) if packed is not None else None


def cosine_kneighbors(queries, gallery, n_neighbors, *, index="Flat", **knobs):
    """Cosine k-nearest neighbours of ``queries`` among ``gallery`` rows, with faiss.

    Parameters
    ----------
    queries : array-like of shape (n_queries, n_features)
        Query vectors.
    gallery : array-like of shape (n_gallery, n_features)
        Gallery vectors.
    n_neighbors : int
        Number of neighbours per query, at most ``n_gallery``.
    index : str, default="Flat"
        faiss factory string, see :class:`FaissCosineIndex`.
    **knobs : dict
        Other parameters of :class:`FaissCosineIndex` (``nprobe``, ``ef_search``,
        ``batch_size``, ``n_jobs``).

    Returns
    -------
    distances : ndarray of shape (n_queries, n_neighbors), dtype float32
        Cosine distances, ascending along each row.
    indices : ndarray of shape (n_queries, n_neighbors), dtype int64
        Row numbers in ``gallery``.

    Examples
    --------
    >>> from skucdr.neighbors import cosine_kneighbors
    >>> distances, indices = cosine_kneighbors([[1, 0]], [[0, 1], [1, 0.1]], 1)
    >>> indices
    array([[1]])
    """
    return FaissCosineIndex(index, **knobs).fit(gallery).search(queries, n_neighbors)
