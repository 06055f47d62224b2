"""The retrieval gallery of a fitted retriever: its rows, their domains and faiss indexes.

A :class:`Gallery` holds the embeddings of the catalogue a retriever searches and the
domain of every row. It decides which rows a query searches (those of the domains asked
for, else those of the other domains), keeps one faiss index per searched set of domains
and index setting (least recently used out first beyond :data:`INDEX_CACHE_BYTES`),
grows by :meth:`Gallery.append` without re-indexing what it holds, answers searches with
a query's own row removed when the gallery queries itself, and writes and reads its
indexes in faiss's format. The retrievers hold one (``gallery_``) and delegate to it.
"""

from __future__ import annotations

import itertools
import numbers
from collections import OrderedDict
from pathlib import Path

import numpy as np

from ._validation import check_same_kind

__all__ = ["Gallery", "INDEX_CACHE_BYTES", "check_index_setting"]

#: Bytes of gallery vectors kept in cached faiss indexes (one index per searched set of
#: domains and index setting); the index in use is always kept.
INDEX_CACHE_BYTES = 1 << 30
#: The search knobs ``index_params`` may hold.
INDEX_KNOBS = ("nprobe", "ef_search")

# every gallery and every change of one gets a new version (the open-set cache's key)
_VERSIONS = itertools.count()


def check_index_setting(index, index_params, dim):
    """Raise a ``ValueError`` unless ``index`` and ``index_params`` make a faiss index of
    ``dim`` dimensions (nothing is built)."""
    from .neighbors import FaissCosineIndex

    knobs = dict(index_params or {})
    unknown = sorted(set(knobs) - set(INDEX_KNOBS))
    if unknown:
        raise ValueError(f"index_params has unknown keys {unknown}; the search knobs are "
                         f"{list(INDEX_KNOBS)}.")
    FaissCosineIndex(index, **knobs).check(dim)


def _cache_key(domains, index, index_params):
    return tuple(domains), index, tuple(sorted((index_params or {}).items()))


