"""What the folder commands share: folders scanned, domain names typed as the model's,
workers and integer options."""

from __future__ import annotations

import numpy as np

__all__ = ["add_workers_option", "as_fitted_type", "non_negative_int", "positive_int",
           "scan_folders"]


def as_fitted_type(retriever, sample_domain):
    """Domain names from folders or the command line (str) as the fitted domain labels
    are typed: ints for a model fitted with int domains, else str."""
    names = np.asarray(sample_domain, dtype=object)
    if retriever.domains_.dtype.kind in "iu":
        try:
            return names.astype(np.int64)
        except ValueError:
            raise ValueError(
                f"the model's domains are ints {retriever.domains_.tolist()}; got "
                f"{sorted(set(names.tolist()))}.") from None
    return names.astype(str).astype(object)


def scan_folders(root, domains, *, labelled=False):
    from skucdr.datasets import scan_image_folders

    folders = scan_image_folders(root, domains)
    if labelled and not folders.labelled:
        raise ValueError(
            f"{str(root)!r} holds no class folders: evaluation needs "
            "root/<domain>/<class>/<image> (labels are used for scoring only)."
        )
    return folders


def add_workers_option(parser, *, quiet=True):
    """``--workers`` (threads decoding images, in every command) and ``--quiet``."""
    parser.add_argument("--workers", type=non_negative_int, default=0,
                        help="threads decoding images (default: 0, one after the other)")
    if quiet:
        parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _int_at_least(minimum, what):
    """An argparse type: an int of at least ``minimum``, else an error naming ``what``."""
    def parse(text):
        import argparse

        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an int") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        return value

    return parse


positive_int = _int_at_least(1, "a positive int")
non_negative_int = _int_at_least(0, "an int >= 0")
