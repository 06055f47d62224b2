"""Images read from a dataset when they are needed, so folders larger than memory fit.

The retrievers accept, in place of an array of images, a map-style dataset: any object
with ``__len__`` and ``__getitem__(i)`` returning one image ``(C, H, W)`` with values in
[0, 1] (a :class:`torch.utils.data.Dataset`, such as
:class:`skucdr.datasets.ImageFileDataset`), or a mapping of domain names to such
datasets. :class:`LazyImages` stands where the validated ``(n, C * H * W)`` float32 array
would stand: slicing it decodes those rows only, so ``fit`` (training batches, memory-bank
passes, frozen-backbone features), ``transform``, ``index_gallery`` and ``kneighbors``
hold one batch of images at a time.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

import numpy as np

__all__ = ["LazyImages", "is_image_dataset"]


def is_image_dataset(X):
    """Whether ``X`` is a map-style dataset rather than an array-like of rows."""
    if isinstance(X, (np.ndarray, list, tuple, str, bytes, Mapping)) or hasattr(X, "iloc") \
            or hasattr(X, "tocsr") or hasattr(X, "__array__"):
        return False
    return hasattr(X, "__getitem__") and hasattr(X, "__len__")


class LazyImages:
    """The images of a map-style dataset as flat float32 rows, decoded on demand.

    Parameters
    ----------
    dataset : map-style dataset
        ``dataset[i]`` is one image ``(C, H, W)`` (array or tensor), values in [0, 1].
    num_workers : int, default=0
        Threads that decode the rows of one request in parallel (image decoders such as
        Pillow's release the GIL); 0 decodes in the calling thread. Taken from the
        dataset's ``num_workers`` attribute when it has one.

    Attributes
    ----------
    shape : tuple
        ``(len(dataset), C * H * W)``, as the array it stands for.
    image_shape : tuple
        ``(C, H, W)``, from the first image.
    """

    ndim = 2
    dtype = np.dtype(np.float32)

    def __init__(self, dataset, num_workers=0):
        n = len(dataset)
        if n == 0:
            raise ValueError("The image dataset is empty: at least one image is needed.")
        self.dataset = dataset
        self.num_workers = int(num_workers)
        first = self._item(0, None)
        self.image_shape = tuple(int(s) for s in first.shape)
        self.shape = (n, int(np.prod(self.image_shape)))
        self._pool = None

    def __len__(self):
        return self.shape[0]

    def _item(self, i, expected):
        image = self.dataset[int(i)]
        if hasattr(image, "detach"):
            image = image.detach().cpu().numpy()
        image = np.asarray(image, dtype=np.float32)
        if image.ndim != 3 or (expected is not None and image.shape != expected):
            want = "(C, H, W)" if expected is None else str(expected)
            raise ValueError(f"Item {int(i)} of the image dataset has shape {image.shape}; "
                             f"expected one image {want}, as its first item.")
        if not np.isfinite(image).all():
            raise ValueError(f"Item {int(i)} of the image dataset holds NaN or infinite "
                             "values.")
        return image

    def _row_numbers(self, rows):
        """``rows`` (a slice, a boolean mask, or indices as a list, array or torch
        tensor) as a 1-D array of row numbers, without materialising every row number
        of the dataset."""
        if isinstance(rows, slice):
            return np.arange(*rows.indices(len(self)))
        if hasattr(rows, "numpy"):  # a torch index tensor
            rows = rows.numpy()
        rows = np.asarray(rows)
        return np.flatnonzero(rows) if rows.dtype == bool else rows.ravel()

    def images(self, rows):
        """Decode ``rows`` (indices, a slice or a boolean mask) as ``(k, C, H, W)``."""
        rows = self._row_numbers(rows)
        out = np.empty((len(rows), *self.image_shape), dtype=np.float32)
        if self.num_workers > 0 and len(rows) > 1:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.num_workers)
            decoded = self._pool.map(lambda i: self._item(i, self.image_shape), rows)
        else:
            decoded = (self._item(i, self.image_shape) for i in rows)
        for k, image in enumerate(decoded):
            out[k] = image
        return out

    def __getitem__(self, rows):
        """Flat rows ``(k, C * H * W)``, as slicing the array would give."""
        return self.images(rows).reshape(-1, self.shape[1])

    def __getstate__(self):  # a thread pool does not pickle (and is not state)
        state = self.__dict__.copy()
        state["_pool"] = None
        return state


class LazyImageTensor:
    """:class:`LazyImages` as the objectives index their training rows: ``X[rows]`` is
    a CPU float tensor ``(k, C, H, W)``."""

    def __init__(self, lazy):
        self.lazy = lazy

    def __len__(self):
        return len(self.lazy)

    def __getitem__(self, rows):
        import torch

        return torch.from_numpy(self.lazy.images(rows))