class Gallery:
    """The rows a retriever searches, their domains and their faiss indexes.

    Parameters
    ----------
    embedding : ndarray of shape (n_rows, n_components)
        L2-normalised embeddings (kept as float32, by reference when they are already).
    domain : array-like of shape (n_rows,)
        The domain label of every row.

    Attributes
    ----------
    embedding : ndarray of shape (n_rows, n_components), float32
    domain : ndarray of shape (n_rows,)
    version : int
        Changes whenever the rows change (a new gallery or an append).
    """

    def __init__(self, embedding, domain):
        self.embedding = np.ascontiguousarray(embedding, dtype=np.float32)
        self.domain = np.asarray(domain)
        self._indexes = OrderedDict()
        self.version = next(_VERSIONS)

    def __len__(self):
        return len(self.domain)

    def domains(self):
        """The gallery's domains, in order of first appearance."""
        return list(dict.fromkeys(self.domain.tolist()))

    # ------------------------------------------------------------------ rows
    def rows_for(self, query_domain, gallery_domain=None):
        """The rows searched for queries of ``query_domain`` and the tuple of domains
        they hold: all of the ``gallery_domain`` ones when given, else those of the
        other domains, else all rows."""
        present = self.domains()
        if gallery_domain is not None:
            # compared as Python objects: a cast to the gallery's dtype would cut long
            # names to the fitted names' length, or turn "0" into 0
            wanted = np.atleast_1d(np.asarray(gallery_domain, dtype=object))
            check_same_kind(wanted, self.domain, "gallery_domain")
            unknown = [d for d in wanted.tolist() if d not in present]
            if unknown:
                raise ValueError(
                    f"gallery_domain {unknown} not in the gallery, whose domains are "
                    f"{sorted(present, key=str)}."
                )
            domains = [d for d in present if d in wanted.tolist()]
        else:
            domains = [d for d in present if d != query_domain] or present
        if len(domains) == len(present):
            return np.arange(len(self.domain)), tuple(domains)
        return np.flatnonzero(np.isin(self.domain, domains)), tuple(domains)

    # --------------------------------------------------------------- indexes
    def index_for(self, rows, domains, index, index_params):
        """The faiss index of ``rows`` (those of ``domains``) under ``index`` and
        ``index_params``, from the cache or built (and checked) now."""
        from .neighbors import FaissCosineIndex

        key = _cache_key(domains, index, index_params)
        built = self._indexes.get(key)
        if built is not None:
            self._indexes.move_to_end(key)
            return built
        check_index_setting(index, index_params, self.embedding.shape[1])
        whole = len(rows) == len(self.embedding)
        built = FaissCosineIndex(index, **(index_params or {}))
        built.fit(self.embedding if whole else self.embedding[rows])
        self._indexes[key] = built
        row_bytes = 2 * 4 * self.embedding.shape[1]  # at most the rows and faiss's copy
        while len(self._indexes) > 1 and row_bytes * sum(
                i.n_samples_fit_ for i in self._indexes.values()) > INDEX_CACHE_BYTES:
            self._indexes.popitem(last=False)
        return built

    def build(self, query_domains, index, index_params):
        """Build now the indexes that queries of ``query_domains`` search by default, so
        that the first search is as fast as the next."""
        for query_domain in dict.fromkeys(query_domains):
            self.index_for(*self.rows_for(query_domain), index, index_params)

    def indexes(self):
        """``(domains, index, index_params, FaissCosineIndex)`` of every cached index,
        least recently used first."""
        return [(d, i, dict(p), built) for (d, i, p), built in self._indexes.items()]

    def clear_indexes(self):
        """Drop every cached index (they are rebuilt when a search needs them)."""
        self._indexes.clear()

    # ---------------------------------------------------------------- growth
    def append(self, embedding, domain):
        """Add rows after the gallery's; the cached indexes take in the new rows of their
        domains without re-indexing the former ones, except an ``index="auto"`` index
        for which :func:`~skucdr.neighbors.auto_index` chooses another index at the new
        size: that one is dropped, and built again when next needed."""
        embedding = np.ascontiguousarray(embedding, dtype=np.float32)
        domain = np.asarray(domain)
        check_same_kind(domain, self.domain, "sample_domain")
        self.embedding = np.concatenate([self.embedding, embedding])
        self.domain = np.concatenate([self.domain, domain])
        from .neighbors import auto_index

        for key, built in list(self._indexes.items()):
            domains, index, _ = key
            new = np.isin(domain, list(domains))
            if not new.any():
                continue
            if index == "auto" and built.index_string_ != auto_index(
                    built.n_samples_fit_ + int(new.sum()))[0]:
                # "auto" chooses another index for the grown rows (exact to IVF, or
                # more inverted lists): it is built anew when next needed
                del self._indexes[key]
                continue
            built.add(embedding[new])  # its rows, in gallery order, end with the new ones
        self.version = next(_VERSIONS)
        return self

    # ---------------------------------------------------------------- search
    def check_n_neighbors(self, n_neighbors):
        """A ``ValueError`` unless ``n_neighbors`` is a positive int no larger than the
        gallery."""
        if (isinstance(n_neighbors, bool) or not isinstance(n_neighbors, numbers.Integral)
                or n_neighbors < 1):
            raise ValueError(f"n_neighbors must be a positive int, got {n_neighbors!r}.")
        if n_neighbors > len(self):
            raise ValueError(f"n_neighbors={n_neighbors} but the gallery holds only "
                             f"{len(self)} rows.")

    def search(self, Q, q_domains, n_neighbors, *, gallery_domain=None, index="Flat",
               index_params=None, self_query=False):
        """The ``n_neighbors`` nearest gallery rows of every query row of ``Q``.

        Queries of each domain search :meth:`rows_for` their domain; with
        ``self_query``, ``Q`` is the gallery itself and each row's own hit is removed.

        Returns
        -------
        distances : ndarray of shape (n_queries, n_neighbors), float32
        indices : ndarray of shape (n_queries, n_neighbors), int64
            Gallery row numbers.
        """
        self.check_n_neighbors(n_neighbors)  # before any allocation of that size
        distances = np.empty((Q.shape[0], n_neighbors), dtype=np.float32)
        indices = np.empty((Q.shape[0], n_neighbors), dtype=np.int64)
        q_domains = np.asarray(q_domains)
        groups = [None] if gallery_domain is not None else list(dict.fromkeys(q_domains.tolist()))
        for group in groups:
            q_rows = (np.arange(Q.shape[0]) if group is None
                      else np.flatnonzero(q_domains == group))
            g_rows, g_domains = self.rows_for(group, gallery_domain)
            drop_self = self_query and (group is None or np.isin(q_rows, g_rows).any())
            k = n_neighbors + int(drop_self)
            if k > len(g_rows):
                raise ValueError(
                    f"n_neighbors={n_neighbors} but the searched gallery holds only "
                    f"{len(g_rows) - int(drop_self)} rows."
                )
            found_index = self.index_for(g_rows, g_domains, index, index_params)
            dist, local = found_index.search(Q[q_rows], k)
            found = g_rows[local]
            if drop_self:
                dist, found = _drop_self(dist, found, q_rows, n_neighbors)
            distances[q_rows] = dist
            indices[q_rows] = found
        return distances, indices

    # ----------------------------------------------------------- persistence
    def write_indexes(self, directory):
        """Write every cached index into ``directory`` (``index-<i>.faiss``, former
        ones removed); returns the entries :meth:`read_indexes` takes."""
        directory = Path(directory)
        for old in directory.glob("index-*.faiss"):
            old.unlink()
        entries = []
        for i, (domains, index, index_params, built) in enumerate(self.indexes()):
            built.write(directory / f"index-{i}.faiss")
            entries.append({"file": f"index-{i}.faiss", "domains": list(domains),
                            "index": index, "index_params": index_params})
        return entries

    def read_indexes(self, directory, entries, *, mmap=False):
        """Put the indexes :meth:`write_indexes` wrote back in the cache (not rebuilt;
        memory-mapped with ``mmap``)."""
        from .neighbors import FaissCosineIndex

        for entry in entries:
            rows, _ = self.rows_for(None, entry["domains"])
            rows_embedding = self.embedding if len(rows) == len(self) else self.embedding[rows]
            built = FaissCosineIndex(entry["index"], **entry["index_params"]).read(
                Path(directory) / entry["file"], rows_embedding, mmap=mmap)
            self._indexes[_cache_key(entry["domains"], entry["index"],
                                     entry["index_params"])] = built
        return self

    def __getstate__(self):
        return self.__dict__.copy()  # the indexes pickle in faiss's format

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.version = next(_VERSIONS)


def _drop_self(dist, found, q_rows, n_neighbors):
    """Remove each query's own row from its k+1 results (or the last one if absent)."""
    is_self = found == q_rows[:, None]
    no_self = ~is_self.any(axis=1)
    is_self[no_self, -1] = True
    keep = ~is_self
    return (dist[keep].reshape(len(q_rows), n_neighbors),
            found[keep].reshape(len(q_rows), n_neighbors))
