"""UEM's universal cross-domain retrieval settings: seeded, published class splits."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

__all__ = ["CategoryShift", "make_category_shift"]

SETTINGS = ("partial", "open_set", "closed")


@dataclass(frozen=True)
class CategoryShift:
    """A class split of a multi-domain data set (result of :func:`make_category_shift`).

    Attributes
    ----------
    setting : {"partial", "open_set", "closed"}
        The setting the split implements.
    query_domain : str or int
        The query domain; every other domain is a gallery (retrieval) domain.
    seed : int
        Seed of the class permutation.
    classes : ndarray
        Sorted union of the labels of every domain.
    query_classes : ndarray
        Sorted classes the query domain keeps.
    gallery_classes : ndarray
        Sorted classes every gallery domain keeps.
    shared_classes : ndarray
        Sorted classes kept on both sides (``query_classes`` ∩ ``gallery_classes``).
    private_classes : ndarray
        Sorted query classes absent from the galleries: their queries should be
        detected as "no match" (non-empty only for ``"open_set"``).
    masks : dict of domain to ndarray of bool
        Per domain, which rows (in the order of the input labels) are kept.
    """

    setting: str
    query_domain: object
    seed: int
    classes: np.ndarray
    query_classes: np.ndarray
    gallery_classes: np.ndarray
    shared_classes: np.ndarray
    private_classes: np.ndarray
    masks: dict = field(repr=False)

    def apply(self, data):
        """Keep the rows of each domain that the split keeps.

        Parameters
        ----------
        data : mapping of domain to tuple (X, y) or to array
            E.g. the output of :func:`load_digit_domains`, with the same domains and
            row order as the labels given to :func:`make_category_shift`. Each value
            is an ``(X, y)`` pair (both are filtered) or a single array of rows.

        Returns
        -------
        dict
            The same domains, in the same order, with only the kept rows.
        """
        if not isinstance(data, Mapping):
            raise TypeError(
                f"data must be a mapping of domain to (X, y), got {type(data).__name__}."
            )
        if set(data) != set(self.masks):
            raise ValueError(
                f"data has domains {list(data)}, but the split was made for "
                f"{list(self.masks)}."
            )
        out = {}
        for domain, value in data.items():
            mask = self.masks[domain]
            parts = value if _is_pair(value) else (value,)
            filtered = []
            for part in parts:
                part = np.asarray(part) if not hasattr(part, "shape") else part
                if len(part) != len(mask):
                    raise ValueError(
                        f"Domain {domain!r} has {len(part)} rows, but the split has "
                        f"{len(mask)} labels for it."
                    )
                filtered.append(part[mask])
            out[domain] = tuple(filtered) if _is_pair(value) else filtered[0]
        return out

    def is_private(self, y):
        """Boolean mask of the labels ``y`` whose class is private to the query domain.

        Parameters
        ----------
        y : array-like of shape (n,)
            Labels, e.g. those of the query domain after :meth:`apply`.

        Returns
        -------
        ndarray of shape (n,), dtype bool
            The ground truth that open-set private-query detection is scored against.
        """
        return np.isin(np.asarray(y), self.private_classes)


def _is_pair(value):
    """True for an ``(X, y)`` tuple, False for a label/row array (even of length 2)."""
    return isinstance(value, tuple) and len(value) == 2 and np.ndim(value[0]) >= 1


def make_category_shift(y_by_domain, setting="partial", query_domain=None, *, seed=2024):
    """Build UEM's universal (category-shifted) retrieval settings with a published split.

    UEM (Wang et al., NeurIPS 2024) evaluates three label-space relations between a
    query domain A and a retrieval (gallery) domain B, with "random halves" of the
    classes that the paper does not publish. This function fixes them with this rule:

    1. ``classes`` = the sorted union of the labels of every domain;
    2. ``order = numpy.random.default_rng(seed).permutation(len(classes))``;
    3. the *kept* classes are ``classes[order[:ceil(n_classes / 2)]]``, the others are
       the *dropped* half;
    4. ``"partial"``: the query domain keeps only the kept half; galleries keep all
       classes (query label space = half of the gallery's).
       ``"open_set"``: every gallery domain keeps only the kept half; the query keeps
       all classes, so its queries of the dropped half are *private* (they have no
       match and should be detected).
       ``"closed"``: every domain keeps every class.

    The split depends only on the set of classes and the seed (NumPy's PCG64
    generator, stable across NumPy versions). For the ten digits and ``seed=2024``
    the kept half is ``[0, 2, 3, 5, 9]``.

    Parameters
    ----------
    y_by_domain : mapping of domain to array-like of labels
        Labels of each domain, e.g. ``{name: y for name, (X, y) in data.items()}``.
        ``(X, y)`` pairs are also accepted (the output of :func:`load_digit_domains`).
    setting : {"partial", "open_set", "closed"}, default="partial"
        Which universal setting to build.
    query_domain : str or int, default=None
        The query domain (a key of ``y_by_domain``); every other domain is a gallery.
        ``None`` takes the first key.
    seed : int, default=2024
        Seed of the class permutation.

    Returns
    -------
    split : CategoryShift
        The class sets, the per-domain row masks, and :meth:`CategoryShift.apply` to
        filter data.

    Examples
    --------
    >>> import numpy as np
    >>> from skucdr.datasets import make_category_shift
    >>> y = {"mnist": np.arange(10).repeat(2), "optdigits": np.arange(10)}
    >>> split = make_category_shift(y, "open_set", query_domain="mnist")
    >>> split.gallery_classes, split.private_classes
    (array([0, 2, 3, 5, 9]), array([1, 4, 6, 7, 8]))
    >>> int(split.masks["optdigits"].sum()), int(split.masks["mnist"].sum())
    (5, 20)
    """
    if setting not in SETTINGS:
        raise ValueError(f"setting must be one of {list(SETTINGS)}, got {setting!r}.")
    if not isinstance(y_by_domain, Mapping) or len(y_by_domain) == 0:
        raise TypeError(
            "y_by_domain must be a non-empty mapping of domain to labels, got "
            f"{type(y_by_domain).__name__}."
        )
    labels = {}
    for domain, value in y_by_domain.items():
        y = np.asarray(value[1] if _is_pair(value) else value)
        if y.ndim != 1:
            raise ValueError(f"Labels of domain {domain!r} must be 1-D, got shape {y.shape}.")
        labels[domain] = y
    if query_domain is None:
        query_domain = next(iter(labels))
    elif query_domain not in labels:
        raise ValueError(f"query_domain={query_domain!r} is not one of {list(labels)}.")
    if setting != "closed" and len(labels) < 2:
        raise ValueError(
            f"setting={setting!r} needs a query domain and at least one gallery domain."
        )

    classes = np.unique(np.concatenate(list(labels.values())))
    order = np.random.default_rng(seed).permutation(len(classes))
    n_keep = (len(classes) + 1) // 2
    kept = np.sort(classes[order[:n_keep]])
    if setting == "partial":
        query_classes, gallery_classes = kept, classes
    elif setting == "open_set":
        query_classes, gallery_classes = classes, kept
    else:
        query_classes, gallery_classes = classes, classes

    masks = {
        domain: np.isin(y, query_classes if domain == query_domain else gallery_classes)
        for domain, y in labels.items()
    }
    return CategoryShift(
        setting=setting,
        query_domain=query_domain,
        seed=seed,
        classes=classes,
        query_classes=query_classes,
        gallery_classes=gallery_classes,
        shared_classes=np.intersect1d(query_classes, gallery_classes),
        private_classes=np.setdiff1d(query_classes, gallery_classes),
        masks=masks,
    )
